"""The sandbox fleet serves LeaderWorkerSets (leaderworkerset.x-k8s.io/v1) through the Kubernetes API:
each group's pods labelled as the LWS controller labels them, one pod going recreates its whole group
(RecreateGroupOnPodRestart) while the other groups serve on, and the group's idle time is the fleet's
truth. Through the official client and kubectl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sandbox.fleet.world import FleetSpec
from sandbox.fleet.world.lws import GROUP_INDEX, LWS_NAME, WORKER_INDEX, lws_object
from sandbox.fleet.world.spec import LwsSpec
from tests.unit.sandbox.test_kubectl import kubectl, ok

GROUP, VERSION, PLURAL = "leaderworkerset.x-k8s.io", "v1", "leaderworkersets"


@pytest.fixture
def fleet_spec() -> FleetSpec:
    return FleetSpec(
        nodes=24, pools=1, seed=3, fill=0.0, leaderworkersets=[LwsSpec(name="serve", groups=3, size=2)]
    )


def _groups(core: client.CoreV1Api, ns: str) -> dict[str, dict[str, str]]:
    """group index -> {pod name: uid} of the live pods."""
    out: dict[str, dict[str, str]] = {}
    for p in core.list_namespaced_pod(ns, label_selector=f"{LWS_NAME}=serve").items:
        if p.metadata.deletion_timestamp is None:
            out.setdefault(p.metadata.labels[GROUP_INDEX], {})[p.metadata.name] = p.metadata.uid
    return out


def test_groups_span_nodes_and_one_pod_going_recreates_its_group_alone(
    api_client: client.ApiClient, core: client.CoreV1Api, admin: Any, kubeconfig: Path
) -> None:
    [lws] = client.CustomObjectsApi(api_client).list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    ns = lws["metadata"]["namespace"]
    assert lws["status"] == {"replicas": 3, "readyReplicas": 3}
    before = _groups(core, ns)
    assert sorted(before) == ["0", "1", "2"]
    assert sorted(before["1"]) == ["serve-1", "serve-1-1"]  # the leader, then its worker
    pods = core.list_namespaced_pod(ns, label_selector=f"{LWS_NAME}=serve,{GROUP_INDEX}=1").items
    assert {p.metadata.labels[WORKER_INDEX] for p in pods} == {"0", "1"}
    assert len({p.spec.node_name for p in core.list_namespaced_pod(ns).items}) == 6  # a node per pod
    core.delete_namespaced_pod("serve-1-1", ns, grace_period_seconds=0)
    after = _groups(core, ns)
    assert set(after["1"]) == {"serve-1", "serve-1-1"}
    assert not set(after["1"].values()) & set(before["1"].values())  # the whole group, made again
    assert after["0"] == before["0"] and after["2"] == before["2"]  # the others serve on
    truth = {w["name"]: w for w in admin.truth()["workloads"] if w["kind"] == "LeaderWorkerSet"}
    assert truth["serve/1"]["restarts"] == 1 and truth["serve/1"]["running"]
    assert truth["serve/0"]["restarts"] == truth["serve/2"]["restarts"] == 0
    assert truth["serve/1"]["gpus"] == 16
    assert "serve" in ok(kubectl(kubeconfig, "get", "lws", "-A"))


def test_a_group_with_nowhere_to_go_idles_and_a_bad_lws_is_refused(
    api_client: client.ApiClient, core: client.CoreV1Api, admin: Any
) -> None:
    api = client.CustomObjectsApi(api_client)
    [lws] = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    ns = lws["metadata"]["namespace"]
    # A second LWS of 10 groups of 2 in a pool with 18 free nodes: the last group waits for room.
    big = lws_object(ns, "big", "acme", "east-h100", 10, 2, 8)
    api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, big)
    stored = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "big")
    assert stored["status"] == {"replicas": 10, "readyReplicas": 9}
    admin.advance(600)
    idle = {w["name"]: w for w in admin.truth()["workloads"]}
    assert idle["big/9"]["idle_gpu_minutes"] == pytest.approx(0.0)  # never ran: not a stall of its own
    api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "big")
    assert not core.list_namespaced_pod(ns, label_selector=f"{LWS_NAME}=big").items
    bad = lws_object(ns, "bad", "acme", "east-h100", 1, 2, 8)
    del bad["spec"]["leaderWorkerTemplate"]["workerTemplate"]
    with pytest.raises(ApiException) as info:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, bad)
    assert info.value.status == 422 and "workerTemplate: Required value" in str(info.value.body)
    for field, value, said in (
        ("workerTemplate", {}, "workerTemplate: Invalid value: a pod template with containers"),
        ("size", 10_000, "size: Invalid value: must be 1 to 64"),
    ):
        bad = lws_object(ns, "bad", "acme", "east-h100", 1, 2, 8)
        bad["spec"]["leaderWorkerTemplate"][field] = value
        with pytest.raises(ApiException) as info:
            api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, bad)
        assert info.value.status == 422 and said in str(info.value.body)
    with pytest.raises(ApiException) as info:  # nothing half-made was stored
        api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "bad")
    assert info.value.status == 404


def test_without_group_recreation_each_pod_going_is_replaced_alone_and_counted(
    api_client: client.ApiClient, core: client.CoreV1Api, admin: Any
) -> None:
    api = client.CustomObjectsApi(api_client)
    ns = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"][0]["metadata"]["namespace"]
    obj = lws_object(ns, "solo", "acme", "east-h100", 1, 3, 8)
    obj["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "None"
    api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj)
    leader = core.read_namespaced_pod("solo-0", ns).metadata.uid
    for n, pod in enumerate(("solo-0-1", "solo-0-2"), start=1):
        core.delete_namespaced_pod(pod, ns, grace_period_seconds=0)
        assert core.read_namespaced_pod("solo-0", ns).metadata.uid == leader  # the group stays
        [row] = [w for w in admin.truth()["workloads"] if w["name"] == "solo/0"]
        assert row["restarts"] == n  # each pod going counts, the second as the first


def test_a_drain_evicts_the_pods_it_listed_not_those_made_since_under_their_names(
    api_client: client.ApiClient, core: client.CoreV1Api, admin: Any, kubeconfig: Path
) -> None:
    """A group of two 4-GPU pods shares one node. The drain lists both; evicting the leader recreates
    the group elsewhere under the same names; the worker's eviction carries the listed pod's UID, so the
    new worker on a healthy node is left alone (409 from the API server) and the group restarts once."""
    from tools.kubernetes import KubeTools

    api = client.CustomObjectsApi(api_client)
    ns = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"][0]["metadata"]["namespace"]
    api.create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, lws_object(ns, "half", "acme", "east-h100", 1, 2, 4)
    )
    nodes = {core.read_namespaced_pod(p, ns).spec.node_name for p in ("half-0", "half-0-1")}
    assert len(nodes) == 1
    [node] = nodes
    result = KubeTools.from_kubeconfig(kubeconfig).drain_node(node, timeout_s=60, poll_s=0.05)
    assert not result.remaining, result
    [row] = [w for w in admin.truth()["workloads"] if w["name"] == "half/0"]
    assert row["restarts"] == 1 and row["running"]
    assert {core.read_namespaced_pod(p, ns).spec.node_name for p in ("half-0", "half-0-1")} != {node}
