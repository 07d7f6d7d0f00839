"""The sandbox fleet runs multi-node workloads: JobSets (jobset.x-k8s.io/v1alpha2) whose Jobs and pods
span several nodes, owned Pod -> Job -> JobSet and labelled as the JobSet controller labels them; one pod
going restarts the whole JobSet from its last checkpoint (``status.restarts``), past ``maxRestarts`` it
fails; each stamps its last checkpoint as the clock passes one. Through the official client and kubectl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.world import FleetSpec
from sandbox.fleet.world.jobsets import (
    CHECKPOINT_EVERY,
    JOB_INDEX,
    JOBSET_NAME,
    LAST_CHECKPOINT,
    RESTART_ATTEMPT,
    jobset_object,
)
from tests.unit.sandbox.test_kubectl import kubectl, ok

GROUP, VERSION = "jobset.x-k8s.io", "v1alpha2"


@pytest.fixture
def fleet_spec() -> FleetSpec:
    return FleetSpec(nodes=32, gpus_per_node=8, pools=2, seed=3, jobsets=2, jobset_nodes=4)


def _jobsets(api: client.ApiClient) -> list[dict[str, Any]]:
    got = client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, "jobsets")
    return list(got["items"])


def _pods(core: client.CoreV1Api, js: dict[str, Any]) -> list[Any]:
    ns, name = js["metadata"]["namespace"], js["metadata"]["name"]
    pods = core.list_namespaced_pod(ns, label_selector=f"{JOBSET_NAME}={name}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def test_a_jobset_spans_nodes_and_its_pods_are_owned_through_their_jobs(
    api_client: client.ApiClient, core: client.CoreV1Api, kubeconfig: Path
) -> None:
    sets = _jobsets(api_client)
    assert len(sets) == 2
    batch = client.BatchV1Api(api_client)
    for js in sets:
        pods = _pods(core, js)
        assert len(pods) == 4 and {p.status.phase for p in pods} == {"Running"}
        assert len({p.spec.node_name for p in pods}) == 4  # one pod per node, all its GPUs
        assert sorted(p.metadata.labels[JOB_INDEX] for p in pods) == ["0", "1", "2", "3"]
        assert {p.metadata.labels[RESTART_ATTEMPT] for p in pods} == {"0"}
        for pod in pods:
            [ref] = pod.metadata.owner_references
            assert ref.kind == "Job" and ref.api_version == "batch/v1"
            job = batch.read_namespaced_job(ref.name, pod.metadata.namespace)
            [up] = job.metadata.owner_references
            assert (up.kind, up.api_version, up.name) == (
                "JobSet",
                f"{GROUP}/{VERSION}",
                js["metadata"]["name"],
            )
            assert up.uid == js["metadata"]["uid"]
        assert int(js["metadata"]["annotations"][CHECKPOINT_EVERY]) in (600, 1800, 3600)
    out = ok(kubectl(kubeconfig, "get", "jobsets", "-A"))
    assert all(js["metadata"]["name"] in out for js in sets)
    assert "workers-3" in ok(kubectl(kubeconfig, "get", "jobs", "-A"))


def test_one_pod_evicted_restarts_the_whole_jobset_and_past_max_restarts_it_fails(
    api_client: client.ApiClient, core: client.CoreV1Api, admin: AdminClient
) -> None:
    js = _jobsets(api_client)[0]
    ns, name = js["metadata"]["namespace"], js["metadata"]["name"]
    before = _pods(core, js)
    victim = before[0]
    core.create_namespaced_pod_eviction(
        victim.metadata.name,
        ns,
        client.V1Eviction(metadata=client.V1ObjectMeta(name=victim.metadata.name, namespace=ns)),
    )
    after = _pods(core, js)
    assert len(after) == 4
    assert not {p.metadata.name for p in after} & {p.metadata.name for p in before}  # every pod new
    assert {p.metadata.labels[RESTART_ATTEMPT] for p in after} == {"1"}
    got = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        GROUP, VERSION, ns, "jobsets", name
    )
    assert got["status"]["restarts"] == 1
    events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    assert any(e.reason == "Restarting" and victim.metadata.name in e.message for e in events)
    # The other JobSet did not notice.
    other = _jobsets(api_client)[1]
    assert {p.metadata.labels[RESTART_ATTEMPT] for p in _pods(core, other)} == {"0"}
    for _ in range(2):  # maxRestarts is 3: three losses restart it, the fourth fails it for good
        core.delete_namespaced_pod(_pods(core, js)[0].metadata.name, ns, grace_period_seconds=0)
    got = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        GROUP, VERSION, ns, "jobsets", name
    )
    assert got["status"]["restarts"] == 3 and not any(
        c["type"] == "Failed" for c in got["status"]["conditions"]
    )
    core.delete_namespaced_pod(_pods(core, js)[0].metadata.name, ns, grace_period_seconds=0)
    got = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        GROUP, VERSION, ns, "jobsets", name
    )
    assert [c["reason"] for c in got["status"]["conditions"] if c["type"] == "Failed"] == [
        "ReachedMaxRestarts"
    ]
    assert _pods(core, js) == []


def test_a_jobset_stamps_its_checkpoints_as_time_passes(
    api_client: client.ApiClient, admin: AdminClient
) -> None:
    js = _jobsets(api_client)[0]
    every = int(js["metadata"]["annotations"][CHECKPOINT_EVERY])
    assert LAST_CHECKPOINT not in js["metadata"]["annotations"]
    admin.advance(every + 5)
    ns, name = js["metadata"]["namespace"], js["metadata"]["name"]
    got = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        GROUP, VERSION, ns, "jobsets", name
    )
    assert got["metadata"]["annotations"][LAST_CHECKPOINT] > got["metadata"]["creationTimestamp"]


def test_a_jobset_created_through_the_api_runs_and_a_bad_one_is_refused(
    api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    api = client.CustomObjectsApi(api_client)
    ns = _jobsets(api_client)[0]["metadata"]["namespace"]
    customer = ns.removeprefix("tenant-")
    body = jobset_object(ns, "llm-pretrain", customer, "west-a100", 2, 8, 1800)
    created = api.create_namespaced_custom_object(GROUP, VERSION, ns, "jobsets", body)
    assert created["metadata"]["uid"] and created["status"]["restarts"] == 0
    pods = _pods(core, created)
    assert len(pods) == 2 and {p.status.phase for p in pods} <= {"Running", "Pending"}
    bad = jobset_object(ns, "broken", customer, "west-a100", 2, 8, 1800)
    bad["spec"]["replicatedJobs"][0]["replicas"] = 0
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, "jobsets", bad)
    assert err.value.status == 422 and "replicas" in str(err.value.body)
    api.delete_namespaced_custom_object(GROUP, VERSION, ns, "jobsets", "llm-pretrain")
    assert _pods(core, created) == []


# -- what a JobSet loses: the fleet's truth the evals score -----------------------------------------------


def _gang_fleet(**workload: Any) -> Any:
    from sandbox.fleet.clock import SimClock
    from sandbox.fleet.world import Fleet
    from sandbox.fleet.world.spec import JobSetSpec

    spec = FleetSpec(
        nodes=12,
        pools=1,
        seed=5,
        fill=0.0,
        workloads=[JobSetSpec(**{"name": "llm", "nodes": 4, "checkpoint_every_s": 3600, **workload})],
    )
    fleet = Fleet(spec, SimClock("manual"))
    fleet.generate()
    return fleet


def _loss(fleet: Any) -> dict[str, Any]:
    [w] = fleet.truth()["workloads"]
    return dict(w)


def _pod_names(fleet: Any) -> list[tuple[str, str]]:
    return sorted(
        (p["metadata"]["name"], p["spec"].get("nodeName") or "")
        for p in fleet.jobset_pods(_loss(fleet)["namespace"], "llm")
        if p["metadata"].get("deletionTimestamp") is None
    )


def _cordon(fleet: Any, name: str, on: bool = True) -> None:
    from sandbox.fleet.store import thaw

    old = fleet.node(name)
    new = thaw(old)
    new["spec"]["unschedulable"] = on
    fleet.store.put("nodes", new)
    fleet.node_changed(old, new)


def test_a_restart_loses_the_work_since_the_checkpoint_and_a_stall_idles_every_gpu() -> None:
    fleet = _gang_fleet(since_checkpoint_s=1200)
    first = _loss(fleet)
    first_checkpoint = fleet.store.get("jobsets", first["namespace"], "llm")["metadata"]["annotations"][
        LAST_CHECKPOINT
    ]
    assert first | {"gpus": 32, "restarts": 0, "gpu_minutes_lost": 0.0, "running": True} == first
    fleet.advance(600)  # 30 min since the checkpoint now
    ns = first["namespace"]
    name, node = _pod_names(fleet)[0]
    # Nowhere for the pod to go: every node without one of the JobSet's pods is cordoned, and the
    # drained node itself.
    busy = {n for _, n in _pod_names(fleet)}
    for n in fleet.store.items("nodes"):
        if n["metadata"]["name"] not in busy - {node}:
            _cordon(fleet, n["metadata"]["name"])
    fleet.delete_pod(ns, name, grace=0, reason="Evicted")
    lost = _loss(fleet)
    assert lost["restarts"] == 1 and lost["lost_work_gpu_minutes"] == 30 * 32  # 30 min x 32 GPUs
    assert not lost["running"]
    fleet.advance(300)
    assert _loss(fleet)["idle_gpu_minutes"] == 5 * 32  # 5 min stalled, all 32 GPUs idle
    fleet.advance(3600)  # no checkpoint is taken while it does not run: the last is the one before
    js = fleet.store.get("jobsets", ns, "llm")
    assert js["metadata"]["annotations"][LAST_CHECKPOINT] == first_checkpoint
    # A node comes back: every pod runs, the stall closes, and training begins again now.
    spare = next(
        n["metadata"]["name"] for n in fleet.store.items("nodes") if n["metadata"]["name"] not in busy
    )
    _cordon(fleet, spare, on=False)
    done = _loss(fleet)
    assert done["running"] and done["idle_gpu_minutes"] == 65 * 32
    assert done["gpu_minutes_lost"] == 30 * 32 + 65 * 32
    assert {p["status"]["phase"] for p in fleet.jobset_pods(ns, "llm")} == {"Running"}
    js = fleet.store.get("jobsets", ns, "llm")
    assert js["metadata"]["annotations"]["checkpoint.supply-agent.dev/started"] == fleet.stamp()
    fleet.advance(3600)  # an hour of training: a checkpoint, and a restart now loses nothing of it
    name, _ = _pod_names(fleet)[0]
    fleet.delete_pod(ns, name, grace=0, reason="Evicted")
    assert _loss(fleet)["lost_work_gpu_minutes"] == 30 * 32  # nothing since that checkpoint


def test_a_gpu_error_that_kills_the_job_fails_its_pod_and_restarts_the_jobset() -> None:
    from sandbox.fleet.faults import FaultKind

    fleet = _gang_fleet(since_checkpoint_s=600, max_restarts=0)
    ns = _loss(fleet)["namespace"]
    _, node = _pod_names(fleet)[0]
    fleet.inject(FaultKind.XID, node=node, gpu=0, code=79)  # fallen off the bus
    lost = _loss(fleet)
    assert lost["failed"] and not lost["running"]  # maxRestarts 0: the JobSet fails
    assert lost["lost_work_gpu_minutes"] == 10 * 32
    js = fleet.store.get("jobsets", ns, "llm")
    assert js["status"]["conditions"][0]["reason"] == "ReachedMaxRestarts"
    assert not [p for p in fleet.jobset_pods(ns, "llm") if p["metadata"].get("deletionTimestamp") is None]
    fleet.advance(600)
    assert _loss(fleet)["idle_gpu_minutes"] == 10 * 32  # a failed job idles until a human resubmits


@pytest.mark.parametrize(
    ("workload", "error"),
    [({"pool": 3}, "has 1 pool(s), not pool 3"), ({"nodes": 13}, "has 12 free node(s), not 13")],
)
def test_a_workload_the_fleet_cannot_hold_is_an_error_naming_it(workload: dict[str, Any], error: str) -> None:
    with pytest.raises(
        ValueError, match=r"workloads: llm: .*" + error.replace("(", r"\(").replace(")", r"\)")
    ):
        _gang_fleet(**workload)


def test_a_slowed_gpu_slows_the_whole_job_and_a_restart_counts_nothing_twice() -> None:
    """A thermal slowdown holds one GPU at 60% of its SM clock: every rank of the 4-node job (32 GPUs)
    waits for it, so 40% of each GPU-minute is lost while it runs there. A restart throws away the time
    since the checkpoint, slowed or not, once; on healthy nodes the job runs at full pace again."""
    from sandbox.fleet.faults import FaultKind
    from sandbox.fleet.nvml_sim import MAX_SM_CLOCK_MHZ, THERMAL_SM_CLOCK_MHZ

    fleet = _gang_fleet(since_checkpoint_s=3000)  # the hourly checkpoint is 10 minutes away
    ns = _loss(fleet)["namespace"]
    _, node = _pod_names(fleet)[1]
    fleet.inject(FaultKind.THERMAL, node=node, gpu=2)
    pace = THERMAL_SM_CLOCK_MHZ / MAX_SM_CLOCK_MHZ
    report = fleet.agent(node)[1].report()
    gpu = next(g for g in report.gpus if g.index == 2)
    assert (gpu.sm_clock_mhz, gpu.max_sm_clock_mhz) == (THERMAL_SM_CLOCK_MHZ, MAX_SM_CLOCK_MHZ)
    fleet.advance(300)  # one jump: the pace set at the fault holds through it
    slow = _loss(fleet)["slow_gpu_minutes"]
    assert slow == pytest.approx(5 * 32 * (1 - pace), abs=0.01)
    fleet.advance(600)  # past the checkpoint (at 10 min): 15 minutes slowed in all
    assert _loss(fleet)["slow_gpu_minutes"] == pytest.approx(15 * 32 * (1 - pace), abs=0.01)
    fleet.advance(120)  # 7 minutes past the checkpoint, then the slow node is drained
    _cordon(fleet, node)
    name = next(n for n, at in _pod_names(fleet) if at == node)
    fleet.delete_pod(ns, name, grace=0, reason="Evicted")
    lost = _loss(fleet)
    # The 7 minutes since the checkpoint are thrown away whole (224 GPU-minutes), the slowed part of
    # them not counted again; the 10 slowed minutes before it stay lost.
    assert lost["lost_work_gpu_minutes"] + lost["slow_gpu_minutes"] == pytest.approx(
        10 * 32 * (1 - pace) + 7 * 32, abs=0.01
    )
    assert lost["running"] and node not in {at for _, at in _pod_names(fleet)}
    fleet.advance(600)
    assert _loss(fleet)["gpu_minutes_lost"] == pytest.approx(lost["gpu_minutes_lost"], abs=0.01)


def test_a_repaired_gpu_stops_slowing_its_job_at_once() -> None:
    """Thermal for a minute, then the fault is cleared: the job lost 40% of a minute of its 32 GPUs,
    not of the hour that follows (the pace is set again at the repair, not at the next tick)."""
    from sandbox.fleet.faults import FaultKind
    from sandbox.fleet.nvml_sim import MAX_SM_CLOCK_MHZ, THERMAL_SM_CLOCK_MHZ

    fleet = _gang_fleet(since_checkpoint_s=0)
    _, node = _pod_names(fleet)[0]
    fleet.inject(FaultKind.THERMAL, node=node, gpu=0)
    fleet.advance(60)
    fleet.clear(node)
    fleet.advance(3600)
    lag = 1 - THERMAL_SM_CLOCK_MHZ / MAX_SM_CLOCK_MHZ
    assert _loss(fleet)["slow_gpu_minutes"] == pytest.approx(32 * lag, abs=0.01)
