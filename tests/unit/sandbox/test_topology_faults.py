"""The fleet's topology (rack, leaf switch and driver labels) and the component faults: each shows, through
the real Kubernetes API, the node-agent's NVML report and the alert rules, exactly as its per-node faults
do on every node it covers, and nowhere else."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from kubernetes import client

from sandbox.fleet.admin import AdminClient, AdminError
from sandbox.fleet.faults import DEFAULT_ROLLOUT_DRIVER, EXPANSIONS, FaultKind
from sandbox.fleet.nvml_sim import SimNvml
from sandbox.fleet.world import AGENT_NAMESPACE, Fleet, FleetSpec
from sandbox.fleet.world.spec import (
    DEFAULT_DRIVER_VERSION,
    DRIVER_LABEL,
    NODES_PER_RACK,
    POOL_LABEL,
    RACK_LABEL,
    SWITCH_LABEL,
)

GPUS = 8
POOL = "east-h100"


@pytest.fixture
def fleet_spec() -> FleetSpec:
    # 24 nodes per pool: racks 000 (nodes 0..15) and 001 (16..23); leaves 000 (0..3), 001 (4..11),
    # 002 (12..19, across both racks) and 003 (20..23).
    return FleetSpec(nodes=48, gpus_per_node=GPUS, pools=2, seed=3)


def _node(i: int) -> str:
    return f"{POOL}-{i:05d}"


def _health(core: client.CoreV1Api, node: str) -> dict:
    agent = core.list_namespaced_pod(AGENT_NAMESPACE, field_selector=f"spec.nodeName={node}").items[0]
    raw = core.connect_get_namespaced_pod_proxy_with_path(
        agent.metadata.name, AGENT_NAMESPACE, "health", _preload_content=False
    )
    return json.loads(raw.data)


def _condition(core: client.CoreV1Api, node: str, ctype: str) -> str:
    return next(c.status for c in core.read_node(node).status.conditions if c.type == ctype)


def _events(core: client.CoreV1Api, node: str) -> list[client.CoreV1Event]:
    return core.list_namespaced_event("default", field_selector=f"involvedObject.name={node}").items


def _alerts_by_node(admin: AdminClient, alertname: str) -> Counter[str]:
    return Counter(a["labels"]["node"] for a in admin.alerts("raw") if a["alertname"] == alertname)


def _pool_nodes(core: client.CoreV1Api) -> list[client.V1Node]:
    nodes = core.list_node(label_selector=f"{POOL_LABEL}={POOL}").items
    return sorted(nodes, key=lambda n: n.metadata.name)


# -- labels --------------------------------------------------------------------------------------------


def test_nodes_carry_rack_switch_and_driver_labels(core: client.CoreV1Api) -> None:
    nodes = _pool_nodes(core)
    assert len(nodes) == 24
    for i, node in enumerate(nodes):
        labels = node.metadata.labels
        assert labels[RACK_LABEL] == f"{POOL}-rack-{i // NODES_PER_RACK:03d}"  # unchanged
        assert labels[SWITCH_LABEL] == f"{POOL}-leaf-{(i + 4) // 8:03d}"
        assert labels[DRIVER_LABEL] == DEFAULT_DRIVER_VERSION
    # The default driver is the one the simulated NVML reports.
    assert f"{DEFAULT_DRIVER_VERSION}-sim" == SimNvml.DRIVER_VERSION
    # A leaf is not a rack: leaf 002 serves the end of rack 000 and the start of rack 001.
    leaf = core.list_node(label_selector=f"{SWITCH_LABEL}={POOL}-leaf-002").items
    assert sorted(n.metadata.name for n in leaf) == [_node(i) for i in range(12, 20)]
    assert {n.metadata.labels[RACK_LABEL] for n in leaf} == {f"{POOL}-rack-000", f"{POOL}-rack-001"}
    for rack in {n.metadata.labels[RACK_LABEL] for n in nodes}:
        in_rack = {n.metadata.name for n in nodes if n.metadata.labels[RACK_LABEL] == rack}
        for switch in {n.metadata.labels[SWITCH_LABEL] for n in nodes}:
            assert in_rack != {n.metadata.name for n in nodes if n.metadata.labels[SWITCH_LABEL] == switch}


def test_the_labels_change_nothing_else_a_seed_generates() -> None:
    a, b = Fleet(FleetSpec(nodes=30, seed=9)), Fleet(FleetSpec(nodes=30, seed=9))
    a.generate()
    b.generate()
    assert a.store.dump() == b.store.dump()
    # The new labels draw nothing from the seeded stream: the tenants land where they always did.
    assert a._gpu_owner == b._gpu_owner and a.rng.random() == b.rng.random()


# -- the component faults ------------------------------------------------------------------------------


def test_expansions_are_per_node_faults_of_existing_kinds() -> None:
    assert set(EXPANSIONS) == {
        FaultKind.RACK_COOLING,
        FaultKind.RACK_POWER,
        FaultKind.SWITCH_DOWN,
        FaultKind.DRIVER_ROLLOUT,
    }
    assert all(e.each not in EXPANSIONS for e in EXPANSIONS.values())


def test_rack_cooling_throttles_every_gpu_of_the_rack(core: client.CoreV1Api, admin: AdminClient) -> None:
    rack = f"{POOL}-rack-001"
    fault = admin.inject("rack-cooling", rack=rack, detail="CRAH unit 3 tripped")
    members = [_node(i) for i in range(16, 24)]
    assert fault["kind"] == "rack-cooling" and fault["rack"] == rack and fault["nodes"] == members
    listed = admin.request("GET", "faults")
    parts = [f for f in listed if f.get("parent") == fault["id"]]
    assert len(parts) == len(members) * GPUS and {p["kind"] for p in parts} == {"thermal"}
    for name in members:
        report = _health(core, name)
        for gpu in report["gpus"]:
            assert gpu["temperature_c"] >= 90
            assert {"HwThermalSlowdown", "SwThermalSlowdown"} <= set(gpu["clock_event_reasons"])
        assert _condition(core, name, "GpuHealthy") == "True"  # throttled, not broken
        assert sum(e.reason == "GpuThermalThrottling" for e in _events(core, name)) == GPUS
    outside = _health(core, _node(15))  # rack 000, the next node over
    assert all(not g["clock_event_reasons"] for g in outside["gpus"])
    assert not _alerts_by_node(admin, "GPUThermalThrottling")  # the rule's `for` is 5 minutes
    admin.advance(5 * 60)
    assert _alerts_by_node(admin, "GPUThermalThrottling") == {name: GPUS for name in members}
    cleared = admin.clear(rack=rack)["cleared"]
    assert len(cleared) == 1 + len(parts) and admin.request("GET", "faults") == []
    assert all(not g["clock_event_reasons"] for g in _health(core, members[0])["gpus"])


def test_rack_power_on_one_pdu_kills_its_nodes_as_notready_does(
    core: client.CoreV1Api, admin: AdminClient
) -> None:
    pdu = [_node(i) for i in range(16, 20)]
    fault = admin.inject("rack-power", nodes=pdu, detail="PDU B-07 input lost")
    assert fault["rack"] == f"{POOL}-rack-001" and fault["nodes"] == pdu
    meters = admin.meters()["meters"]
    for name in pdu:
        assert _condition(core, name, "Ready") == "Unknown"
        assert "HostUnresponsive" in {e.reason for e in _events(core, name)}
        assert all(not m["running"] for m in meters if m["node"] == name)
    for name in (_node(20), _node(15)):  # same rack, other PDU; the rack next door
        assert _condition(core, name, "Ready") == "True"
    admin.advance(15 * 60)
    for alert in ("NodeDown", "KubeNodeNotReady", "KubeNodeUnreachable"):
        assert set(_alerts_by_node(admin, alert)) == set(pdu), alert
    admin.clear(node=pdu[0])  # one node's repair leaves the others' faults, and the component, in place
    assert _condition(core, pdu[0], "Ready") == "True" and _condition(core, pdu[1], "Ready") == "Unknown"
    assert any(f["id"] == fault["id"] for f in admin.request("GET", "faults"))
    admin.clear()
    assert admin.request("GET", "faults") == []


def test_switch_down_cuts_off_the_leaf_and_nothing_else(core: client.CoreV1Api, admin: AdminClient) -> None:
    switch = f"{POOL}-leaf-002"
    fault = admin.inject("switch-down", switch=switch)
    behind = [_node(i) for i in range(12, 20)]
    assert fault["switch"] == switch and fault["nodes"] == behind and fault["rack"] is None
    meters = admin.meters()["meters"]
    for name in behind:
        node = core.read_node(name)
        assert _condition(core, name, "Ready") == "Unknown"
        assert ("node.kubernetes.io/unreachable", "NoExecute") in {
            (t.key, t.effect) for t in node.spec.taints
        }
        cut = [e for e in _events(core, name) if e.reason == "ControlPlanePathDown"]
        assert cut and switch in cut[0].message
        # As a partition: the hosts are up and their work runs (and is metered) on.
        assert all(m["running"] for m in meters if m["node"] == name)
    assert any(m["running"] for m in meters if m["node"] in behind)
    # The racks' other nodes (other leaves) are untouched.
    for i in list(range(0, 12)) + list(range(20, 24)):
        assert _condition(core, _node(i), "Ready") == "True"
        assert not core.read_node(_node(i)).spec.taints
    admin.advance(15 * 60)
    assert set(_alerts_by_node(admin, "KubeNodeNotReady")) == set(behind)
    assert set(_alerts_by_node(admin, "KubeNodeUnreachable")) == set(behind)
    assert not _alerts_by_node(admin, "NodeDown")
    admin.clear(switch=switch)
    assert admin.request("GET", "faults") == []
    assert all(_condition(core, name, "Ready") == "True" for name in behind)


def test_driver_rollout_relabels_its_nodes_and_raises_one_xid_on_every_gpu(
    core: client.CoreV1Api, admin: AdminClient
) -> None:
    wave = [_node(i) for i in (1, 6, 11, 16)]
    fault = admin.inject("driver-rollout", nodes=wave, detail="GSP RPC timeout")
    assert fault["driver"] == DEFAULT_ROLLOUT_DRIVER and fault["code"] == 119
    assert fault["previous_drivers"] == {name: DEFAULT_DRIVER_VERSION for name in wave}
    took = core.list_node(label_selector=f"{DRIVER_LABEL}={DEFAULT_ROLLOUT_DRIVER}").items
    assert sorted(n.metadata.name for n in took) == wave
    for name in wave:
        report = _health(core, name)
        assert [[x["xid"] for x in g["xid_events"]] for g in report["gpus"]] == [[119]] * GPUS
        assert _condition(core, name, "GpuHealthy") == "False"
        assert core.read_node(name).status.allocatable["nvidia.com/gpu"] == "0"
    assert all(not g["xid_events"] for g in _health(core, _node(2))["gpus"])
    xids = [a for a in admin.alerts("raw") if a["alertname"] == "GPUXidError"]
    assert {(a["labels"]["node"], a["labels"]["gpu"]) for a in xids} == {
        (name, str(g)) for name in wave for g in range(GPUS)
    }
    assert {a["labels"]["xid"] for a in xids} == {"119"}
    admin.clear()  # the rollback: the old driver, healthy GPUs
    assert {n.metadata.labels[DRIVER_LABEL] for n in _pool_nodes(core)} == {DEFAULT_DRIVER_VERSION}
    assert _condition(core, wave[0], "GpuHealthy") == "True"


def test_driver_rollout_takes_a_version_and_an_xid(core: client.CoreV1Api, admin: AdminClient) -> None:
    fault = admin.inject("driver-rollout", nodes=[_node(3)], driver="570.86.15", code=62)
    assert fault["driver"] == "570.86.15" and fault["code"] == 62
    assert core.read_node(_node(3)).metadata.labels[DRIVER_LABEL] == "570.86.15"
    assert {a["labels"]["xid"] for a in admin.alerts("raw") if a["labels"]["node"] == _node(3)} == {"62"}


@pytest.mark.parametrize(
    ("kind", "fields", "code", "message"),
    [
        ("rack-cooling", {}, 422, "needs exactly one of rack or nodes"),
        ("rack-cooling", {"node": _node(0)}, 422, "covers whole nodes"),
        ("switch-down", {"rack": f"{POOL}-rack-000"}, 422, "needs exactly one of switch (got rack)"),
        ("rack-power", {"rack": "nowhere-rack-009"}, 404, 'no node is in rack "nowhere-rack-009"'),
        (
            "rack-power",
            {"nodes": [_node(15), _node(16)]},
            422,
            "these are in east-h100-rack-000, east-h100-rack-001",
        ),
        ("rack-power", {"nodes": ["no-such-node"]}, 404, "no-such-node"),
        ("driver-rollout", {"nodes": [_node(0)], "code": 2000}, 422, "between 1 and 1000"),
        ("rack-cooling", {"rack": f"{POOL}-rack-000", "code": 48}, 422, "takes no code or driver"),
        ("xid", {"node": _node(0), "gpu": 0, "code": 79, "rack": f"{POOL}-rack-000"}, 422, "takes no rack"),
        ("switch-down", {"switch": f"{POOL}-leaf-001", "nodes": "x"}, 422, "'nodes' must be a list"),
    ],
)
def test_bad_component_faults_say_what_is_wrong(
    admin: AdminClient, kind: str, fields: dict, code: int, message: str
) -> None:
    with pytest.raises(AdminError) as err:
        admin.inject(kind, **fields)
    assert err.value.code == code and message in str(err.value)
    assert admin.request("GET", "faults") == []


def test_clear_names_one_scope(admin: AdminClient) -> None:
    with pytest.raises(AdminError) as err:
        admin.clear(rack=f"{POOL}-rack-000", switch=f"{POOL}-leaf-000")
    assert err.value.code == 422 and "clear one of node, rack and switch" in str(err.value)
    with pytest.raises(AdminError) as err:
        admin.clear(switch="no-leaf")
    assert err.value.code == 404


def test_a_component_fault_survives_snapshot_and_restore(core: client.CoreV1Api, admin: AdminClient) -> None:
    fault = admin.inject("driver-rollout", nodes=[_node(5), _node(6)], driver="560.28.03")
    snap = admin.snapshot()
    admin.clear()
    admin.restore(snap)
    restored = {f["id"]: f for f in admin.request("GET", "faults")}
    assert restored[fault["id"]]["nodes"] == [_node(5), _node(6)]
    assert core.read_node(_node(5)).metadata.labels[DRIVER_LABEL] == "560.28.03"
    admin.clear()
    assert core.read_node(_node(5)).metadata.labels[DRIVER_LABEL] == DEFAULT_DRIVER_VERSION
