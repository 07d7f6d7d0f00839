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
