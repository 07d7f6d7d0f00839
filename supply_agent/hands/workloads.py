"""The gang workloads an action would stop, and where a drain's evicted pods could go: read for one
decision, O(the workloads it touches and the nodes read to place what it evicts), never the cluster.

A pod's workload comes from the labels its controller puts on it (``PodRef.workload``). For each workload
on the action's target nodes (or its target pod), one LIST of its pods by those labels gives its nodes and
GPUs, and one GET of its object the checkpoint it would restart from: the annotations
``checkpoint.supply-agent.dev/last`` and ``.../started`` (when it last began, from a checkpoint) and
``.../interval``. A workload the cluster does not serve (no JobSet API, no such object) still counts its
pods; only its checkpoint is then unknown.

For a drain, the pods it evicts must fit somewhere else in their pool: the free GPUs of the pool's Ready,
schedulable nodes other than the targets, read until every evicted pod fits (first fit, largest first).
A node's pods are the world's when it holds them all (a cache that watches pods), else one LIST by field
selector per node read; a pool with no room is read to its end, and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from kubernetes import client

from supply_agent.hands.world import slim_pod
from supply_agent.policy.world import NodeView, PodRef, PoolRoom, WorkloadView, WorldView
from tools.kubernetes import KubeTools, ToolError
from tools.kubernetes.models import JOBSET_NAME_LABEL, LWS_GROUP_LABEL, LWS_NAME_LABEL

CHECKPOINT_EVERY = "checkpoint.supply-agent.dev/interval"
LAST_CHECKPOINT = "checkpoint.supply-agent.dev/last"
STARTED = "checkpoint.supply-agent.dev/started"
_APIS = {
    "JobSet": ("jobset.x-k8s.io", "v1alpha2", "jobsets"),
    "LeaderWorkerSet": ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"),
}

PodsOf = Callable[[str], tuple[PodRef, ...]]


def _stamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def read_workload(kube: KubeTools, key: str) -> WorkloadView | None:
    """One workload by its key: its pods now (one LIST by label), and its object's checkpoint (one GET);
    None for a key that names no workload kind."""
    kind, _, rest = key.partition("/")
    ns, _, rest = rest.partition("/")
    name, _, group = rest.partition("/")
    if kind not in _APIS or not ns or not name:
        return None
    selector = (
        f"{JOBSET_NAME_LABEL}={name}"
        if kind == "JobSet"
        else f"{LWS_NAME_LABEL}={name},{LWS_GROUP_LABEL}={group}"
    )
    raw = kube.read(kube.core.list_namespaced_pod, ns, label_selector=selector)
    refs = [(node, ref) for node, ref, _ in (slim_pod(p) for p in raw.get("items") or [])]
    live = [(node, ref) for node, ref in refs if node and not ref.terminating]
    annotations: dict[str, str] = {}
    api_group, version, plural = _APIS[kind]
    try:
        obj = kube.read(
            client.CustomObjectsApi(kube.api).get_namespaced_custom_object,
            api_group,
            version,
            ns,
            plural,
            name,
        )
        annotations = dict((obj.get("metadata") or {}).get("annotations") or {})
    except ToolError as exc:
        if exc.status not in (403, 404):  # no such object or API: its checkpoint is unknown
            raise
    marks = [t for t in (_stamp(annotations.get(LAST_CHECKPOINT)), _stamp(annotations.get(STARTED))) if t]
    every = annotations.get(CHECKPOINT_EVERY, "")
    customers = sorted({r.customer for _, r in live if r.customer})
    return WorkloadView(
        kind=kind,
        namespace=ns,
        name=name,
        group=group or None,
        customer=customers[0] if customers else None,
        nodes=tuple(sorted({node for node, _ in live if node})),
        gpus=sum(r.gpus for _, r in live),
        pods=len(live),
        checkpoint_every_s=int(every) if every.isdigit() else None,
        resumes_from=max(marks) if marks else None,
    )


def evicted_by(world: WorldView, nodes: Iterable[str]) -> list[PodRef]:
    """The pods a drain of ``nodes`` evicts: every pod on them but DaemonSet pods and those going."""
    return [
        p for n in nodes if (v := world.nodes.get(n)) for p in v.pods if not p.daemonset and not p.terminating
    ]


def read_room(world: WorldView, targets: tuple[str, ...], pods_of: PodsOf | None) -> dict[str, PoolRoom]:
    """Per pool of the targets: where the GPU pods a drain of them evicts could go (see the module doc),
    each held to the nodes its nodeSelector allows. ``pods_of`` reads a node's pods live; None: the world
    holds every node's pods."""
    out: dict[str, PoolRoom] = {}
    skip = set(targets)
    for pool in sorted({world.nodes[n].pool for n in targets if n in world.nodes}):
        evicted = sorted(
            (
                (p.gpus, p.node_selector)
                for n in targets
                if (v := world.nodes.get(n)) and v.pool == pool
                for p in evicted_by(world, [n])
                if p.gpus
            ),
            key=lambda x: -x[0],
        )
        if not evicted:
            continue
        needs = tuple(g for g, _ in evicted)
        selectors = tuple(s for _, s in evicted) if any(s for _, s in evicted) else ()
        free: list[int] = []
        labels: list[tuple[tuple[str, str], ...]] = []
        complete = True
        smallest = min(needs)
        candidates = sorted(
            (v for v in world.nodes.values() if v.pool == pool and v.name not in skip and v.takes_work()),
            key=lambda v: v.name,
        )
        held = selectors and all(selectors)  # every evicted pod selects: other nodes can take none of them
        for i, view in enumerate(candidates):
            alloc = view.gpus if view.allocatable_gpus is None else view.allocatable_gpus
            if alloc < smallest:
                continue
            if held and not any(all(view.group_labels.get(k) == v for k, v in sel) for sel in selectors):
                continue  # no evicted pod may go there: not read
            node = view if pods_of is None else view.model_copy(update={"pods": pods_of(view.name)})
            free.append(node.free_gpus())
            labels.append(tuple(sorted(view.group_labels.items())))
            room = PoolRoom(
                pool=pool, needs=needs, free=tuple(free), need_selectors=selectors, free_labels=tuple(labels)
            )
            if not room.unplaced():
                complete = i == len(candidates) - 1
                break
        order = sorted(range(len(free)), key=lambda k: -free[k])
        out[pool] = PoolRoom(
            pool=pool,
            needs=needs,
            free=tuple(free[k] for k in order),
            complete=complete,
            need_selectors=selectors,
            free_labels=tuple(labels[k] for k in order) if selectors else (),
        )
    return out


def live_pods(kube: KubeTools) -> PodsOf:
    """A node's pods read live (one LIST by field selector)."""

    def pods_of(node: str) -> tuple[PodRef, ...]:
        raw = kube.read(kube.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}")
        return tuple(ref for _, ref, _ in (slim_pod(p) for p in raw.get("items") or []))

    return pods_of


def with_workloads(
    world: WorldView,
    kube: KubeTools,
    nodes: tuple[str, ...],
    pods: tuple[str, ...],
    *,
    drain: bool,
    pods_of: PodsOf | None,
) -> WorldView:
    """The world with the workloads on ``nodes`` and of ``pods`` ("namespace/name"), and, for a drain,
    the room its evicted pods have in their pools."""
    keys: set[str] = set()
    for n in nodes:
        view: NodeView | None = world.nodes.get(n)
        keys.update(p.workload for p in (view.pods if view else ()) if p.workload and not p.terminating)
    for key in pods:
        ns, _, name = key.partition("/")
        found = world.find_pod(ns, name)
        if found is not None and found[1].workload:
            keys.add(found[1].workload)
    workloads = dict(world.workloads)
    for key in sorted(keys - set(workloads)):
        w = read_workload(kube, key)
        if w is not None:
            workloads[key] = w
    room = read_room(world, nodes, pods_of) if drain and nodes else dict(world.room)
    return world.model_copy(update={"workloads": workloads, "room": {**world.room, **room}})
