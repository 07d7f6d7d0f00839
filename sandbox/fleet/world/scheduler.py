"""The scheduler (with the kubelet's admission folded in): which nodes can take pods, GPU fit, binding a pod
to free GPU indices, and retrying Pending pods when capacity frees up. Schedulable nodes are kept in
per-pool buckets by free GPU count so that placing a pod stays cheap on a fleet of tens of thousands.
"""

from __future__ import annotations

from sandbox.fleet.store import Obj, thaw
from sandbox.fleet.world.spec import GPU, GPU_INDICES_ANNOTATION, POOL_LABEL, _resource_count, is_terminating
from sandbox.fleet.world.state import FleetState


class SchedulerMixin(FleetState):
    """Places pods on nodes with enough healthy, free GPUs, and tracks which pod owns each GPU."""

    def schedulable(self, node: Obj) -> bool:
        if node["spec"].get("unschedulable") or self._node_down(node["metadata"]["name"]):
            return False
        return not any(
            t.get("effect") in ("NoSchedule", "NoExecute") for t in node["spec"].get("taints") or []
        )

    def free_gpus(self, name: str) -> list[int]:
        bad = self._unhealthy.get(name, set())
        return [i for i, owner in enumerate(self._gpu_owner[name]) if owner is None and i not in bad]

    def _rebucket(self, name: str) -> None:
        old = self._bucket_of.pop(name, None)
        if old is not None:
            self._buckets[old[0]][old[1]].pop(name, None)
        node = self.store.get("nodes", "", name)
        if node is None or not self.schedulable(node):
            return
        pool = node["metadata"]["labels"][POOL_LABEL]
        free = len(self.free_gpus(name))
        buckets = self._buckets.setdefault(pool, [{} for _ in range(self.spec.gpus_per_node + 1)])
        buckets[free][name] = None
        self._bucket_of[name] = (pool, free)

    def _pick_node(self, pool: str | None, gpus: int, selector: dict[str, str] | None = None) -> str | None:
        """A schedulable node of ``pool`` with ``gpus`` free, the fullest first; with ``selector`` (the
        pod's nodeSelector beyond its pool), only a node whose labels hold all of it."""
        pools = [pool] if pool else sorted(self._buckets)
        for p in pools:
            buckets = self._buckets.get(p)
            if not buckets:
                continue
            for free in range(max(gpus, 1) if gpus else 0, self.spec.gpus_per_node + 1):
                if not selector:
                    if buckets[free]:
                        return next(iter(buckets[free]))
                    continue
                for name in buckets[free]:
                    labels = self.node(name)["metadata"].get("labels") or {}
                    if all(labels.get(k) == v for k, v in selector.items()):
                        return name
        return None

    def _bind(self, pod: Obj, node_name: str) -> Obj:
        """Bind a pod to a node with GPUs free and start it (the scheduler and kubelet in one)."""
        gpus = _resource_count(pod)
        indices = self.free_gpus(node_name)[:gpus]
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        for i in indices:
            self._gpu_owner[node_name][i] = key
        at = self.stamp()
        pod["spec"]["nodeName"] = node_name
        if gpus:
            pod["metadata"].setdefault("annotations", {})[GPU_INDICES_ANNOTATION] = ",".join(
                map(str, indices)
            )
        node = self.node(node_name)
        host_ip = node["status"]["addresses"][0]["address"]
        pod["status"] = self._running_status(pod, host_ip, at)
        self._rebucket(node_name)
        return pod

    def _release(self, pod: Obj) -> None:
        node = pod["spec"].get("nodeName")
        if not node or node not in self._gpu_owner:
            return
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        owners = self._gpu_owner[node]
        for i, owner in enumerate(owners):
            if owner == key:
                owners[i] = None
        self._rebucket(node)

    def _place(self, pod: Obj) -> Obj:
        """Schedule a new pod now, or leave it Pending with the scheduler's message."""
        pool, extra = _selector(pod)
        node_name = self._pick_node(pool, _resource_count(pod), extra)
        if node_name is None:
            ready = len(self._bucket_of)
            msg = (
                f"0/{self.store.count('nodes')} nodes are available: {self.store.count('nodes') - ready} node(s) "
                f"were unschedulable, {ready} Insufficient {GPU}. preemption: 0/{self.store.count('nodes')} "
                "nodes are available: No preemption victims found for incoming pod."
            )
            pod["status"] = self._pending_status(msg)
            self._pending[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = None
            stored = self.store.put("pods", pod)
            self.event(stored, "Warning", "FailedScheduling", msg, "default-scheduler")
            return stored
        stored = self.store.put("pods", self._bind(pod, node_name))
        self._start_meter(stored)
        return stored

    def schedule_pending(self) -> None:
        for ns, name in list(self._pending):
            pod = self.store.get("pods", ns, name)
            if pod is None or is_terminating(pod):
                self._pending.pop((ns, name), None)
                continue
            pool, extra = _selector(pod)
            node_name = self._pick_node(pool, _resource_count(pod), extra)
            if node_name is None:
                continue
            self._pending.pop((ns, name), None)
            bound = self.store.put("pods", self._bind(thaw(pod), node_name))
            self.event(
                bound,
                "Normal",
                "Scheduled",
                f"Successfully assigned {ns}/{name} to {node_name}",
                "default-scheduler",
            )
            self._start_meter(bound)
            self._refresh_pdbs(ns)
            self._refresh_owner(bound)


def _selector(pod: Obj) -> tuple[str | None, dict[str, str]]:
    """A pod's pool, and the rest of its nodeSelector."""
    sel = dict(pod["spec"].get("nodeSelector") or {})
    return sel.pop(POOL_LABEL, None), sel
