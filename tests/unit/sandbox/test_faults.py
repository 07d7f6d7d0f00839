"""Every fault shows consistently through every API: NVML report, conditions, events, pods, meters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.fleet.admin import AdminClient, AdminError
from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import AGENT_NAMESPACE, GPU_INDICES_ANNOTATION, Fleet


def _health(core: client.CoreV1Api, node: str) -> dict:
    agent = core.list_namespaced_pod(AGENT_NAMESPACE, field_selector=f"spec.nodeName={node}").items[0]
    raw = core.connect_get_namespaced_pod_proxy_with_path(
        agent.metadata.name, AGENT_NAMESPACE, "health", _preload_content=False
    )
    return json.loads(raw.data)


def _condition(core: client.CoreV1Api, node: str, ctype: str) -> client.V1NodeCondition:
    return next(c for c in core.read_node(node).status.conditions if c.type == ctype)


def _events(core: client.CoreV1Api, name: str, namespace: str = "default") -> list[str]:
    return [
        e.reason
        for e in core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    ]


def _gpu_owner(core: client.CoreV1Api, node: str, gpu: int) -> client.V1Pod | None:
    for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items:
        indices = (pod.metadata.annotations or {}).get(GPU_INDICES_ANNOTATION, "")
        if str(gpu) in indices.split(","):
            return pod
    return None


def _busy_gpu(core: client.CoreV1Api) -> tuple[str, int, client.V1Pod]:
    for node in core.list_node().items:
        for gpu in range(8):
            owner = _gpu_owner(core, node.metadata.name, gpu)
            if owner is not None:
                return node.metadata.name, gpu, owner
    raise AssertionError("no GPU in use")


def test_fatal_xid_everywhere(core: client.CoreV1Api, admin: AdminClient) -> None:
    node, gpu, owner = _busy_gpu(core)
    fault = admin.inject("xid", node=node, gpu=gpu, code=79)
    assert fault["labels"]["pod"] == owner.metadata.name and fault["labels"]["customer"]
    report = _health(core, node)
    assert [x["xid"] for x in report["gpus"][gpu]["xid_events"]] == [79]
    assert all(not g["xid_events"] for i, g in enumerate(report["gpus"]) if i != gpu)
    cond = _condition(core, node, "GpuHealthy")
    assert cond.status == "False" and "XID 79" in cond.message
    assert core.read_node(node).status.allocatable["nvidia.com/gpu"] == "7"
    assert "GpuXidError" in _events(core, node)
    pod = core.read_namespaced_pod(owner.metadata.name, owner.metadata.namespace)
    assert pod.status.container_statuses[0].restart_count == 1
    assert "XID 79" in pod.status.container_statuses[0].last_state.terminated.message
    alerts = admin.alerts("raw")
    assert any(a["labels"].get("node") == node and a["labels"].get("xid") == "79" for a in alerts)
    truth = admin.truth()
    assert truth["gpus_out_of_service"] == 1
    assert owner.metadata.labels["supply-agent.io/customer"] in truth["customers_affected"]
    admin.clear()
    assert _condition(core, node, "GpuHealthy").status == "True"
    assert core.read_node(node).status.allocatable["nvidia.com/gpu"] == "8"
    assert admin.truth()["gpus_out_of_service"] == 0


def test_application_xid_keeps_the_gpu(core: client.CoreV1Api, admin: AdminClient) -> None:
    node, gpu, owner = _busy_gpu(core)
    admin.inject("xid", node=node, gpu=gpu, code=13)
    assert _condition(core, node, "GpuHealthy").status == "True"
    assert core.read_node(node).status.allocatable["nvidia.com/gpu"] == "8"
    assert [x["xid"] for x in _health(core, node)["gpus"][gpu]["xid_events"]] == [13]
    pod = core.read_namespaced_pod(owner.metadata.name, owner.metadata.namespace)
    assert pod.status.container_statuses[0].restart_count == 1


def test_ecc_off_bus_and_thermal(core: client.CoreV1Api, admin: AdminClient) -> None:
    nodes = [n.metadata.name for n in core.list_node().items]
    admin.inject("ecc", node=nodes[0], gpu=1)
    g = _health(core, nodes[0])["gpus"][1]
    assert g["ecc_uncorrected_volatile"] == 1 and g["remapped_rows"]["pending"] is True
    assert [x["xid"] for x in g["xid_events"]] == [48, 63]
    admin.inject("off-bus", node=nodes[1], gpu=2)
    report = _health(core, nodes[1])
    assert report["gpus"][2]["lost"] is True and report["gpus"][3]["lost"] is False
    assert _condition(core, nodes[1], "GpuHealthy").status == "False"
    admin.inject("thermal", node=nodes[2], gpu=0)
    g = _health(core, nodes[2])["gpus"][0]
    assert g["temperature_c"] >= 90 and "HwThermalSlowdown" in g["clock_event_reasons"]
    assert _condition(core, nodes[2], "GpuHealthy").status == "True"
    assert "GpuThermalThrottling" in _events(core, nodes[2])


def test_node_death_versus_partition(core: client.CoreV1Api, admin: AdminClient) -> None:
    nodes = [n.metadata.name for n in core.list_node().items]
    dead, cut = nodes[0], nodes[1]
    admin.inject("notready", node=dead)
    admin.inject("partition", node=cut)
    for name in (dead, cut):
        node = core.read_node(name)
        assert _condition(core, name, "Ready").status == "Unknown"
        assert {(t.key, t.effect) for t in node.spec.taints} >= {
            ("node.kubernetes.io/unreachable", "NoExecute")
        }
        with pytest.raises(ApiException) as err:
            _health(core, name)
        assert err.value.status == 503
        tenant = [
            p
            for p in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={name}").items
            if p.metadata.namespace != AGENT_NAMESPACE
        ]
        assert all(c.status == "False" for p in tenant for c in p.status.conditions if c.type == "Ready")
    # What tells them apart: out-of-band signals, and the meters (the partitioned node's work still runs).
    assert "HostUnresponsive" in _events(core, dead) and "ControlPlanePathDown" in _events(core, cut)
    meters = admin.meters()["meters"]
    assert all(not m["running"] for m in meters if m["node"] == dead)
    assert any(m["running"] for m in meters if m["node"] == cut)
    # After the default 300 s toleration, the taint manager evicts; the kubelet cannot confirm, so the pods
    # hang in Terminating and the deployments re-create them elsewhere.
    admin.advance(301)
    stuck = [
        p
        for p in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={dead}").items
        if p.metadata.namespace != AGENT_NAMESPACE
    ]
    assert stuck and all(p.metadata.deletion_timestamp for p in stuck)
    alerts = {a["alertname"] for a in admin.alerts("raw") if a["labels"].get("node") == dead}
    cut_alerts = {a["alertname"] for a in admin.alerts("raw") if a["labels"].get("node") == cut}
    assert "NodeDown" in alerts and "NodeDown" not in cut_alerts


def test_agent_down_and_disk_pressure(core: client.CoreV1Api, admin: AdminClient) -> None:
    nodes = [n.metadata.name for n in core.list_node().items]
    admin.inject("agent-down", node=nodes[0])
    assert _condition(core, nodes[0], "GpuHealthy").status == "Unknown"
    assert _condition(core, nodes[0], "Ready").status == "True"
    agent = core.list_namespaced_pod(AGENT_NAMESPACE, field_selector=f"spec.nodeName={nodes[0]}").items[0]
    assert agent.status.container_statuses[0].state.waiting.reason == "CrashLoopBackOff"
    with pytest.raises(ApiException) as err:
        _health(core, nodes[0])
    assert err.value.status == 503 and "connection refused" in str(err.value.body)
    admin.inject("disk-pressure", node=nodes[1])
    assert _condition(core, nodes[1], "DiskPressure").status == "True"
    assert any(t.key == "node.kubernetes.io/disk-pressure" for t in core.read_node(nodes[1]).spec.taints)
    admin.clear()
    assert _condition(core, nodes[0], "GpuHealthy").status == "True"
    assert not core.read_node(nodes[1]).spec.taints


def test_pod_faults(core: client.CoreV1Api, apps: client.AppsV1Api, admin: AdminClient) -> None:
    pods = [p for p in core.list_pod_for_all_namespaces(label_selector="supply-agent.io/customer").items]
    crash, oom, stuck, metered = pods[0], pods[1], pods[2], pods[3]
    admin.inject("crashloop", namespace=crash.metadata.namespace, pod=crash.metadata.name)
    admin.inject("oomkill", namespace=oom.metadata.namespace, pod=oom.metadata.name)
    c = core.read_namespaced_pod(crash.metadata.name, crash.metadata.namespace).status.container_statuses[0]
    assert c.state.waiting.reason == "CrashLoopBackOff" and c.last_state.terminated.exit_code == 1
    o = core.read_namespaced_pod(oom.metadata.name, oom.metadata.namespace).status.container_statuses[0]
    assert o.last_state.terminated.reason == "OOMKilled" and o.last_state.terminated.exit_code == 137
    log = core.read_namespaced_pod_log(crash.metadata.name, crash.metadata.namespace, previous=True)
    assert "RuntimeError" in log
    admin.advance(10 + 20 + 40)
    c = core.read_namespaced_pod(crash.metadata.name, crash.metadata.namespace).status.container_statuses[0]
    assert c.restart_count == 4  # one at the crash, then back-off 10 s, 20 s, 40 s
    admin.inject("stuck-terminating", namespace=stuck.metadata.namespace, pod=stuck.metadata.name)
    s = core.read_namespaced_pod(stuck.metadata.name, stuck.metadata.namespace)
    assert s.metadata.deletion_timestamp is not None
    core.delete_namespaced_pod(stuck.metadata.name, stuck.metadata.namespace)  # graceful: still stuck
    assert core.read_namespaced_pod(stuck.metadata.name, stuck.metadata.namespace).metadata.deletion_timestamp
    core.delete_namespaced_pod(stuck.metadata.name, stuck.metadata.namespace, grace_period_seconds=0)
    with pytest.raises(ApiException):
        core.read_namespaced_pod(stuck.metadata.name, stuck.metadata.namespace)
    admin.inject("double-metering", namespace=metered.metadata.namespace, pod=metered.metadata.name)
    admin.advance(100)
    readings = admin.meters(metered.metadata.namespace, metered.metadata.name)["meters"]
    assert len(readings) == 2
    gpus = readings[0]["gpus"]
    dup = next(r for r in readings if r["meter"].endswith("-dup"))
    assert dup["gpu_seconds"] == pytest.approx(100 * gpus)


def test_bad_fault_requests_say_what_is_wrong(admin: AdminClient) -> None:
    with pytest.raises(AdminError) as err:
        admin.inject("xid", node="no-such-node", gpu=0, code=79)
    assert err.value.code == 404 and "no-such-node" in str(err.value)
    with pytest.raises(AdminError) as err:
        admin.inject("xid", node=None, gpu=0, code=79)
    assert err.value.code == 422 and "needs a node" in str(err.value)
    with pytest.raises(AdminError) as err:
        admin.inject("meteor-strike", node="x")
    assert err.value.code == 422 and "unknown fault kind" in str(err.value)
    with pytest.raises(AdminError) as err:
        admin.inject("crashloop", namespace="tenant-acme", pod="nope")
    assert err.value.code == 404


def test_snapshot_restore_round_trip(
    core: client.CoreV1Api, admin: AdminClient, fleet_server: FleetServer, tmp_path: Path
) -> None:
    node, gpu, _ = _busy_gpu(core)
    admin.inject("xid", node=node, gpu=gpu, code=48)
    core.patch_node(node, {"spec": {"unschedulable": True}})
    snap = admin.snapshot()
    core.patch_node(node, {"spec": {"unschedulable": None}})
    admin.clear()
    admin.restore(snap)
    assert core.read_node(node).spec.unschedulable is True
    assert _condition(core, node, "GpuHealthy").status == "False"
    assert [f["code"] for f in admin.request("GET", "faults")] == [48]
    restored = Fleet.restore(snap)
    assert restored.store.count("pods") == fleet_server.fleet.store.count("pods")
    # The restored world schedules as the original did: same free GPUs per node.
    assert {n: restored.free_gpus(n) for n in restored._gpu_owner} == {
        n: fleet_server.fleet.free_gpus(n) for n in fleet_server.fleet._gpu_owner
    }


def test_same_seed_same_fleet() -> None:
    from sandbox.fleet.world import FleetSpec

    a, b = Fleet(FleetSpec(nodes=30, seed=9)), Fleet(FleetSpec(nodes=30, seed=9))
    a.generate()
    b.generate()
    assert a.store.dump() == b.store.dump()
    c = Fleet(FleetSpec(nodes=30, seed=10))
    c.generate()
    assert a.store.dump() != c.store.dump()
