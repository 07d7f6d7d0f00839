"""Reading the world for the gate from the cluster (read-only credentials): nodes and pods slimmed into a
:class:`WorldView`, the control latches (kill switch, circuit breaker), and what the node-agents confirm.
The models themselves are plain data in ``supply_agent.policy.world``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from supply_agent.models import Action
from supply_agent.policy.world import APPLICATION_XIDS, NodeView, PodRef, WorldView, group_labels_of
from tools.kubernetes import CUSTOMER_LABEL, POOL_LABEL, KubeTools
from tools.kubernetes.models import workload_of
from tools.latches import CONTROL_NAMESPACE, read_breaker, read_freeze

__all__ = [
    "Scope",
    "enrich",
    "read_breaker",
    "read_freeze",
    "read_world",
    "scope_of",
    "slim_node",
    "slim_pod",
    "world_from_raw",
]


@dataclass(frozen=True)
class Scope:
    """What a decision reads live on a cache of nodes: ``nodes`` (with their pods) always, ``if_known``
    only when the cache has them (alert labels may name nodes the cluster does not have), the pods and
    the deployments named ("namespace/name")."""

    nodes: frozenset[str] = frozenset()
    if_known: frozenset[str] = frozenset()
    pods: frozenset[str] = frozenset()
    deployments: frozenset[str] = frozenset()


def scope_of(
    action: Action, subject: frozenset[str], pods: frozenset[str], customer_nodes: frozenset[str] | None
) -> Scope:
    """What the gate may look at for this action: its targets named in its parameters, the incident's
    nodes, the nodes of its customers and its pods."""
    p = action.params
    ns = p.get("namespace")
    named = {f"{ns}/{p['pod']}"} if isinstance(ns, str) and isinstance(p.get("pod"), str) else set()
    deps = (
        {f"{ns}/{p['deployment']}"} if isinstance(ns, str) and isinstance(p.get("deployment"), str) else set()
    )
    listed = p.get("nodes")
    many: list[Any] = listed if isinstance(listed, list) else []
    return Scope(
        nodes=frozenset(n for n in (p.get("node"), *many) if isinstance(n, str)),
        if_known=subject | (customer_nodes or frozenset()),
        pods=pods | named,
        deployments=frozenset(deps),
    )


def _deployment_of(pod: dict[str, Any]) -> str | None:
    owner = next((o for o in pod["metadata"].get("ownerReferences") or [] if o.get("controller")), None)
    if owner and owner["kind"] == "ReplicaSet":
        return str(owner["name"]).rsplit("-", 1)[0]
    return None


def slim_pod(p: dict[str, Any]) -> tuple[str | None, PodRef, bool | None]:
    """A raw pod as the gate keeps it: (its node, the slim pod, and for a node-agent pod whether it
    is Ready and not terminating; None for any other pod)."""
    node = (p.get("spec") or {}).get("nodeName")
    meta = p["metadata"]
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    agent: bool | None = None
    if meta["namespace"] == CONTROL_NAMESPACE:
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
        agent = ready and not meta.get("deletionTimestamp")
    gpus = sum(
        int(((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0))
        for c in (p.get("spec") or {}).get("containers") or []
    )
    cs = ((p.get("status") or {}).get("containerStatuses") or [{}])[0]
    ref = PodRef(
        namespace=meta["namespace"],
        name=meta["name"],
        customer=(meta.get("labels") or {}).get(CUSTOMER_LABEL),
        gpus=gpus,
        daemonset=bool(owner and owner["kind"] == "DaemonSet"),
        deployment=_deployment_of(p),
        waiting_reason=((cs.get("state") or {}).get("waiting") or {}).get("reason"),
        last_termination_reason=((cs.get("lastState") or {}).get("terminated") or {}).get("reason"),
        workload=workload_of(meta["namespace"], meta.get("labels") or {}),
        # The pool is where its room is read already; the rest narrows it.
        node_selector=tuple(
            sorted(
                (k, v)
                for k, v in group_labels_of((p.get("spec") or {}).get("nodeSelector") or {}).items()
                if k != "pool"
            )
        ),
        terminating=bool(meta.get("deletionTimestamp"))
        or (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
    )
    return node, ref, agent


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def slim_node(n: dict[str, Any], pods: tuple[PodRef, ...] = (), agent_ready: bool = False) -> NodeView:
    """A raw node as the gate keeps it, with the pods on it (sorted) and its node-agent's readiness."""
    conds = {c["type"]: c["status"] for c in (n.get("status") or {}).get("conditions") or []}
    labels = n["metadata"].get("labels") or {}
    pool = labels.get(POOL_LABEL, "default")
    return NodeView(
        name=n["metadata"]["name"],
        pool=pool,
        group_labels={"pool": pool} | group_labels_of(labels),
        gpus=int(((n.get("status") or {}).get("capacity") or {}).get("nvidia.com/gpu", 0)),
        allocatable_gpus=_int_or_none(
            ((n.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu")
        ),
        ready=conds.get("Ready", "Unknown"),
        gpu_healthy=conds.get("GpuHealthy", "Unknown"),
        conditions=conds,
        unschedulable=bool((n.get("spec") or {}).get("unschedulable")),
        agent_ready=agent_ready,
        pods=tuple(sorted(pods, key=lambda r: (r.namespace, r.name))),
    )


def read_world(kube: KubeTools, now: datetime, alerting_nodes: frozenset[str] = frozenset()) -> WorldView:
    """One consistent-enough read of the fleet: nodes, pods by node, and the kill switch ConfigMap.
    Two LISTs of the whole cluster: what a one-shot command does; a long-lived process keeps a
    :class:`~supply_agent.hands.world_cache.WorldCache` instead."""
    raw_nodes = kube.list_raw("nodes")
    raw_pods = kube.list_raw("pods")
    frozen, reason = read_freeze(kube)
    return world_from_raw(raw_nodes, raw_pods, now, alerting_nodes, frozen, reason)


def world_from_raw(
    raw_nodes: list[dict[str, Any]],
    raw_pods: list[dict[str, Any]],
    now: datetime,
    alerting_nodes: frozenset[str] = frozenset(),
    frozen: bool = False,
    reason: str = "",
) -> WorldView:
    """The gate's world from listed nodes and pods (what a watch cache must equal at every point)."""
    by_node: dict[str, list[PodRef]] = {}
    agent_ready: dict[str, bool] = {}
    for p in raw_pods:
        node, ref, agent = slim_pod(p)
        if not node:
            continue
        if agent is not None:  # any node-agent pod ready (one is; two during a DaemonSet rollout)
            agent_ready[node] = agent_ready.get(node, False) or agent
        by_node.setdefault(node, []).append(ref)
    nodes = {}
    for n in raw_nodes:
        name = n["metadata"]["name"]
        nodes[name] = slim_node(n, tuple(by_node.get(name, ())), agent_ready.get(name, False))
    return WorldView(now=now, nodes=nodes, frozen=frozen, frozen_reason=reason, alerting_nodes=alerting_nodes)


def enrich(world: WorldView, kube: KubeTools, nodes: list[str]) -> WorldView:
    """Add what the gate's preconditions need for the nodes an action targets: their event reasons, and
    whether the node-agent's own NVML report confirms a GPU fault (a lost GPU, uncorrected ECC errors,
    or a non-application XID), and every XID it reports (an application's too)."""
    from tools.nvml import gpu_health

    events = dict(world.node_events)
    confirmed = set(world.confirmed_gpu_faults)
    throttled = dict(world.throttle_reasons)
    reported = dict(world.reported_xids)
    for name in nodes:
        if name not in world.nodes:
            continue
        events[name] = tuple(sorted({e.reason for e in kube.events_for("Node", name)}))
        read = gpu_health(kube, name)
        if read.available and read.report is not None:
            throttled[name] = frozenset(r for gpu in read.report.gpus for r in gpu.clock_event_reasons)
            reported[name] = frozenset(x.xid for gpu in read.report.gpus for x in gpu.xid_events)
            for gpu in read.report.gpus:
                xids = {x.xid for x in gpu.xid_events} - APPLICATION_XIDS
                if gpu.lost or (gpu.ecc_uncorrected_volatile or 0) > 0 or xids:
                    confirmed.add(name)
    return world.model_copy(
        update={
            "node_events": events,
            "confirmed_gpu_faults": frozenset(confirmed),
            "throttle_reasons": throttled,
            "reported_xids": reported,
        }
    )
