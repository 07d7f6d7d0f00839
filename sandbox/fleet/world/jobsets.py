"""Multi-node workloads as GPU clouds run them: JobSets (``jobset.x-k8s.io/v1alpha2``) and their Jobs.

A JobSet's ``replicatedJobs`` each make ``replicas`` Jobs (``batch/v1``), each Job ``parallelism`` pods;
the pods carry JobSet's labels (``jobset.sigs.k8s.io/jobset-name``, ``replicatedjob-name``,
``job-index``, ``restart-attempt``) and are owned by their Job, the Job by the JobSet, as the JobSet
controller makes them (kubernetes-sigs/jobset, api/jobset/v1alpha2). The pods of one JobSet train one
model together: when one of them goes (evicted, deleted, its node drained), the JobSet restarts as a
whole, as JobSet's default failure policy does: every other pod is stopped, the Jobs are made again
with the next ``restart-attempt``, and ``status.restarts`` counts it; past
``spec.failurePolicy.maxRestarts`` the JobSet fails and its pods are not made again.

The training a restart loses is what ran since the last checkpoint: a JobSet states its cadence in the
annotation ``checkpoint.supply-agent.dev/interval`` (seconds), and the simulated job stamps the time of
its last checkpoint in ``checkpoint.supply-agent.dev/last`` as the fleet's clock passes each one (a
restart begins again from the last checkpoint).

What each JobSet lost is the fleet's truth (:meth:`JobSetsMixin.workload_losses`, in ``/sandbox/v1/truth``
as ``workloads``): at each restart, the GPU time since its last checkpoint (or since it began, when it
has not checkpointed since); and from a restart until every pod runs again (pods Pending where no node
has room: the scheduler's stall), or for good once it fails, every GPU of it idle. Training begins again,
and its checkpoint clock with it, when every pod runs. While it runs, the ranks of a synchronous job wait
for the slowest: a GPU of one of its nodes slowed down (a thermal slowdown lowers its SM clock) slows
every GPU of the job to that pace, and the rest of their time is lost (``slow``; the part of it since the
checkpoint is not counted twice when a restart throws that stretch away). Checkpoints stay on the clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sandbox.fleet.clock import ts
from sandbox.fleet.store import Obj, thaw
from sandbox.fleet.world.spec import (
    CUSTOMER_LABEL,
    GPU,
    GPU_INDICES_ANNOTATION,
    POOL_LABEL,
    WorkloadLoss,
    is_terminating,
)
from sandbox.fleet.world.state import FleetState

API_VERSION = "jobset.x-k8s.io/v1alpha2"
JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX = "jobset.sigs.k8s.io/job-index"
RESTART_ATTEMPT = "jobset.sigs.k8s.io/restart-attempt"
CHECKPOINT_EVERY = "checkpoint.supply-agent.dev/interval"
LAST_CHECKPOINT = "checkpoint.supply-agent.dev/last"
RESTARTED_AT = "checkpoint.supply-agent.dev/started"


def template_gpus(template: dict[str, Any]) -> int:
    """The GPUs one pod of a pod template asks for (its containers' limits)."""
    return sum(
        int(((c.get("resources") or {}).get("limits") or {}).get(GPU, 0))
        for c in (template.get("spec") or {}).get("containers") or []
    )


def jobset_gpus(js: Obj) -> int:
    """Every GPU a JobSet's pods ask for, at full strength."""
    return sum(
        int(rj.get("replicas", 1))
        * int(rj["template"]["spec"].get("parallelism", 1))
        * template_gpus(rj["template"]["spec"]["template"])
        for rj in js["spec"]["replicatedJobs"]
    )


def gpu_pod_template(
    labels: dict[str, str], container: str, image: str, pool: str, gpus: int, restart: str
) -> dict[str, Any]:
    """A tenant's GPU pod template, as the fleet's workloads make them: ``gpus`` GPUs (and 8 CPUs and
    64 GiB a GPU) in ``pool``, tolerating the GPU taint."""
    return {
        "metadata": {"labels": labels},
        "spec": {
            "containers": [
                {
                    "name": container,
                    "image": image,
                    "resources": {
                        "requests": {"cpu": str(8 * gpus), "memory": f"{64 * gpus}Gi", GPU: str(gpus)},
                        "limits": {GPU: str(gpus)},
                    },
                }
            ],
            "nodeSelector": {POOL_LABEL: pool},
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 30,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


def jobset_object(
    ns: str,
    name: str,
    customer: str,
    pool: str,
    nodes: int,
    gpus_per_node: int,
    checkpoint_s: int,
    max_restarts: int = 3,
) -> dict[str, Any]:
    """A training JobSet of ``nodes`` pods, one per node, each taking ``gpus_per_node`` GPUs."""
    labels = {"app": name, CUSTOMER_LABEL: customer}
    pod_template = gpu_pod_template(
        labels, "trainer", f"registry.{customer}.example/pretrain:v1", pool, gpus_per_node, "Never"
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "JobSet",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": {CHECKPOINT_EVERY: str(checkpoint_s)},
        },
        "spec": {
            "replicatedJobs": [
                {
                    "name": "workers",
                    "replicas": nodes,
                    "template": {
                        "spec": {
                            "parallelism": 1,
                            "completions": 1,
                            "backoffLimit": 0,
                            "template": pod_template,
                        }
                    },
                }
            ],
            "failurePolicy": {"maxRestarts": max_restarts},
        },
    }


class JobSetsMixin(FleetState):
    """The JobSet controller, the Job controller (for JobSets' Jobs) and the jobs' checkpoints."""

    def create_jobset(self, obj: dict[str, Any]) -> Obj:
        """Store a JobSet (defaults filled as the API server's would) and start its Jobs and pods."""
        js = thaw(obj)
        meta = js["metadata"]
        meta.setdefault("uid", self._uid())
        meta.setdefault("creationTimestamp", self.stamp())
        meta.setdefault("generation", 1)
        meta.setdefault("annotations", {})
        meta["annotations"].setdefault(RESTARTED_AT, self.stamp())
        js.setdefault("status", {})
        js["status"].setdefault("restarts", 0)
        self.store.put("jobsets", js)
        self._losses()[f"{meta['namespace']}/{meta['name']}"] = WorkloadLoss(
            gpus=jobset_gpus(js), paced_at=self.now()
        )
        self.reconcile_jobset(meta["namespace"], meta["name"])
        return self.store.get("jobsets", meta["namespace"], meta["name"]) or js

    def delete_jobset(self, ns: str, name: str) -> None:
        """Its Jobs and pods go with it (the garbage collector's foreground deletion, at once)."""
        js = self.store.get("jobsets", ns, name)
        if js is None:
            return
        key = ("jobsets", f"{ns}/{name}")
        self._reconciling.add(key)
        try:
            for pod in self.jobset_pods(ns, name):
                if self.store.get("pods", ns, pod["metadata"]["name"]) is not None:
                    self.delete_pod(ns, pod["metadata"]["name"], grace=0, reason="JobSetDeleted")
            for job in self._jobs_of(js):
                self.store.delete("jobs", ns, job["metadata"]["name"])
        finally:
            self._reconciling.discard(key)

    def _losses(self) -> dict[str, WorkloadLoss]:
        return self._workload_loss

    def workload_losses(self) -> list[dict[str, Any]]:
        """Per JobSet: its GPUs, restarts, and the GPU-minutes it lost (work since a checkpoint, idle GPUs,
        a stall still open counted to now), in name order."""
        now = self.now()
        out = []
        for key, loss in sorted(self._losses().items()):
            ns, name = key.split("/", 1)
            js = self.store.get("jobsets", ns, name)
            open_s = (now - loss.stalled_since).total_seconds() if loss.stalled_since else 0.0
            work = loss.lost_work_gpu_s / 60
            idle = (loss.idle_gpu_s + max(0.0, open_s) * loss.gpus) / 60
            slow = (loss.slow_gpu_s + self._slow_open(loss, now)) / 60
            out.append(
                {
                    "kind": "JobSet",
                    "namespace": ns,
                    "name": name,
                    "customer": ((js or {}).get("metadata", {}).get("labels") or {}).get(CUSTOMER_LABEL, ""),
                    "gpus": loss.gpus,
                    "restarts": loss.restarts,
                    "failed": loss.failed,
                    "running": loss.stalled_since is None and js is not None,
                    "lost_work_gpu_minutes": round(work, 3),
                    "idle_gpu_minutes": round(idle, 3),
                    "slow_gpu_minutes": round(slow, 3),
                    "gpu_minutes_lost": round(work + idle + slow, 3),
                }
            )
        return out

    def _account_restart(self, js: Obj, failed: bool) -> None:
        """A restart (or the failure) of a JobSet: the work since its checkpoint is lost, and its GPUs
        idle from now until it runs again."""
        meta = js["metadata"]
        loss = self._losses().setdefault(
            f"{meta['namespace']}/{meta['name']}", WorkloadLoss(gpus=jobset_gpus(js))
        )
        now = self.now()
        loss.restarts += 0 if failed else 1
        loss.failed = loss.failed or failed
        if loss.stalled_since is None:  # it was training: what it did since its checkpoint is gone
            self._close_pace(loss, now)
            ann = meta.get("annotations") or {}
            marks = [_parse(v) for v in (ann.get(RESTARTED_AT), ann.get(LAST_CHECKPOINT)) if v]
            if marks:
                since = max(0.0, (now - max(marks)).total_seconds()) * loss.gpus
                # The slowed part of that stretch is counted in ``slow`` already.
                loss.lost_work_gpu_s += max(0.0, since - loss.slow_since_checkpoint_gpu_s)
            loss.slow_since_checkpoint_gpu_s = 0.0
            loss.pace, loss.paced_at = 1.0, None
            loss.stalled_since = now

    def _account_running(self, js: Obj) -> bool:
        """Every pod of a stalled JobSet runs again: its idle time closes, training (and the checkpoint
        clock) begins now. Whether it was stalled."""
        meta = js["metadata"]
        loss = self._losses().get(f"{meta['namespace']}/{meta['name']}")
        if loss is None or loss.stalled_since is None or loss.failed:
            return False
        loss.idle_gpu_s += max(0.0, (self.now() - loss.stalled_since).total_seconds()) * loss.gpus
        loss.stalled_since = None
        loss.paced_at = self.now()
        return True

    @staticmethod
    def _slow_open(loss: WorkloadLoss, now: datetime) -> float:
        """GPU time lost to the pace since it was last set (running jobs only)."""
        if loss.paced_at is None or loss.stalled_since is not None or loss.failed:
            return 0.0
        return max(0.0, (now - loss.paced_at).total_seconds()) * loss.gpus * (1.0 - loss.pace)

    def _close_pace(self, loss: WorkloadLoss, at: datetime) -> None:
        """Count the pace's loss up to ``at`` (a checkpoint within the last clock step, or now)."""
        if loss.paced_at is not None and at < loss.paced_at:
            return
        lost = self._slow_open(loss, at)
        loss.slow_gpu_s += lost
        loss.slow_since_checkpoint_gpu_s += lost
        loss.paced_at = at

    def _pace_jobsets(self, now: datetime) -> None:
        """Each running JobSet's pace from now on: its slowest GPU's (the simulated NVML of the nodes its
        pods run on; a node whose NVML nothing touched runs at full pace). O(the slowed nodes' pods):
        a tick with no GPU slowed reads no pod."""
        slowed = {n: sim for n, (sim, _) in self._agents.items() if sim.speed() < 1.0}
        paces: dict[str, float] = {}
        for node, sim in slowed.items():
            for p in self.store.pods_on_node(node):
                name = (p["metadata"].get("labels") or {}).get(JOBSET_NAME)
                if name and not is_terminating(p) and p["status"].get("phase") == "Running":
                    # The pace of the GPUs the pod holds (the device plugin's assignment), not the node's.
                    held = (p["metadata"].get("annotations") or {}).get(GPU_INDICES_ANNOTATION, "")
                    gpus = [int(i) for i in held.split(",") if i.strip().isdigit()]
                    pace = min((sim.gpu_speed(i) for i in gpus), default=sim.speed())
                    key = f"{p['metadata']['namespace']}/{name}"
                    paces[key] = min(paces.get(key, 1.0), pace)
        for key, loss in self._losses().items():
            if loss.stalled_since is not None or loss.failed:
                continue
            pace = paces.get(key, 1.0)
            if pace != loss.pace:
                self._close_pace(loss, now)
                loss.pace = pace

    def _jobs_of(self, js: Obj) -> list[Obj]:
        uid = js["metadata"]["uid"]
        return [
            j
            for j in self.store.items("jobs", js["metadata"]["namespace"])
            if any(r.get("uid") == uid for r in j["metadata"].get("ownerReferences") or [])
        ]

    def jobset_pods(self, ns: str, name: str) -> list[Obj]:
        """The pods of a JobSet now (terminating ones included)."""
        return [
            p
            for p in self.store.items("pods", ns)
            if (p["metadata"].get("labels") or {}).get(JOBSET_NAME) == name
        ]

    def reconcile_jobset(self, ns: str, name: str) -> None:
        key = ("jobsets", f"{ns}/{name}")
        if key in self._reconciling:
            return
        self._reconciling.add(key)
        try:
            self._reconcile_jobset(ns, name)
        finally:
            self._reconciling.discard(key)

    def _reconcile_jobset(self, ns: str, name: str) -> None:
        js = self.store.get("jobsets", ns, name)
        if js is None or _failed(js):
            return
        attempt = str(js["status"].get("restarts", 0))
        have = {j["metadata"]["name"]: j for j in self._jobs_of(js)}
        for rj in js["spec"]["replicatedJobs"]:
            for index in range(int(rj.get("replicas", 1))):
                job_name = f"{name}-{rj['name']}-{index}"
                labels = {
                    JOBSET_NAME: name,
                    REPLICATED_JOB: rj["name"],
                    JOB_INDEX: str(index),
                    RESTART_ATTEMPT: attempt,
                }
                job = have.get(job_name)
                if job is None:
                    job = self.store.put("jobs", self._job_object(js, rj, job_name, labels))
                pods = [p for p in self._owned_pods(ns, job["metadata"]["uid"]) if not is_terminating(p)]
                template = rj["template"]["spec"]["template"]
                for _ in range(int(rj["template"]["spec"].get("parallelism", 1)) - len(pods)):
                    pod = self._new_pod(
                        "Job", job, template, f"{job_name}-{self._suffix()}", labels, "batch/v1"
                    )
                    self._place(pod)
        self._refresh_jobset_status(ns, name)

    def _job_object(self, js: Obj, rj: dict[str, Any], name: str, labels: dict[str, str]) -> dict[str, Any]:
        meta = js["metadata"]
        spec = thaw(rj["template"]["spec"])
        spec["template"]["metadata"] = {
            **spec["template"].get("metadata", {}),
            "labels": {**(spec["template"].get("metadata", {}).get("labels") or {}), **labels},
        }
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "uid": self._uid(),
                "creationTimestamp": self.stamp(),
                "labels": {**(meta.get("labels") or {}), **labels},
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": "JobSet",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": spec,
            "status": {"active": 0},
        }

    def _refresh_jobset_status(self, ns: str, name: str) -> None:
        js = self.store.get("jobsets", ns, name)
        if js is None:
            return
        pods = [p for p in self.jobset_pods(ns, name) if not is_terminating(p)]
        running = sum(1 for p in pods if p["status"].get("phase") == "Running")
        for job in self._jobs_of(js):
            active = sum(1 for p in self._owned_pods(ns, job["metadata"]["uid"]) if not is_terminating(p))
            if job["status"].get("active") != active:
                new = thaw(job)
                new["status"]["active"] = active
                self.store.put("jobs", new)
        wanted = sum(int(rj.get("replicas", 1)) for rj in js["spec"]["replicatedJobs"])
        status = thaw(js["status"])
        status["replicatedJobsStatus"] = [
            {"name": rj["name"], "ready": running, "active": len(pods), "succeeded": 0, "failed": 0}
            for rj in js["spec"]["replicatedJobs"]
        ]
        if not _failed(js):
            status["conditions"] = [
                {
                    "type": "StartupPolicyCompleted" if running == wanted else "Progressing",
                    "status": "True",
                    "reason": "AllPodsRunning" if running == wanted else "WaitingForPods",
                }
            ]
        began = running == wanted and self._account_running(js)
        if status != js["status"] or began:
            new = thaw(js)
            new["status"] = status
            if began:
                new["metadata"]["annotations"][RESTARTED_AT] = self.stamp()  # resumed from its checkpoint
            self.store.put("jobsets", new)

    def _jobset_pod_gone(self, pod: Obj) -> None:
        """A pod of a JobSet went (evicted, deleted, its node drained): the whole JobSet restarts from its
        last checkpoint, or fails past ``maxRestarts``."""
        ns = pod["metadata"]["namespace"]
        name = str((pod["metadata"].get("labels") or {}).get(JOBSET_NAME) or "")
        js = self.store.get("jobsets", ns, name) if name else None
        if js is None or _failed(js):
            return
        key = ("jobsets", f"{ns}/{name}")
        if key in self._reconciling:
            return  # the controller's own stop of the other pods
        if (pod["metadata"].get("labels") or {}).get(RESTART_ATTEMPT) != str(js["status"].get("restarts", 0)):
            return  # a pod of an earlier attempt, already replaced
        self._reconciling.add(key)
        try:
            restarts = int(js["status"].get("restarts", 0))
            limit = int((js["spec"].get("failurePolicy") or {}).get("maxRestarts", 0))
            for other in self.jobset_pods(ns, name):
                if self.store.get("pods", ns, other["metadata"]["name"]) is not None and not is_terminating(
                    other
                ):
                    self.delete_pod(ns, other["metadata"]["name"], grace=0, reason="JobSetRestart")
            for job in self._jobs_of(js):
                self.store.delete("jobs", ns, job["metadata"]["name"])
            new = thaw(self.store.get("jobsets", ns, name) or js)
            gone = pod["metadata"]["name"]
            self._account_restart(new, failed=restarts >= limit)
            if restarts >= limit:
                new["status"]["conditions"] = [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "ReachedMaxRestarts",
                        "message": f"pod {gone} failed",
                    }
                ]
                self.store.put("jobsets", new)
                self.event(
                    new,
                    "Warning",
                    "ReachedMaxRestarts",
                    f"jobset failed: pod {gone} went",
                    "jobset-controller",
                )
                return
            new["status"]["restarts"] = restarts + 1
            new["metadata"]["annotations"][RESTARTED_AT] = self.stamp()
            self.store.put("jobsets", new)
            self.event(
                new,
                "Warning",
                "Restarting",
                f"pod {gone} went: restarting all {len(self.jobset_pods(ns, name)) or 'its'} pods "
                f"(attempt {restarts + 1} of {limit}) from the last checkpoint",
                "jobset-controller",
            )
        finally:
            self._reconciling.discard(key)
        self.reconcile_jobset(ns, name)

    def _checkpoint_jobsets(self, now: datetime) -> None:
        """Each running JobSet stamps its last checkpoint as the clock passes one (from its last start)."""
        for js in list(self.store.items("jobsets")):
            ann = js["metadata"].get("annotations") or {}
            every = int(ann.get(CHECKPOINT_EVERY, "0") or 0)
            started = ann.get(RESTARTED_AT)
            if every <= 0 or not started or _failed(js):
                continue
            loss = self._workload_loss.get(f"{js['metadata']['namespace']}/{js['metadata']['name']}")
            if loss is not None and loss.stalled_since is not None:
                continue  # not training: no checkpoint to take
            n = int((now - _parse(started)).total_seconds() // every)
            if n <= 0:
                continue
            last = ts(_parse(started) + timedelta(seconds=n * every))
            if ann.get(LAST_CHECKPOINT) != last:
                if loss is not None:  # what was slowed before it is no longer at risk
                    self._close_pace(loss, _parse(last))
                    loss.slow_since_checkpoint_gpu_s = 0.0
                new = thaw(js)
                new["metadata"]["annotations"][LAST_CHECKPOINT] = last
                self.store.put("jobsets", new)


def _failed(js: Obj) -> bool:
    return any(
        c.get("type") == "Failed" and c.get("status") == "True" for c in js["status"].get("conditions") or []
    )


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
