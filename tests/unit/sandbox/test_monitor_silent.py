"""A silent GPU monitor on a real fleet: dcgm-exporter exports no series for a node (or one GPU), so the
alert rules over those series stay silent whatever the GPUs do, while NVML through the node-agent, the
node's conditions and events, and the kube-state-metrics alerts still show the truth."""

from __future__ import annotations

import pytest
from kubernetes import client

from sandbox.fleet.admin import AdminClient, AdminError
from sandbox.fleet.alerts import RULES, SILENCED_BY, all_rules
from sandbox.fleet.faults import NODE_FAULTS, FaultKind
from sandbox.fleet.world import GPU_INDICES_ANNOTATION
from tests.support.fleet_reads import node_agent_health, node_names

DCGM_ALERTS = {
    "GPUXidError",
    "GPUFallenOffBus",
    "GPUEccUncorrectable",
    "GPURowRemapPending",
    "GPURowRemapFailure",
    "GPUThermalThrottling",
}


def _alerts(admin: AdminClient, node: str) -> list[tuple[str, str]]:
    """(alertname, gpu) of every alert firing for the node."""
    return sorted(
        (a["alertname"], a["labels"].get("gpu", ""))
        for a in admin.alerts("raw")
        if a["labels"].get("node") == node
    )


def _condition(core: client.CoreV1Api, node: str, ctype: str) -> str:
    return next(c.status for c in core.read_node(node).status.conditions if c.type == ctype)


def test_every_rule_says_whose_series_it_reads() -> None:
    by_exporter = {r.alert: r.exporter for r in all_rules()}
    assert {a for a, e in by_exporter.items() if e == "dcgm-exporter"} == DCGM_ALERTS
    assert all(
        r.expr.startswith(("DCGM_FI_", "rate(DCGM_FI_")) for r in all_rules() if r.alert in DCGM_ALERTS
    )
    assert by_exporter["NodeAgentDown"] == by_exporter["NodeDown"] == "prometheus"  # `up`, a scrape's own
    assert dict(SILENCED_BY) == {FaultKind.MONITOR_SILENT: frozenset({"dcgm-exporter"})}
    assert RULES[FaultKind.MONITOR_SILENT] == ()  # it answers its scrapes: nothing says it went quiet
    assert FaultKind.MONITOR_SILENT in NODE_FAULTS


def test_a_silent_exporter_hides_an_xid_that_nvml_and_the_node_still_show(
    core: client.CoreV1Api, admin: AdminClient
) -> None:
    silent, loud = node_names(core)[:2]
    quiet = admin.inject("monitor-silent", node=silent)
    assert quiet["kind"] == "monitor-silent" and quiet["gpu"] is None
    assert _alerts(admin, silent) == []  # nothing fires for the silence itself
    admin.inject("off-bus", node=silent, gpu=3)
    admin.inject("xid", node=silent, gpu=4, code=48)
    admin.inject("off-bus", node=loud, gpu=3)
    admin.advance(60)
    assert _alerts(admin, silent) == []
    assert _alerts(admin, loud) == [("GPUFallenOffBus", "3")]  # the other node's exporter still speaks
    # What dcgm-exporter no longer says, NVML (the node-agent's report), the node and its events do.
    gpus = node_agent_health(core, silent)["gpus"]
    assert gpus[3]["lost"] is True
    assert [x["xid"] for x in gpus[4]["xid_events"]] == [48]
    assert _condition(core, silent, "GpuHealthy") == "False"
    assert core.read_node(silent).status.allocatable["nvidia.com/gpu"] == "6"
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={silent}").items
    assert any(e.reason == "GpuXidError" and "XID 79" in e.message for e in events)
    # The fleet's truth: the silence is no symptom of its own; the XID it hides is scored as itself.
    symptoms = {s["kind"]: s for s in admin.truth()["symptoms"] if s["node"] == silent}
    assert symptoms["monitor-silent"]["present"] and symptoms["monitor-silent"]["contained"]
    assert "dcgm-exporter exports no GPU series" in symptoms["monitor-silent"]["why"]
    assert symptoms["off-bus"]["present"] and symptoms["xid"]["present"]
    # Repaired (the exporter restarted with the node's faults cleared): nothing left to fire.
    admin.clear(silent)
    assert _alerts(admin, silent) == []


def test_a_silent_gpu_hides_only_that_gpu(core: client.CoreV1Api, admin: AdminClient) -> None:
    node = node_names(core)[0]
    admin.inject("monitor-silent", node=node, gpu=2)
    for gpu in (2, 5):
        admin.inject("thermal", node=node, gpu=gpu)
    admin.inject("ecc", node=node, gpu=2)
    admin.advance(600)
    assert _alerts(admin, node) == [("GPUThermalThrottling", "5")]
    assert node_agent_health(core, node)["gpus"][2]["temperature_c"] >= 90  # NVML still reads it hot


def test_a_silent_monitor_leaves_the_cluster_alerts(core: client.CoreV1Api, admin: AdminClient) -> None:
    busy = [
        p
        for p in core.list_pod_for_all_namespaces().items
        if (p.metadata.annotations or {}).get(GPU_INDICES_ANNOTATION) and p.status.phase == "Running"
    ]
    pod = busy[0]
    node = pod.spec.node_name
    admin.inject("monitor-silent", node=node)
    admin.inject("crashloop", namespace=pod.metadata.namespace, pod=pod.metadata.name)
    admin.inject("disk-pressure", node=node)
    admin.advance(20 * 60)
    names = {a for a, _ in _alerts(admin, node)}
    assert names == {"KubePodCrashLooping", "KubeNodeDiskPressure"}  # kube-state-metrics still speaks


def test_a_dead_node_with_a_silent_monitor_still_pages(core: client.CoreV1Api, admin: AdminClient) -> None:
    node = node_names(core)[1]
    admin.inject("monitor-silent", node=node)
    admin.inject("notready", node=node)
    admin.advance(20 * 60)
    assert {a for a, _ in _alerts(admin, node)} == {"NodeDown", "KubeNodeNotReady", "KubeNodeUnreachable"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"gpu": 8}, "has GPUs 0..7, not 8"), ({}, "needs a node")],
)
def test_a_bad_monitor_silent_fault_says_what_is_wrong(
    core: client.CoreV1Api, admin: AdminClient, fields: dict, message: str
) -> None:
    if "gpu" in fields:
        fields = {"node": node_names(core)[0], **fields}
    with pytest.raises(AdminError) as err:
        admin.inject("monitor-silent", **fields)
    assert err.value.code == 422 and message in str(err.value)
