"""Multi-host inference as GPU clouds serve it: LeaderWorkerSets (``leaderworkerset.x-k8s.io/v1``).

A LeaderWorkerSet's ``spec.replicas`` groups each run ``spec.leaderWorkerTemplate.size`` pods: a leader
(``{name}-{group}``, from ``leaderTemplate``, else ``workerTemplate``) and its workers
(``{name}-{group}-{worker}``), labelled as the LWS controller labels them
(``leaderworkerset.sigs.k8s.io/name``, ``group-index``, ``worker-index``; kubernetes-sigs/lws
api/leaderworkerset/v1). One group serves one copy of a model sharded across its nodes, so the group is
the unit: with ``restartPolicy: RecreateGroupOnPodRestart`` (the default here) a pod of it going
(evicted, deleted, its node drained) recreates the whole group, and the other groups serve on.

Here the pods are owned by the LeaderWorkerSet itself; the real controller puts a StatefulSet between
them (the leaders' StatefulSet, and a workers' StatefulSet per group). The world reads a pod's group
from its labels, not its owner chain, so nothing the agent reads depends on that.

What each group lost is in the fleet's truth beside the JobSets' (``workloads``, kind LeaderWorkerSet,
``name/group``): serving keeps no checkpoint, so a recreate loses no work, only the time every GPU of the
group idles until all its pods run again.
"""

from __future__ import annotations

from typing import Any

from sandbox.fleet.store import Obj, thaw
from sandbox.fleet.world.jobsets import gpu_pod_template, template_gpus
from sandbox.fleet.world.spec import CUSTOMER_LABEL, WorkloadLoss, is_terminating
from sandbox.fleet.world.state import FleetState

API_VERSION = "leaderworkerset.x-k8s.io/v1"
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"
WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
RECREATE = "RecreateGroupOnPodRestart"


# At most this many groups, and pods a group, through the API (the sandbox's own bound).
MAX_GROUPS, MAX_SIZE = 256, 64


def _templates(lws: Obj) -> tuple[dict[str, Any], dict[str, Any], int]:
    lwt = lws["spec"]["leaderWorkerTemplate"]
    worker = lwt["workerTemplate"]
    return lwt.get("leaderTemplate") or worker, worker, int(lwt.get("size", 1))


def group_gpus(lws: Obj) -> int:
    """Every GPU one group's pods ask for."""
    leader, worker, size = _templates(lws)
    return template_gpus(leader) + (size - 1) * template_gpus(worker)


def lws_object(
    ns: str, name: str, customer: str, pool: str, groups: int, size: int, gpus_per_node: int
) -> dict[str, Any]:
    """A serving LeaderWorkerSet of ``groups`` groups of ``size`` pods, one per node, each taking
    ``gpus_per_node`` GPUs (a model sharded over ``size`` nodes, ``groups`` copies of it)."""
    labels = {"app": name, CUSTOMER_LABEL: customer}
    image = f"registry.{customer}.example/serve:v1"
    return {
        "apiVersion": API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": groups,
            "leaderWorkerTemplate": {
                "size": size,
                "restartPolicy": RECREATE,
                "leaderTemplate": gpu_pod_template(labels, "leader", image, pool, gpus_per_node, "Always"),
                "workerTemplate": gpu_pod_template(labels, "worker", image, pool, gpus_per_node, "Always"),
            },
        },
    }


class LeaderWorkerSetsMixin(FleetState):
    """The LeaderWorkerSet controller: groups made whole, and a group recreated when one of its pods goes."""

    def create_lws(self, obj: dict[str, Any]) -> Obj:
        """Store a LeaderWorkerSet (defaults as the API server's) and start every group's pods."""
        lws = thaw(obj)
        meta = lws["metadata"]
        meta.setdefault("uid", self._uid())
        meta.setdefault("creationTimestamp", self.stamp())
        meta.setdefault("generation", 1)
        lws["spec"]["leaderWorkerTemplate"].setdefault("restartPolicy", RECREATE)
        lws["spec"].setdefault("replicas", 1)
        lws["status"] = {"replicas": 0, "readyReplicas": 0}
        self.store.put("leaderworkersets", lws)
        for g in range(int(lws["spec"]["replicas"])):
            self._lws_loss[f"{meta['namespace']}/{meta['name']}/{g}"] = WorkloadLoss(gpus=group_gpus(lws))
            self._make_group(lws, g)
        self._refresh_lws_status(meta["namespace"], meta["name"])
        return self.store.get("leaderworkersets", meta["namespace"], meta["name"]) or lws

    def delete_lws(self, ns: str, name: str) -> None:
        """Its pods go with it (the garbage collector's foreground deletion, at once)."""
        key = ("leaderworkersets", f"{ns}/{name}")
        self._reconciling.add(key)
        try:
            for pod in self.lws_pods(ns, name):
                if self.store.get("pods", ns, pod["metadata"]["name"]) is not None:
                    self.delete_pod(ns, pod["metadata"]["name"], grace=0, reason="LeaderWorkerSetDeleted")
        finally:
            self._reconciling.discard(key)
        for k in [k for k in self._lws_loss if k.startswith(f"{ns}/{name}/")]:
            del self._lws_loss[k]
        for m in [m for m in self._lws_members if m[:2] == (ns, name)]:
            del self._lws_members[m]

    def lws_pods(self, ns: str, name: str, group: int | None = None) -> list[Obj]:
        """The pods of a LeaderWorkerSet (or of one group of it) now, terminating ones included."""
        out = []
        for p in self.store.items("pods", ns):
            labels = p["metadata"].get("labels") or {}
            if labels.get(LWS_NAME) == name and (group is None or labels.get(GROUP_INDEX) == str(group)):
                out.append(p)
        return out

    def _make_group(self, lws: Obj, group: int) -> None:
        """The group's missing pods, made and placed (Pending where no node has room)."""
        ns, name = lws["metadata"]["namespace"], lws["metadata"]["name"]
        leader, worker, size = _templates(lws)
        have = {p["metadata"]["name"] for p in self.lws_pods(ns, name, group) if not is_terminating(p)}
        for w in range(size):
            pod_name = f"{name}-{group}" if w == 0 else f"{name}-{group}-{w}"
            if pod_name in have or self.store.get("pods", ns, pod_name) is not None:
                continue  # a pod of the name still going: the next reconcile makes it
            labels = {LWS_NAME: name, GROUP_INDEX: str(group), WORKER_INDEX: str(w)}
            template = leader if w == 0 else worker
            pod = self._new_pod("LeaderWorkerSet", lws, template, pod_name, labels, API_VERSION)
            pod["metadata"].pop("generateName", None)
            placed = self._place(pod)
            self._lws_members.setdefault((ns, name, group), set()).add(placed["metadata"]["uid"])

    def _lws_pod_gone(self, pod: Obj) -> None:
        """A pod of a group went: the whole group is made again (RecreateGroupOnPodRestart), or only
        that pod (restartPolicy None); the group idles until every pod of it runs."""
        ns = pod["metadata"]["namespace"]
        labels = pod["metadata"].get("labels") or {}
        name, group = str(labels.get(LWS_NAME) or ""), labels.get(GROUP_INDEX)
        lws = self.store.get("leaderworkersets", ns, name) if name else None
        if lws is None or group is None or not group.isdigit():
            return
        key = ("leaderworkersets", f"{ns}/{name}")
        if key in self._reconciling:
            return  # the controller's own stop of the group's other pods
        members = self._lws_members.setdefault((ns, name, int(group)), set())
        if pod["metadata"].get("uid") not in members:  # a pod of a group already recreated
            self._make_group(lws, int(group))
            self._refresh_lws_status(ns, name)
            return
        recreate = lws["spec"]["leaderWorkerTemplate"].get("restartPolicy", RECREATE) == RECREATE
        if recreate:
            members.clear()  # every pod of it goes: the group's next pods are its members
        else:
            members.discard(pod["metadata"]["uid"])  # the others stay members; its replacement joins
        self._reconciling.add(key)
        try:
            if recreate:
                for other in self.lws_pods(ns, name, int(group)):
                    if self.store.get(
                        "pods", ns, other["metadata"]["name"]
                    ) is not None and not is_terminating(other):
                        self.delete_pod(ns, other["metadata"]["name"], grace=0, reason="GroupRecreate")
                self.event(
                    lws,
                    "Warning",
                    "RecreateGroupOnPodRestart",
                    f"pod {pod['metadata']['name']} went: recreating group {group}",
                    "lws-controller",
                )
            loss = self._lws_loss.setdefault(f"{ns}/{name}/{group}", WorkloadLoss(gpus=group_gpus(lws)))
            loss.restarts += 1
            if loss.stalled_since is None:
                loss.stalled_since = self.now()
        finally:
            self._reconciling.discard(key)
        self._make_group(lws, int(group))
        self._refresh_lws_status(ns, name)

    def _refresh_lws_status(self, ns: str, name: str) -> None:
        """``status.replicas`` and ``readyReplicas`` (groups whose every pod runs); a group all running
        again closes its idle time."""
        lws = self.store.get("leaderworkersets", ns, name)
        if lws is None:
            return
        _, _, size = _templates(lws)
        groups = int(lws["spec"].get("replicas", 1))
        running: dict[str, int] = {}  # group index -> its pods running, from one pass over the pods
        for p in self.lws_pods(ns, name):
            if not is_terminating(p) and p["status"].get("phase") == "Running":
                g_key = str((p["metadata"].get("labels") or {}).get(GROUP_INDEX))
                running[g_key] = running.get(g_key, 0) + 1
        ready = 0
        for g in range(groups):
            if running.get(str(g), 0) < size:
                continue
            ready += 1
            loss = self._lws_loss.get(f"{ns}/{name}/{g}")
            if loss is not None and loss.stalled_since is not None:
                loss.idle_gpu_s += max(0.0, (self.now() - loss.stalled_since).total_seconds()) * loss.gpus
                loss.stalled_since = None
        status = {"replicas": groups, "readyReplicas": ready}
        if status != {k: lws["status"].get(k) for k in status}:
            new = thaw(lws)
            new["status"] = {**new["status"], **status}
            self.store.put("leaderworkersets", new)

    def lws_losses(self) -> list[dict[str, Any]]:
        """Per group: its GPUs, recreates, and the GPU-minutes it idled (a stall still open counted to
        now), in name order."""
        now = self.now()
        out = []
        for key, loss in sorted(self._lws_loss.items()):
            ns, name, group = key.split("/", 2)
            lws = self.store.get("leaderworkersets", ns, name)
            open_s = (now - loss.stalled_since).total_seconds() if loss.stalled_since else 0.0
            idle = (loss.idle_gpu_s + max(0.0, open_s) * loss.gpus) / 60
            out.append(
                {
                    "kind": "LeaderWorkerSet",
                    "namespace": ns,
                    "name": f"{name}/{group}",
                    "customer": ((lws or {}).get("metadata", {}).get("labels") or {}).get(CUSTOMER_LABEL, ""),
                    "gpus": loss.gpus,
                    "restarts": loss.restarts,
                    "failed": False,
                    "running": loss.stalled_since is None and lws is not None,
                    "lost_work_gpu_minutes": 0.0,
                    "idle_gpu_minutes": round(idle, 3),
                    "slow_gpu_minutes": 0.0,
                    "gpu_minutes_lost": round(idle, 3),
                }
            )
        return out
