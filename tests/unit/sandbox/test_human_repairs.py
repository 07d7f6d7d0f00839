"""What a human does to a real fleet outside the agent, and what NVML says about the driver: a GPU reset
clears that GPU alone (the sandbox's admin API), an uncordon goes through the Kubernetes API as the admin
(and is recorded as the admin's write), and the simulated NVML reports the driver the node's
``nvidia.com/cuda.driver-version.full`` label names, through a rollout, its rollback and a snapshot."""

from __future__ import annotations

import pytest
from kubernetes import client

from sandbox.fleet.admin import AdminClient, AdminError
from sandbox.fleet.clock import SimClock
from sandbox.fleet.nvml_sim import SimNvml
from sandbox.fleet.world import Fleet, FleetSpec
from sandbox.fleet.world.spec import DEFAULT_DRIVER_VERSION, DRIVER_LABEL
from tests.support.fleet_reads import node_agent_health, node_names


@pytest.fixture
def fleet_spec() -> FleetSpec:
    return FleetSpec(nodes=12, gpus_per_node=8, pools=2, seed=5)


def _gpu_alerts(admin: AdminClient, node: str) -> set[tuple[str, str]]:
    return {
        (a["alertname"], a["labels"]["gpu"])
        for a in admin.alerts("raw")
        if a["labels"].get("node") == node and "gpu" in a["labels"]
    }


def test_a_gpu_reset_clears_that_gpu_and_nothing_else(core: client.CoreV1Api, admin: AdminClient) -> None:
    node, other = node_names(core)[:2]
    admin.inject("off-bus", node=node, gpu=1)
    admin.inject("ecc", node=node, gpu=2)
    admin.inject("disk-pressure", node=node)
    admin.inject("off-bus", node=other, gpu=1)
    assert core.read_node(node).status.allocatable["nvidia.com/gpu"] == "6"
    cleared = admin.clear(node, gpu=1)["cleared"]
    assert [(f["kind"], f["node"], f["gpu"]) for f in cleared] == [("off-bus", node, 1)]
    gpus = node_agent_health(core, node)["gpus"]
    assert gpus[1]["lost"] is False and gpus[1]["uuid"]  # back on the bus, the same GPU
    assert gpus[2]["ecc_uncorrected_volatile"] == 1  # the other GPU's fault is untouched
    assert core.read_node(node).status.allocatable["nvidia.com/gpu"] == "7"
    assert _gpu_alerts(admin, node) == {("GPUEccUncorrectable", "2")}
    assert ("GPUFallenOffBus", "1") in _gpu_alerts(admin, other)
    kinds = sorted(f["kind"] for f in admin.request("GET", "faults"))
    assert kinds == ["disk-pressure", "ecc", "off-bus"]
    admin.clear(node, gpu=2)
    conditions = {c.type: c.status for c in core.read_node(node).status.conditions}
    assert conditions["GpuHealthy"] == "True" and conditions["DiskPressure"] == "True"


def test_a_gpu_reset_is_no_driver_rollback(core: client.CoreV1Api, admin: AdminClient) -> None:
    node = node_names(core)[3]
    admin.inject("driver-rollout", nodes=[node], driver="560.35.03", code=119)
    for gpu in range(8):
        admin.clear(node, gpu=gpu)
    assert admin.request("GET", "faults") == []  # the rollout went with its last part
    assert core.read_node(node).metadata.labels[DRIVER_LABEL] == "560.35.03"
    assert node_agent_health(core, node)["driver_version"] == "560.35.03-sim"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpu": 0}, "a GPU reset names a node and a gpu"),
        ({"node": "no-such-node", "gpu": 0}, "no-such-node"),
        ({"rack": "east-h100-rack-000", "gpu": 0}, "(no rack or switch)"),
    ],
)
def test_a_bad_gpu_reset_says_what_is_wrong(admin: AdminClient, kwargs: dict, message: str) -> None:
    with pytest.raises(AdminError) as err:
        admin.clear(kwargs.pop("node", None), **kwargs)
    assert message in str(err.value)


def test_a_gpu_out_of_range_and_a_bad_clear_body_are_refused(
    core: client.CoreV1Api, admin: AdminClient
) -> None:
    with pytest.raises(AdminError, match=r"has GPUs 0\.\.7, not 9"):
        admin.clear(node_names(core)[0], gpu=9)
    with pytest.raises(AdminError, match="must be an integer"):
        admin.request("POST", "faults/clear", {"node": node_names(core)[0], "gpu": "1"})
    with pytest.raises(AdminError, match="unknown clear field"):
        admin.request("POST", "faults/clear", {"nodes": ["x"]})


def test_an_uncordon_is_the_admins_write_through_the_kubernetes_api(
    core: client.CoreV1Api, admin: AdminClient
) -> None:
    node = node_names(core)[2]
    core.patch_node(node, {"spec": {"unschedulable": True}})
    assert core.read_node(node).spec.unschedulable is True
    admin.uncordon(node)
    assert not core.read_node(node).spec.unschedulable
    writes = [w for w in admin.truth()["writes"] if w["name"] == node and w["resource"] == "nodes"]
    assert [(w["verb"], w["by"], w["code"]) for w in writes] == [("patch", "admin", 200)] * 2
    with pytest.raises(AdminError) as err:
        admin.uncordon("no-such-node")
    assert err.value.code == 404


def test_nvml_reports_the_driver_the_node_label_names(core: client.CoreV1Api, admin: AdminClient) -> None:
    node, untouched = node_names(core)[4:6]
    assert node_agent_health(core, node)["driver_version"] == f"{DEFAULT_DRIVER_VERSION}-sim"
    admin.inject("driver-rollout", nodes=[node], driver="570.86.15")
    report = node_agent_health(core, node)
    assert report["driver_version"] == "570.86.15-sim"
    assert report["nvml_version"] == "12.570.86.15-sim"
    assert [[x["xid"] for x in g["xid_events"]] for g in report["gpus"]] == [[119]] * 8  # after the restart
    assert node_agent_health(core, untouched)["driver_version"] == f"{DEFAULT_DRIVER_VERSION}-sim"
    admin.clear()  # the rollback
    assert node_agent_health(core, node)["driver_version"] == f"{DEFAULT_DRIVER_VERSION}-sim"
    assert node_agent_health(core, node)["nvml_version"] == SimNvml.NVML_VERSION


def test_a_node_first_seen_after_a_rollout_reports_its_driver_and_a_snapshot_keeps_it() -> None:
    fleet = Fleet(FleetSpec(nodes=4, gpus_per_node=2, pools=1, seed=1), SimClock("manual"))
    fleet.generate()
    node = sorted(n["metadata"]["name"] for n in fleet.store.items("nodes"))[0]
    fleet._set_driver(node, "535.183.01")  # before its NVML exists: it is created from the label
    sim, collector = fleet.agent(node)
    assert sim.driver_version == "535.183.01-sim" and collector.report().driver_version == "535.183.01-sim"
    snap = fleet.snapshot()
    assert snap["nvml"][node]["driver_version"] == "535.183.01-sim"
    restored = Fleet.restore(snap)
    assert restored.agent(node)[1].report().driver_version == "535.183.01-sim"
    del snap["nvml"][node]["driver_version"]  # a snapshot from before NVML followed the label
    assert Fleet.restore(snap).agent(node)[0].driver_version == "535.183.01-sim"
