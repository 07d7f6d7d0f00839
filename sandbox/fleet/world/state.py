"""The state every controller of the fleet shares, and the few lookups they all make.

`Fleet` is composed of one mixin per controller (scheduler, workloads, daemonset, disruption, nodes,
faults, meters, ...), each in its own module and each a subclass of `FleetState`. The controllers call
one another synchronously, as a real control plane's would eventually react to each other's writes, so
`FleetState` also declares, for the type checker only, the methods one controller calls on another: that
list is the fleet's internal interface, and mypy checks each implementation against it.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sandbox.fleet.clock import SimClock, ts
from sandbox.fleet.faults import Fault, FaultKind
from sandbox.fleet.nvml_sim import SimNvml
from sandbox.fleet.store import Obj, Store
from sandbox.fleet.world.spec import _SUFFIX_ALPHABET, FleetSpec, not_found
from tools.nvml import NvmlCollector

if TYPE_CHECKING:
    from sandbox.fleet.world.spec import Meter, WorkloadLoss


class FleetState:
    """The world's data: the object store, the clock and random stream, faults, meters and controller indexes."""

    def __init__(self, spec: FleetSpec, clock: SimClock | None = None) -> None:
        self.spec = spec
        self.clock = clock or SimClock("manual")
        self.store = Store()
        self.rng = random.Random(spec.seed)
        self.faults: dict[str, Fault] = {}
        self.meters: dict[str, Meter] = {}
        self.writes: list[dict[str, Any]] = []
        self.disruptions: list[dict[str, Any]] = []
        self.logs: dict[str, list[str]] = {}  # "ns/pod" -> extra log lines
        self._fault_seq = 0
        self._event_seq = 0
        self._gpu_owner: dict[str, list[str | None]] = {}  # node -> per GPU index, owning "ns/pod"
        self._unhealthy: dict[str, set[int]] = {}  # node -> GPU indices the device plugin marked bad
        self._bucket_of: dict[str, tuple[str, int]] = {}  # node -> (pool, free GPUs) while schedulable
        self._buckets: dict[str, list[dict[str, None]]] = {}  # pool -> free count -> nodes (ordered)
        self._pending: dict[tuple[str, str], None] = {}
        self._agents: dict[str, tuple[SimNvml, NvmlCollector]] = {}
        self._reconciling: set[tuple[str, str]] = set()
        self._restart_base: dict[str, int] = {}  # fault id -> restarts before the crash loop began
        self._workload_loss: dict[str, WorkloadLoss] = {}  # "ns/jobset" -> what it lost (the truth)
        self._lws_loss: dict[str, WorkloadLoss] = {}  # "ns/lws/group" -> what the group lost
        self._lws_members: dict[tuple[str, str, int], set[str]] = {}  # a group's pods now (their uids)

    def now(self) -> datetime:
        return self.clock.now()

    def stamp(self) -> str:
        return ts(self.now())

    def _uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _suffix(self, n: int = 5) -> str:
        return "".join(self.rng.choice(_SUFFIX_ALPHABET) for _ in range(n))

    def node(self, name: str) -> Obj:
        node = self.store.get("nodes", "", name)
        if node is None:
            raise not_found("nodes", name)
        return node

    def node_faults(self, name: str) -> list[Fault]:
        return [f for f in self.faults.values() if f.node == name]

    def _node_down(self, name: str) -> bool:
        return any(f.kind in (FaultKind.NOT_READY, FaultKind.PARTITION) for f in self.node_faults(name))

    if TYPE_CHECKING:
        # The methods one controller calls on another, by the module that implements them.
        # nodes
        def _refresh_node(self, name: str) -> Obj: ...
        def _healthy_conditions(self, at: str) -> list[dict[str, str]]: ...
        # scheduler
        def _rebucket(self, name: str) -> None: ...
        def _release(self, pod: Obj) -> None: ...
        def _place(self, pod: Obj) -> Obj: ...
        def schedule_pending(self) -> None: ...
        # pods
        def _new_pod(
            self,
            owner_kind: str,
            owner: Obj,
            template: dict[str, Any],
            name: str,
            extra_labels: dict[str, str],
            owner_api: str = "apps/v1",
        ) -> Obj: ...
        def _running_status(self, pod: Obj, host_ip: str, at: str, restarts: int = 0) -> dict[str, Any]: ...
        def _pending_status(self, message: str) -> dict[str, Any]: ...
        def _set_crashloop_status(self, pod: Obj, reason: str, exit_code: int, restarts: int) -> None: ...
        # workloads
        def reconcile_deployment(self, ns: str, name: str) -> None: ...
        def _owned_pods(self, ns: str, owner_uid: str) -> list[Obj]: ...
        def _refresh_owner(self, pod: Obj) -> None: ...
        def _reconcile_owner(self, pod: Obj) -> None: ...
        # jobsets
        def create_jobset(self, obj: dict[str, Any]) -> Obj: ...
        def _jobset_pod_gone(self, pod: Obj) -> None: ...
        def workload_losses(self) -> list[dict[str, Any]]: ...
        def _refresh_jobset_status(self, ns: str, name: str) -> None: ...
        def _checkpoint_jobsets(self, now: datetime) -> None: ...
        def _pace_jobsets(self, now: datetime) -> None: ...
        # leaderworkersets
        def create_lws(self, obj: dict[str, Any]) -> Obj: ...
        def _lws_pod_gone(self, pod: Obj) -> None: ...
        def _refresh_lws_status(self, ns: str, name: str) -> None: ...
        def lws_losses(self) -> list[dict[str, Any]]: ...
        # daemonset
        def _create_daemonset(self) -> None: ...
        def _ensure_daemon_pod(
            self, node_name: str, namespace: str, name: str, refresh: bool = True
        ) -> None: ...
        def _ensure_daemon_pods(self, node_name: str, refresh: bool = True) -> None: ...
        def _daemonsets(self) -> list[tuple[str, str]]: ...
        def _refresh_daemonset_status(self, namespace: str = ..., name: str = ...) -> None: ...
        # disruption
        def _refresh_pdbs(self, ns: str) -> None: ...
        def _kubelet_confirms(self, pod: Obj) -> bool: ...
        def delete_pod(
            self, ns: str, name: str, grace: int | None, reason: str = "Deleted", dry_run: bool = False
        ) -> Obj: ...
        def _record_disruption(self, pod: Obj, reason: str) -> None: ...
        # node_agent
        def agent(self, node_name: str) -> tuple[SimNvml, NvmlCollector]: ...
        def driver_changed(self, node_name: str, version: str) -> None: ...
        def _agent_down(self, node_name: str) -> bool: ...
        def agent_pod(self, node_name: str) -> Obj | None: ...
        # meters
        def _start_meter(self, pod: Obj) -> None: ...
        def _stop_meters(self, pod: Obj) -> None: ...
        # events
        def event(self, obj: Obj, etype: str, reason: str, message: str, component: str) -> None: ...
