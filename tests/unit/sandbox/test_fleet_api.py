"""The sandbox fleet through the official kubernetes client: Kubernetes semantics, not a dict."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import AGENT_NAMESPACE, GPU_INDICES_ANNOTATION


def _status(exc: ApiException) -> dict:
    return json.loads(exc.body)


def _raw(
    server: FleetServer,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    token: str | None = None,
) -> tuple[int, dict]:
    """A request below the client library, for bodies the client would refuse to send."""
    import urllib.error
    import urllib.request

    from sandbox.fleet.admin import AdminClient

    ctx = AdminClient(server.url, "", server.cert.ca_pem).ssl
    req = urllib.request.Request(
        f"{server.url}{path}",
        data=body,
        method=method,
        headers={
            "Authorization": f"Bearer {server.token if token is None else token}",
            "Content-Type": content_type,
        },
    )
    try:
        with urllib.request.urlopen(req, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _tenant_pod_on_node(core: client.CoreV1Api) -> client.V1Pod:
    pods = core.list_pod_for_all_namespaces(label_selector="supply-agent.io/customer").items
    return next(p for p in pods if p.spec.node_name)


def test_discovery_and_version(api_client: client.ApiClient) -> None:
    version = client.VersionApi(api_client).get_code()
    assert version.major == "1"
    groups = {g.name for g in client.ApisApi(api_client).get_api_versions().groups}
    assert {"apps", "policy"} <= groups
    core_resources = {r.name for r in client.CoreV1Api(api_client).get_api_resources().resources}
    assert {
        "nodes",
        "pods",
        "pods/eviction",
        "pods/log",
        "pods/proxy",
        "events",
        "namespaces",
    } <= core_resources


def test_nodes_carry_gpu_fleet_shape(core: client.CoreV1Api, fleet_server: FleetServer) -> None:
    nodes = core.list_node().items
    assert len(nodes) == 12
    pools = {n.metadata.labels["supply-agent.io/pool"] for n in nodes}
    assert len(pools) == 2
    for n in nodes:
        assert n.status.capacity["nvidia.com/gpu"] == "8"
        assert n.metadata.labels["nvidia.com/gpu.product"].startswith("NVIDIA-")
        assert {c.type for c in n.status.conditions} >= {
            "Ready",
            "GpuHealthy",
            "DiskPressure",
            "MemoryPressure",
        }
    # Every node runs exactly one node-agent pod; tenant pods never oversubscribe GPUs.
    for n in nodes:
        pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={n.metadata.name}").items
        assert sum(1 for p in pods if p.metadata.namespace == AGENT_NAMESPACE) == 1
        used = [
            i
            for p in pods
            for i in (p.metadata.annotations or {}).get(GPU_INDICES_ANNOTATION, "").split(",")
            if i
        ]
        assert len(used) == len(set(used)) <= 8


def test_label_and_field_selectors(core: client.CoreV1Api) -> None:
    pod = _tenant_pod_on_node(core)
    customer = pod.metadata.labels["supply-agent.io/customer"]
    by_label = core.list_pod_for_all_namespaces(label_selector=f"supply-agent.io/customer={customer}").items
    assert by_label and all(p.metadata.labels["supply-agent.io/customer"] == customer for p in by_label)
    not_label = core.list_pod_for_all_namespaces(label_selector=f"supply-agent.io/customer!={customer}").items
    assert all(p.metadata.labels.get("supply-agent.io/customer") != customer for p in not_label)
    set_based = core.list_pod_for_all_namespaces(
        label_selector=f"supply-agent.io/customer in ({customer},nobody)"
    ).items
    assert {p.metadata.name for p in set_based} == {p.metadata.name for p in by_label}
    by_name = core.list_namespaced_pod(
        pod.metadata.namespace, field_selector=f"metadata.name={pod.metadata.name}"
    ).items
    assert [p.metadata.name for p in by_name] == [pod.metadata.name]
    running = core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items
    assert running and all(p.status.phase == "Running" for p in running)
    with pytest.raises(ApiException) as err:
        core.list_pod_for_all_namespaces(field_selector="spec.bogus=1")
    assert err.value.status == 400 and "field label not supported" in _status(err.value)["message"]
    with pytest.raises(ApiException) as err:
        core.list_pod_for_all_namespaces(label_selector="a in (b")
    assert err.value.status == 400


def test_pagination_with_limit_and_continue(core: client.CoreV1Api) -> None:
    everything = [p.metadata.name for p in core.list_pod_for_all_namespaces().items]
    seen, token = [], None
    while True:
        page = core.list_pod_for_all_namespaces(limit=7, _continue=token)
        seen += [p.metadata.name for p in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert seen == everything


def test_watch_sees_cordon_and_resumes_from_resource_version(core: client.CoreV1Api) -> None:
    nodes = core.list_node()
    target = nodes.items[0].metadata.name
    rv = nodes.metadata.resource_version
    events: list[tuple[str, bool]] = []

    def consume() -> None:
        w = watch.Watch()
        for ev in w.stream(core.list_node, resource_version=rv, timeout_seconds=5):
            if ev["object"].metadata.name == target:
                events.append((ev["type"], bool(ev["object"].spec.unschedulable)))
                w.stop()

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.3)
    core.patch_node(target, {"spec": {"unschedulable": True}})
    t.join(10)
    assert events == [("MODIFIED", True)]
    # A watch from the old resourceVersion replays the change it missed.
    replay = watch.Watch()
    got = []
    for ev in replay.stream(core.list_node, resource_version=rv, timeout_seconds=2):
        got.append((ev["type"], ev["object"].metadata.name))
        replay.stop()
    assert got == [("MODIFIED", target)]


def test_watch_with_field_selector_reports_pod_leaving(core: client.CoreV1Api) -> None:
    pod = _tenant_pod_on_node(core)
    node = pod.spec.node_name
    pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
    seen: list[tuple[str, str]] = []

    def consume() -> None:
        w = watch.Watch()
        for ev in w.stream(
            core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
            resource_version=pods.metadata.resource_version,
            timeout_seconds=5,
        ):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.3)
    core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
    t.join(10)
    assert ("DELETED", pod.metadata.name) in seen


def test_merge_strategic_and_json_patch_on_nodes(core: client.CoreV1Api) -> None:
    name = core.list_node().items[1].metadata.name
    # strategic merge (the client's default for dicts)
    node = core.patch_node(
        name,
        {"metadata": {"labels": {"team": "infra"}}},
        _content_type="application/strategic-merge-patch+json",
    )
    assert node.metadata.labels["team"] == "infra"
    # JSON merge patch: null deletes
    core.patch_node(
        name, {"metadata": {"labels": {"team": None}}}, _content_type="application/merge-patch+json"
    )
    assert "team" not in core.read_node(name).metadata.labels
    # JSON patch (RFC 6902), with a failing test op → 422 and no change
    taint = {"key": "supply-agent.io/quarantine", "value": "xid-79", "effect": "NoSchedule"}
    core.patch_node(name, [{"op": "add", "path": "/spec/taints", "value": [taint]}])
    assert core.read_node(name).spec.taints[0].key == "supply-agent.io/quarantine"
    with pytest.raises(ApiException) as err:
        core.patch_node(name, [{"op": "test", "path": "/spec/unschedulable", "value": True}])
    assert err.value.status in (404, 400, 422)
    # A taint with a bad effect is invalid (422), not stored.
    with pytest.raises(ApiException) as err:
        core.patch_node(
            name, [{"op": "replace", "path": "/spec/taints", "value": [{"key": "x", "effect": "Sometimes"}]}]
        )
    assert err.value.status == 422
    assert core.read_node(name).spec.taints[0].effect == "NoSchedule"


def test_stale_resource_version_is_a_conflict(core: client.CoreV1Api) -> None:
    node = core.list_node().items[2]
    stale = node.metadata.resource_version
    core.patch_node(node.metadata.name, {"metadata": {"labels": {"x": "1"}}})
    node.metadata.resource_version = stale
    node.metadata.labels["x"] = "2"
    with pytest.raises(ApiException) as err:
        core.replace_node(node.metadata.name, node)
    assert err.value.status == 409
    body = _status(err.value)
    assert body["kind"] == "Status" and body["reason"] == "Conflict"
    with pytest.raises(ApiException) as err:
        core.patch_node(node.metadata.name, {"metadata": {"resourceVersion": stale, "labels": {"x": "3"}}})
    assert err.value.status == 409
    assert core.read_node(node.metadata.name).metadata.labels["x"] == "1"


def test_dry_run_changes_nothing_on_every_write(
    core: client.CoreV1Api, apps: client.AppsV1Api, fleet_server: FleetServer
) -> None:
    node = core.list_node().items[0].metadata.name
    rv_before = core.read_node(node).metadata.resource_version
    dry = core.patch_node(node, {"spec": {"unschedulable": True}}, dry_run="All")
    assert dry.spec.unschedulable is True
    assert not core.read_node(node).spec.unschedulable
    assert core.read_node(node).metadata.resource_version == rv_before

    pod = _tenant_pod_on_node(core)
    core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, dry_run="All")
    core.create_namespaced_pod_eviction(
        pod.metadata.name,
        pod.metadata.namespace,
        client.V1Eviction(
            metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=pod.metadata.namespace),
            delete_options=client.V1DeleteOptions(dry_run=["All"]),
        ),
    )
    assert (
        core.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace).metadata.uid == pod.metadata.uid
    )

    dep = apps.list_deployment_for_all_namespaces().items[0]
    apps.patch_namespaced_deployment_scale(
        dep.metadata.name, dep.metadata.namespace, {"spec": {"replicas": 0}}, dry_run="All"
    )
    assert (
        apps.read_namespaced_deployment(dep.metadata.name, dep.metadata.namespace).spec.replicas
        == dep.spec.replicas
    )
    with pytest.raises(ApiException) as err:
        core.patch_node(node, {"spec": {"unschedulable": True}}, dry_run="Some")
    assert err.value.status == 400
    assert all(w["dry_run"] for w in fleet_server.fleet.writes if w["code"] < 400)


def test_eviction_honours_pdb_with_429(
    core: client.CoreV1Api, apps: client.AppsV1Api, policy: client.PolicyV1Api
) -> None:
    dep = max(apps.list_deployment_for_all_namespaces().items, key=lambda d: d.spec.replicas)
    ns, app = dep.metadata.namespace, dep.spec.selector.match_labels["app"]
    for existing in policy.list_namespaced_pod_disruption_budget(ns).items:
        policy.delete_namespaced_pod_disruption_budget(existing.metadata.name, ns)
    policy.create_namespaced_pod_disruption_budget(
        ns,
        client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name="strict"),
            spec=client.V1PodDisruptionBudgetSpec(
                max_unavailable=0, selector=client.V1LabelSelector(match_labels={"app": app})
            ),
        ),
    )
    pdb = policy.read_namespaced_pod_disruption_budget("strict", ns)
    assert pdb.status.disruptions_allowed == 0 and pdb.status.expected_pods == dep.spec.replicas
    pod = core.list_namespaced_pod(ns, label_selector=f"app={app}").items[0]
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=ns))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod_eviction(pod.metadata.name, ns, eviction)
    assert err.value.status == 429
    body = _status(err.value)
    assert "disruption budget" in body["message"]
    assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert core.read_namespaced_pod(pod.metadata.name, ns).metadata.uid == pod.metadata.uid

    policy.patch_namespaced_pod_disruption_budget("strict", ns, {"spec": {"maxUnavailable": 1}})
    core.create_namespaced_pod_eviction(pod.metadata.name, ns, eviction)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod(pod.metadata.name, ns)
    assert err.value.status == 404
    # The deployment's controller replaced it on a node with free GPUs.
    after = apps.read_namespaced_deployment(dep.metadata.name, ns)
    assert after.status.ready_replicas == dep.spec.replicas


def test_two_pdbs_on_one_pod_is_a_500(core: client.CoreV1Api, policy: client.PolicyV1Api) -> None:
    pod = _tenant_pod_on_node(core)
    ns, app = pod.metadata.namespace, pod.metadata.labels["app"]
    for name in ("one", "two"):
        policy.create_namespaced_pod_disruption_budget(
            ns,
            client.V1PodDisruptionBudget(
                metadata=client.V1ObjectMeta(name=name),
                spec=client.V1PodDisruptionBudgetSpec(
                    max_unavailable=5, selector=client.V1LabelSelector(match_labels={"app": app})
                ),
            ),
        )
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod_eviction(
            pod.metadata.name,
            ns,
            client.V1Eviction(metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=ns)),
        )
    assert err.value.status == 500


def test_deleted_pod_is_recreated_or_left_pending(core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    pod = _tenant_pod_on_node(core)
    ns, app = pod.metadata.namespace, pod.metadata.labels["app"]
    before = {p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=f"app={app}").items}
    core.delete_namespaced_pod(pod.metadata.name, ns)
    after = {p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=f"app={app}").items}
    assert pod.metadata.name not in after and len(after) == len(before)
    # Cordon every node: a deleted pod's replacement has nowhere to go and stays Pending.
    for n in core.list_node().items:
        core.patch_node(n.metadata.name, {"spec": {"unschedulable": True}})
    victim = sorted(after)[0]
    core.delete_namespaced_pod(victim, ns)
    pending = [
        p
        for p in core.list_namespaced_pod(ns, label_selector=f"app={app}").items
        if p.status.phase == "Pending"
    ]
    assert len(pending) == 1 and pending[0].spec.node_name is None
    assert pending[0].status.conditions[0].reason == "Unschedulable"
    events = core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={pending[0].metadata.name}"
    ).items
    assert any(e.reason == "FailedScheduling" for e in events)
    # Uncordon one node: the scheduler binds the pending pod.
    core.patch_node(core.list_node().items[0].metadata.name, {"spec": {"unschedulable": None}})
    core.patch_node(core.list_node().items[1].metadata.name, {"spec": {"unschedulable": None}})
    phases = {p.status.phase for p in core.list_namespaced_pod(ns, label_selector=f"app={app}").items}
    assert phases == {"Running"} or "Pending" in phases  # it fits only if the uncordoned node is in its pool
    node_pool = core.list_node().items[0].metadata.labels["supply-agent.io/pool"]
    dep = next(
        d for d in apps.list_namespaced_deployment(ns).items if d.spec.selector.match_labels["app"] == app
    )
    if dep.spec.template.spec.node_selector["supply-agent.io/pool"] == node_pool:
        assert phases == {"Running"}


def test_scale_and_rollout_restart(apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    dep = apps.list_deployment_for_all_namespaces().items[0]
    ns, name = dep.metadata.namespace, dep.metadata.name
    apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": 1}})
    d = apps.read_namespaced_deployment(name, ns)
    assert d.spec.replicas == 1 and d.status.ready_replicas == 1
    assert len(core.list_namespaced_pod(ns, label_selector=f"app={name}").items) == 1
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": -1}})
    assert err.value.status == 422
    old = core.list_namespaced_pod(ns, label_selector=f"app={name}").items[0]
    apps.patch_namespaced_deployment(
        name,
        ns,
        {
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}
                }
            }
        },
    )
    pods = core.list_namespaced_pod(ns, label_selector=f"app={name}").items
    assert len(pods) == 1 and pods[0].metadata.name != old.metadata.name
    assert pods[0].metadata.labels["pod-template-hash"] != old.metadata.labels["pod-template-hash"]
    rs = apps.list_namespaced_replica_set(ns, label_selector=f"app={name}").items
    assert sorted(r.spec.replicas for r in rs) == [0, 1]


def test_errors_are_kubernetes_status_bodies(core: client.CoreV1Api, fleet_server: FleetServer) -> None:
    with pytest.raises(ApiException) as err:
        core.read_node("no-such-node")
    body = _status(err.value)
    assert err.value.status == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"
    assert body["message"] == 'nodes "no-such-node" not found'
    node = core.list_node().items[0].metadata.name
    code, body = _raw(
        fleet_server, "PATCH", f"/api/v1/nodes/{node}", b"{not json", "application/merge-patch+json"
    )
    assert code == 400 and body["kind"] == "Status" and body["reason"] == "BadRequest"
    code, body = _raw(fleet_server, "PATCH", f"/api/v1/nodes/{node}", b"{}", "application/apply-patch+yaml")
    assert code == 415
    pod = _tenant_pod_on_node(core)
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod(
            pod.metadata.name, pod.metadata.namespace, {"spec": {"nodeName": "elsewhere"}}
        )
    assert err.value.status == 422


def test_pod_logs_and_proxy_to_node_agent(core: client.CoreV1Api) -> None:
    pod = _tenant_pod_on_node(core)
    log = core.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace, tail_lines=1)
    assert log.count("\n") == 1 and "step=" in log
    agent = core.list_namespaced_pod(
        AGENT_NAMESPACE, field_selector=f"spec.nodeName={pod.spec.node_name}"
    ).items[0]
    report = json.loads(
        core.connect_get_namespaced_pod_proxy_with_path(
            agent.metadata.name, AGENT_NAMESPACE, "health", _preload_content=False
        ).data
    )
    assert report["node"] == pod.spec.node_name and report["simulated"] is True
    assert len(report["gpus"]) == 8
    with pytest.raises(ApiException) as err:
        core.connect_get_namespaced_pod_proxy_with_path(pod.metadata.name, pod.metadata.namespace, "health")
    assert err.value.status == 503


def test_unauthorized_without_token(fleet_server: FleetServer) -> None:
    for token in ("", "wrong"):
        code, body = _raw(fleet_server, "GET", "/api/v1/nodes", token=token)
        assert code == 401 and body["reason"] == "Unauthorized"
        code, body = _raw(fleet_server, "GET", "/sandbox/v1/truth", token=token)
        assert code == 401


def test_pages_stay_in_order_when_the_fleet_changes_between_them(core: client.CoreV1Api) -> None:
    """A page after a write (the list's sorted order is cached per revision) goes on where the last ended:
    every pod there throughout is seen once, in order, and one deleted before its page is not."""
    everything = [(p.metadata.namespace, p.metadata.name) for p in core.list_pod_for_all_namespaces().items]
    first = core.list_pod_for_all_namespaces(limit=7)
    seen = [(p.metadata.namespace, p.metadata.name) for p in first.items]
    gone = everything[-1]
    core.delete_namespaced_pod(gone[1], gone[0], grace_period_seconds=0)
    token = first.metadata._continue
    while token:
        page = core.list_pod_for_all_namespaces(limit=7, _continue=token)
        seen += [(p.metadata.namespace, p.metadata.name) for p in page.items]
        token = page.metadata._continue
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    stayed = set(everything) - {gone}
    assert stayed <= set(seen) and gone not in seen
