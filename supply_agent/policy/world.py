"""The world as the gate sees it, and the agent's own past: plain data, so that ``gate.decide`` stays a
pure function of its inputs. ``supply_agent.hands.world`` reads it from the cluster."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from supply_agent.models.actions import WorkloadHit

# XIDs NVIDIA attributes to the application (the GPU is fine): a node-agent report of these alone does
# not confirm a GPU fault.
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68})


class PodRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    namespace: str
    name: str
    customer: str | None = None
    gpus: int = 0
    daemonset: bool = False
    deployment: str | None = None
    # The first container's status: why it waits (CrashLoopBackOff) and why it last ended (OOMKilled).
    waiting_reason: str | None = None
    last_termination_reason: str | None = None
    # The gang workload whose pods fail together ("JobSet/ns/name", "LeaderWorkerSet/ns/name/group"),
    # from the labels its controller puts on its pods; None for a pod that stands alone.
    workload: str | None = None
    terminating: bool = False  # deleted, going: its GPUs are about to be free
    # Its nodeSelector on the labels a node group reads (GROUP_LABELS' keys: pool, gpu_model,
    # tenant_tier): where a replacement may go. Kueue writes its ResourceFlavor's nodeLabels here when it
    # admits the workload, so quota per flavor holds the work to that flavor's nodes.
    node_selector: tuple[tuple[str, str], ...] = ()


class WorkloadView(BaseModel):
    """A multi-node workload as the gate weighs it: every pod of it stops when one does (a JobSet
    restarts whole; a LeaderWorkerSet recreates the group), so its damage is all its GPUs."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["JobSet", "LeaderWorkerSet"]
    namespace: str
    name: str
    group: str | None = None  # a LeaderWorkerSet's group index: the unit that restarts
    customer: str | None = None
    nodes: tuple[str, ...] = ()  # the nodes its pods run on now
    gpus: int = 0  # the GPUs of its pods now
    pods: int = 0
    checkpoint_every_s: int | None = None
    # What a restart resumes from: its last checkpoint, or when it last (re)started if later.
    resumes_from: datetime | None = None

    @property
    def key(self) -> str:
        return "/".join(p for p in (self.kind, self.namespace, self.name, self.group) if p is not None)

    def since_checkpoint_s(self, now: datetime) -> float | None:
        return None if self.resumes_from is None else max(0.0, (now - self.resumes_from).total_seconds())


class PoolRoom(BaseModel):
    """Where the pods a drain evicts could go in their pool: the free GPUs (allocatable less what pods
    ask) of its Ready, schedulable nodes other than the action's own, largest first. ``complete``: every
    such node was read; otherwise the read stopped once the evicted pods fitted. ``need_selectors`` (one
    per need, when any pod selects) and ``free_labels`` (one per free slot: its node's group labels) hold
    each pod to the nodes its nodeSelector allows."""

    model_config = ConfigDict(frozen=True)

    pool: str
    needs: tuple[int, ...] = ()  # the GPUs each evicted pod asks for, largest first
    free: tuple[int, ...] = ()
    complete: bool = True
    need_selectors: tuple[tuple[tuple[str, str], ...], ...] = ()
    free_labels: tuple[tuple[tuple[str, str], ...], ...] = ()

    def selected(self) -> list[str]:
        """The nodeSelectors the evicted pods hold to ("tenant_tier=reserved"), each once."""
        return sorted({", ".join(f"{k}={v}" for k, v in sel) for sel in self.need_selectors if sel})

    def unplaced(self) -> tuple[int, ...]:
        """The evicted pods (their GPUs) that fit on no node they may go to, placed largest first on the
        freest."""
        sels = self.need_selectors or tuple(() for _ in self.needs)
        labels = self.free_labels or tuple(() for _ in self.free)
        order = sorted(range(len(self.free)), key=lambda k: -self.free[k])
        room = [self.free[k] for k in order]
        where = [dict(labels[k]) for k in order]
        left: list[int] = []
        # Largest first; of equals, a pod that selects its nodes first (one that does not may go anywhere).
        for need, sel in sorted(zip(self.needs, sels, strict=True), key=lambda x: (-x[0], not x[1])):
            i = next(
                (k for k, f in enumerate(room) if f >= need and all(where[k].get(a) == b for a, b in sel)),
                None,
            )
            if i is None:
                left.append(need)
            else:
                room[i] -= need
        return tuple(left)


# The node labels a node group (``_global.yaml``'s ``node_groups``) selects on: the pool (this project's
# label), the GPU model (NVIDIA GPU Feature Discovery's ``nvidia.com/gpu.product``) and the tenant tier
# of the capacity (reserved, on-demand, spot: a provider's own label).
GROUP_LABELS: dict[str, str] = {
    "pool": "supply-agent.io/pool",
    "gpu_model": "nvidia.com/gpu.product",
    "tenant_tier": "supply-agent.io/tenant-tier",
}


def group_labels_of(labels: Mapping[str, str]) -> dict[str, str]:
    """A node's labels as a node group matches them: GROUP_LABELS' keys -> the node's values."""
    return {k: str(labels[v]) for k, v in GROUP_LABELS.items() if v in labels}


class NodeView(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    pool: str
    gpus: int
    group_labels: dict[str, str] = Field(default_factory=dict)  # GROUP_LABELS' keys -> the node's values
    allocatable_gpus: int | None = None  # what the scheduler may place (a GPU marked bad is not); None: gpus
    ready: str = "True"  # "True" | "False" | "Unknown", as the Ready condition says
    gpu_healthy: str = "True"  # the GpuHealthy condition the node-agent maintains
    unschedulable: bool = False
    agent_ready: bool = True  # the node-agent (the GPU monitor) pod is Ready
    pods: tuple[PodRef, ...] = ()
    conditions: dict[str, str] = Field(default_factory=dict)  # every condition type -> status

    def customers(self) -> tuple[str, ...]:
        return tuple(sorted({p.customer for p in self.pods if p.customer and not p.daemonset}))

    def free_gpus(self) -> int:
        """GPUs the scheduler could still place here: allocatable less what its pods (not going) ask."""
        alloc = self.gpus if self.allocatable_gpus is None else self.allocatable_gpus
        return max(0, alloc - sum(p.gpus for p in self.pods if not p.terminating))

    def takes_work(self) -> bool:
        return self.ready == "True" and not self.unschedulable


class WorldView(BaseModel):
    """The fleet as the gate sees it. Built by ``read_world`` from the cluster (read-only credentials)."""

    model_config = ConfigDict(frozen=True)

    now: datetime
    nodes: dict[str, NodeView]
    frozen: bool = False
    frozen_reason: str = ""
    # Nodes with a firing alert in the short-circuit window, as the alerts name them: a label, so it may
    # name a node the cluster does not have (see ``alerting_split``).
    alerting_nodes: frozenset[str] = frozenset()
    node_events: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # event reasons seen on a node
    confirmed_gpu_faults: frozenset[str] = frozenset()  # nodes whose node-agent report confirms the fault
    # Per node read: the NVML clock-event (throttle) reasons its node-agent reports on any GPU now.
    throttle_reasons: dict[str, frozenset[str]] = Field(default_factory=dict)
    # Per node read: every XID its node-agent's NVML event set delivered (application ones included).
    reported_xids: dict[str, frozenset[int]] = Field(default_factory=dict)
    # The nodes the incident is about: a playbook's node preconditions hold (or not) for an action that
    # targets no node (a notice, a credit) by looking at the incident's one node.
    subject_nodes: frozenset[str] = frozenset()
    # Who the incident affects, for the gate's identity rule on notices and billing writes (``affected``).
    # The pods the incident is about ("namespace/name", from its pod alerts): found in the cluster, their
    # customer is the pod's own label there, never the alert's.
    subject_pods: frozenset[str] = frozenset()
    # Customers the agent itself saw, in this incident's reads from the cluster, with pods on its nodes or
    # among its pods: the ones whose pods are gone since (drained, evicted from a dead node) still count.
    # None: not computed (the caller had no incident evidence to give); the gate then asks a human about a
    # customer the cluster does not show affected now, rather than let it through.
    observed_customers: frozenset[str] | None = None
    # The nodes whose tenants the incident affects, for the identity rule (None: the subject nodes). A
    # pod's incident affects the pod's owner, not the other tenants of the node its alert names.
    customer_nodes: frozenset[str] | None = None
    # Per pod ("namespace/name") of the incident's: how many running meters count it now (read from the
    # meter feed only for a playbook that requires ``meter_duplicated``); a pod with no meter is absent.
    running_meters: dict[str, int] = Field(default_factory=dict)
    # The gang workloads on the nodes and pods a decision is about (by ``WorkloadView.key``), and for a
    # drain where its evicted pods could go (by pool): read for the action, O(its workloads).
    workloads: dict[str, WorkloadView] = Field(default_factory=dict)
    room: dict[str, PoolRoom] = Field(default_factory=dict)

    # Indexes, built on first use (or handed over by a watch cache that keeps them), keep every gate
    # lookup O(1) on a 10,000-node fleet.
    _pool_sizes: dict[str, int] | None = PrivateAttr(default=None)
    _pods: dict[str, tuple[str, PodRef]] | None = PrivateAttr(default=None)
    _deployments: dict[str, tuple[PodRef, ...]] | None = PrivateAttr(default=None)

    @classmethod
    def prebuilt(
        cls,
        nodes: dict[str, NodeView],
        pool_sizes: dict[str, int],
        pods: dict[str, tuple[str, PodRef]],
        deployments: dict[str, tuple[PodRef, ...]],
        **fields: Any,
    ) -> WorldView:
        """A world from parts already validated and indexed (a watch cache's snapshot): no validation
        and no index pass, so it costs the copies the caller made, not O(the fleet) model building."""
        world = cls.model_construct(nodes=nodes, **fields)
        world._pool_sizes, world._pods, world._deployments = pool_sizes, pods, deployments
        return world

    def _index(self) -> None:
        sizes: dict[str, int] = {}
        pods: dict[str, tuple[str, PodRef]] = {}
        deployments: dict[str, list[PodRef]] = {}
        for node in self.nodes.values():
            sizes[node.pool] = sizes.get(node.pool, 0) + 1
            for pod in node.pods:
                pods[f"{pod.namespace}/{pod.name}"] = (node.name, pod)
                if pod.deployment:
                    deployments.setdefault(f"{pod.namespace}/{pod.deployment}", []).append(pod)
        self._pool_sizes, self._pods = sizes, pods
        self._deployments = {k: tuple(v) for k, v in deployments.items()}

    def pool_size(self, pool: str) -> int:
        if self._pool_sizes is None:
            self._index()
        assert self._pool_sizes is not None
        return self._pool_sizes.get(pool, 0)

    def find_pod(self, namespace: str, name: str) -> tuple[NodeView, PodRef] | None:
        if self._pods is None:
            self._index()
        assert self._pods is not None
        hit = self._pods.get(f"{namespace}/{name}")
        return (self.nodes[hit[0]], hit[1]) if hit else None

    def deployment_pods(self, namespace: str, name: str) -> list[PodRef]:
        if self._deployments is None:
            self._index()
        assert self._deployments is not None
        return list(self._deployments.get(f"{namespace}/{name}", ()))

    def identity_nodes(self) -> frozenset[str]:
        """The nodes whose tenants count as affected (see ``customer_nodes``)."""
        return self.subject_nodes if self.customer_nodes is None else self.customer_nodes

    def affected_now(self, customer: str, nodes: tuple[str, ...] = ()) -> bool:
        """Whether the cluster shows ``customer`` affected by the incident now: a tenant (non-DaemonSet)
        pod of theirs on one of its subject nodes or on ``nodes`` (the action's targets), or one of the
        pods it is about labelled as theirs. O(those nodes' pods + the incident's pods): no fleet scan."""
        for name in {*self.identity_nodes(), *nodes}:
            node = self.nodes.get(name)
            if node is not None and any(p.customer == customer and not p.daemonset for p in node.pods):
                return True
        for key in self.subject_pods:
            namespace, _, pod = key.partition("/")
            found = self.find_pod(namespace, pod)
            if found is not None and found[1].customer == customer:
                return True
        return False

    def alerting_split(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """The alerting nodes the cluster has, and (sorted) those it does not, in O(alerting nodes).

        An alert names its node in a label that whoever can reach the webhook writes: a stale rule for a
        decommissioned node, a typo, or a forged alert. Truth about what is failing comes from the
        cluster, so only the nodes it has count toward a mass failure; the others are suspicious."""
        known = frozenset(n for n in self.alerting_nodes if n in self.nodes)
        return known, tuple(sorted(self.alerting_nodes - known))


class PastAction(BaseModel):
    """One write the agent executed (from the audit log), with what it touched."""

    model_config = ConfigDict(frozen=True)

    tool: str
    incident_id: str
    at: datetime
    nodes: tuple[str, ...] = ()
    customers: tuple[str, ...] = ()
    gpus: int = 0
    dollars: Decimal = Decimal("0")
    verified: bool | None = None  # False: its verification failed
    workloads: tuple[WorkloadHit, ...] = ()  # the gang workloads it stopped, as its decision saw them


class History(BaseModel):
    """The agent's own record: past writes, and the circuit breaker's latched state."""

    model_config = ConfigDict(frozen=True)

    actions: tuple[PastAction, ...] = ()
    breaker_tripped: bool = False
    breaker_reason: str = ""
    uncordoned: tuple[str, ...] = Field(default=(), description="Nodes the agent has since handed back.")
    out_now: frozenset[str] | None = Field(
        None,
        description="The nodes the agent has out of service now, as the audit's table of them says; "
        "None: replay ``actions`` (the whole log).",
    )
