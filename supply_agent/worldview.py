"""What the gate knows about the world and about the agent's own past: plain data, read once per decision
round, so that ``gate.decide`` stays a pure function of its inputs."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from tools.catalogue import BREAKER_CONFIGMAP, CONTROL_NAMESPACE, FREEZE_CONFIGMAP
from tools.kubernetes import CUSTOMER_LABEL, POOL_LABEL, KubeTools, ToolError

AGENT_NAMESPACE = CONTROL_NAMESPACE


class PodRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    namespace: str
    name: str
    customer: str | None = None
    gpus: int = 0
    daemonset: bool = False
    deployment: str | None = None


class NodeView(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    pool: str
    gpus: int
    ready: str = "True"  # "True" | "False" | "Unknown", as the Ready condition says
    gpu_healthy: str = "True"  # the GpuHealthy condition the node-agent maintains
    unschedulable: bool = False
    agent_ready: bool = True  # the node-agent (the GPU monitor) pod is Ready
    pods: tuple[PodRef, ...] = ()
    conditions: dict[str, str] = Field(default_factory=dict)  # every condition type -> status

    def customers(self) -> tuple[str, ...]:
        return tuple(sorted({p.customer for p in self.pods if p.customer and not p.daemonset}))


class WorldView(BaseModel):
    """The fleet as the gate sees it. Built by ``read_world`` from the cluster (read-only credentials)."""

    model_config = ConfigDict(frozen=True)

    now: datetime
    nodes: dict[str, NodeView]
    frozen: bool = False
    frozen_reason: str = ""
    alerting_nodes: frozenset[str] = frozenset()  # nodes with a firing alert in the short-circuit window
    node_events: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # event reasons seen on a node
    confirmed_gpu_faults: frozenset[str] = frozenset()  # nodes whose node-agent report confirms the fault
    # The nodes the incident is about: a playbook's node preconditions hold (or not) for an action that
    # targets no node (a notice, a credit) by looking at the incident's one node.
    subject_nodes: frozenset[str] = frozenset()

    _pool_sizes: dict[str, int] = PrivateAttr(default_factory=dict)
    _pods: dict[str, tuple[str, PodRef]] = PrivateAttr(default_factory=dict)
    _deployments: dict[str, list[PodRef]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        # Indexes, built once per world read, keep every gate lookup O(1) on a 10,000-node fleet.
        for node in self.nodes.values():
            self._pool_sizes[node.pool] = self._pool_sizes.get(node.pool, 0) + 1
            for pod in node.pods:
                self._pods[f"{pod.namespace}/{pod.name}"] = (node.name, pod)
                if pod.deployment:
                    self._deployments.setdefault(f"{pod.namespace}/{pod.deployment}", []).append(pod)

    def pool_size(self, pool: str) -> int:
        return self._pool_sizes.get(pool, 0)

    def find_pod(self, namespace: str, name: str) -> tuple[NodeView, PodRef] | None:
        hit = self._pods.get(f"{namespace}/{name}")
        return (self.nodes[hit[0]], hit[1]) if hit else None

    def deployment_pods(self, namespace: str, name: str) -> list[PodRef]:
        return self._deployments.get(f"{namespace}/{name}", [])


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


class History(BaseModel):
    """The agent's own record: past writes, and the circuit breaker's latched state."""

    model_config = ConfigDict(frozen=True)

    actions: tuple[PastAction, ...] = ()
    breaker_tripped: bool = False
    breaker_reason: str = ""
    uncordoned: tuple[str, ...] = Field(default=(), description="Nodes the agent has since handed back.")


def _deployment_of(pod: dict[str, Any]) -> str | None:
    owner = next((o for o in pod["metadata"].get("ownerReferences") or [] if o.get("controller")), None)
    if owner and owner["kind"] == "ReplicaSet":
        return str(owner["name"]).rsplit("-", 1)[0]
    return None


def read_world(kube: KubeTools, now: datetime, alerting_nodes: frozenset[str] = frozenset()) -> WorldView:
    """One consistent-enough read of the fleet: nodes, pods by node, and the kill switch ConfigMap."""
    raw_nodes = kube.list_raw("nodes")
    raw_pods = kube.list_raw("pods")
    by_node: dict[str, list[PodRef]] = {}
    agent_ready: dict[str, bool] = {}
    for p in raw_pods:
        node = (p.get("spec") or {}).get("nodeName")
        if not node:
            continue
        meta = p["metadata"]
        owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
        if meta["namespace"] == AGENT_NAMESPACE:
            agent_ready[node] = ready and not meta.get("deletionTimestamp")
        gpus = sum(
            int(((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0))
            for c in p["spec"]["containers"]
        )
        by_node.setdefault(node, []).append(
            PodRef(
                namespace=meta["namespace"],
                name=meta["name"],
                customer=(meta.get("labels") or {}).get(CUSTOMER_LABEL),
                gpus=gpus,
                daemonset=bool(owner and owner["kind"] == "DaemonSet"),
                deployment=_deployment_of(p),
            )
        )
    nodes = {}
    for n in raw_nodes:
        name = n["metadata"]["name"]
        conds = {c["type"]: c["status"] for c in (n.get("status") or {}).get("conditions") or []}
        nodes[name] = NodeView(
            name=name,
            pool=(n["metadata"].get("labels") or {}).get(POOL_LABEL, "default"),
            gpus=int(((n.get("status") or {}).get("capacity") or {}).get("nvidia.com/gpu", 0)),
            ready=conds.get("Ready", "Unknown"),
            gpu_healthy=conds.get("GpuHealthy", "Unknown"),
            conditions=conds,
            unschedulable=bool((n.get("spec") or {}).get("unschedulable")),
            agent_ready=agent_ready.get(name, False),
            pods=tuple(sorted(by_node.get(name, []), key=lambda r: (r.namespace, r.name))),
        )
    frozen, reason = read_freeze(kube)
    return WorldView(now=now, nodes=nodes, frozen=frozen, frozen_reason=reason, alerting_nodes=alerting_nodes)


def _read_latch(kube: KubeTools, name: str, what: str) -> dict[str, str] | str:
    """A control ConfigMap's data ({} when absent), or why it could not be read (callers fail closed)."""
    try:
        return kube.read_config_map(AGENT_NAMESPACE, name)
    except ToolError as exc:
        return {} if exc.status == 404 else f"cannot read the {what} ({exc}): failing closed"


def read_freeze(kube: KubeTools) -> tuple[bool, str]:
    """The kill switch: ConfigMap ``supply-agent-freeze`` with ``frozen: "true"``. Unreadable means frozen."""
    data = _read_latch(kube, FREEZE_CONFIGMAP, "kill switch")
    if isinstance(data, str):
        return True, data
    frozen = data.get("frozen", "false").lower() in ("true", "1", "yes")
    return frozen, data.get("reason", "") if frozen else ""


def read_breaker(kube: KubeTools) -> tuple[bool, str]:
    """The latched circuit breaker (NVSentinel keeps it in a ConfigMap too): TRIPPED until a human resets it."""
    data = _read_latch(kube, BREAKER_CONFIGMAP, "circuit breaker")
    if isinstance(data, str):
        return True, data
    return data.get("status") == "TRIPPED", data.get("reason", "")


APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68})


def enrich(world: WorldView, kube: KubeTools, nodes: list[str]) -> WorldView:
    """Add what the gate's preconditions need for the nodes an action targets: their event reasons, and
    whether the node-agent's own NVML report confirms a GPU fault (a lost GPU, uncorrected ECC errors,
    or a non-application XID)."""
    from tools.nvml import gpu_health

    events = dict(world.node_events)
    confirmed = set(world.confirmed_gpu_faults)
    for name in nodes:
        if name not in world.nodes:
            continue
        events[name] = tuple(sorted({e.reason for e in kube.events_for("Node", name)}))
        read = gpu_health(kube, name)
        if read.available and read.report is not None:
            for gpu in read.report.gpus:
                xids = {x.xid for x in gpu.xid_events} - APPLICATION_XIDS
                if gpu.lost or (gpu.ecc_uncorrected_volatile or 0) > 0 or xids:
                    confirmed.add(name)
    return world.model_copy(update={"node_events": events, "confirmed_gpu_faults": frozenset(confirmed)})
