"""The sandbox fleet's alert rendering: which alerts faults fire, and the webhook bodies they become."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox.fleet.alerts import (
    FIRING_ENDS_AT,
    RULES,
    Alert,
    all_rules,
    fingerprint,
    fire,
    pagerduty_incident_alerts,
    to_alertmanager,
    to_pagerduty,
)
from sandbox.fleet.faults import Fault, FaultKind

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)  # past every rule's `for`
GPU_LABELS = {
    "pool": "h100-east",
    "region": "us-east-1",
    "gpu_product": "NVIDIA-H100-80GB-HBM3",
    "gpu_uuid": "GPU-5f3c1a2b-0000-4e5d-9c1b-0123456789ab",
    "customer": "acme",
}
NODE_LABELS = {"pool": "h100-east", "region": "us-east-1"}
POD_LABELS = {"pool": "h100-east", "region": "us-east-1", "customer": "acme"}
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def make(kind: FaultKind, fid: str = "f1", **kw: Any) -> Fault:
    """A well-formed fault of each kind, as the fleet would record it after enrichment."""
    base: dict[str, Any] = {"id": fid, "kind": kind, "started_at": T0}
    if kind in (FaultKind.XID, FaultKind.ECC, FaultKind.OFF_BUS, FaultKind.THERMAL):
        base.update(node="gpu-node-03", gpu=2, labels=dict(GPU_LABELS))
        base["code"] = {FaultKind.XID: 13, FaultKind.ECC: 48, FaultKind.OFF_BUS: 79}.get(kind)
    elif kind in (
        FaultKind.CRASHLOOP,
        FaultKind.OOMKILL,
        FaultKind.STUCK_TERMINATING,
        FaultKind.DOUBLE_METERING,
    ):
        base.update(node="gpu-node-07", namespace="tenant-acme", pod="trainer-0", labels=dict(POD_LABELS))
    else:
        base.update(node="gpu-node-05", labels=dict(NODE_LABELS))
    base.update(kw)
    return Fault(**base)


def names(alerts: list[Alert]) -> list[str]:
    return [a.alertname for a in alerts]


# What each kind delivers (after `for` and inhibition), and the labels its alerts must carry.
EXPECTED: dict[FaultKind, list[str]] = {
    FaultKind.XID: ["GPUXidError"],
    FaultKind.ECC: ["GPUEccUncorrectable"],
    FaultKind.OFF_BUS: ["GPUFallenOffBus"],
    FaultKind.THERMAL: ["GPUThermalThrottling"],
    FaultKind.NOT_READY: ["NodeDown", "KubeNodeNotReady", "KubeNodeUnreachable"],
    FaultKind.PARTITION: ["KubeNodeNotReady", "KubeNodeUnreachable"],
    FaultKind.AGENT_DOWN: ["NodeAgentDown"],
    FaultKind.MONITOR_SILENT: [],  # silent: what it hides is test_monitor_silent's
    FaultKind.DISK_PRESSURE: ["KubeNodeDiskPressure"],
    FaultKind.CRASHLOOP: ["KubePodCrashLooping"],
    FaultKind.OOMKILL: ["KubePodOOMKilled"],
    FaultKind.STUCK_TERMINATING: ["KubePodStuckTerminating"],
    FaultKind.DOUBLE_METERING: ["GPUMeteringAnomaly"],
    # A component fault fires nothing itself: the per-node faults it expands into do (test_topology_faults).
    FaultKind.RACK_COOLING: [],
    FaultKind.RACK_POWER: [],
    FaultKind.SWITCH_DOWN: [],
    FaultKind.DRIVER_ROLLOUT: [],
}


def test_every_fault_kind_has_rules_and_an_expectation() -> None:
    assert set(RULES) == set(FaultKind)
    assert set(EXPECTED) == set(FaultKind)


@pytest.mark.parametrize("kind", list(FaultKind))
def test_each_kind_fires_its_alerts_with_the_right_labels(kind: FaultKind) -> None:
    fault = make(kind)
    alerts = fire([fault], now=LATER, cluster="gpu-prod-1")
    assert names(alerts) == EXPECTED[kind]
    for alert in alerts:
        labels = alert.labels
        assert labels["alertname"] == alert.alertname
        assert labels["severity"] in ("critical", "warning", "info")
        assert labels["cluster"] == "gpu-prod-1"
        assert labels["node"] == fault.node
        for name, value in fault.labels.items():
            assert labels[name] == value, name
        if fault.pod is not None:
            assert labels["namespace"] == fault.namespace
            assert labels["pod"] == fault.pod
        if fault.gpu is not None:
            assert labels["gpu"] == str(fault.gpu)
            assert labels["UUID"] == GPU_LABELS["gpu_uuid"]
            assert labels["modelName"] == GPU_LABELS["gpu_product"]
            assert labels["Hostname"] == fault.node
        assert alert.status == "firing" and alert.ends_at is None
        assert alert.fault_id == fault.id
        assert set(alert.annotations) == {"summary", "description", "runbook_url"}
        assert all("{{" not in v and "<no value>" not in v for v in alert.annotations.values())
        assert alert.generator_url.startswith("http://prometheus.sandbox.local:9090/graph?g0.expr=")


def test_xid_alert_carries_the_code_and_its_severity() -> None:
    app_fault = fire([make(FaultKind.XID, code=13)], now=T0)
    assert names(app_fault) == ["GPUXidError"]
    assert app_fault[0].labels["xid"] == "13"
    assert app_fault[0].labels["severity"] == "warning"
    hw_fault = fire([make(FaultKind.XID, code=62)], now=T0)
    assert hw_fault[0].labels["xid"] == "62"
    assert hw_fault[0].labels["severity"] == "critical"
    assert "XID 62" in hw_fault[0].annotations["summary"]


def test_specific_gpu_alerts_mute_the_generic_xid_alert() -> None:
    off_bus = fire([make(FaultKind.OFF_BUS)], now=T0)
    assert names(off_bus) == ["GPUFallenOffBus"]
    assert off_bus[0].labels["xid"] == "79"
    assert off_bus[0].labels["severity"] == "critical"
    # an XID 79 reported as a plain XID fault is the same condition, and renders the same way
    assert names(fire([make(FaultKind.XID, code=79)], now=T0)) == ["GPUFallenOffBus"]
    # an unrelated XID on another GPU of the same node is not muted
    other = make(FaultKind.XID, fid="f2", code=13, gpu=5)
    assert sorted(names(fire([make(FaultKind.OFF_BUS), other], now=T0))) == ["GPUFallenOffBus", "GPUXidError"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (48, ["GPUEccUncorrectable"]),
        (None, ["GPUEccUncorrectable"]),
        (63, ["GPUEccUncorrectable", "GPURowRemapPending"]),
        (64, ["GPUEccUncorrectable", "GPURowRemapFailure"]),
    ],
)
def test_ecc_fires_row_remap_alerts_where_the_fault_says_so(code: int | None, expected: list[str]) -> None:
    alerts = fire([make(FaultKind.ECC, code=code)], now=T0)
    assert names(alerts) == expected
    by_name = {a.alertname: a for a in alerts}
    assert by_name["GPUEccUncorrectable"].labels["xid"] == "48"
    if code == 64:
        assert by_name["GPURowRemapFailure"].labels["severity"] == "critical"
    if code == 63:
        assert by_name["GPURowRemapPending"].labels["xid"] == "63"


def test_dead_node_and_partitioned_node_fire_different_alerts() -> None:
    dead = fire([make(FaultKind.NOT_READY)], now=LATER)
    cut_off = fire([make(FaultKind.PARTITION)], now=LATER)
    # the control plane cannot tell them apart...
    common = {"KubeNodeNotReady", "KubeNodeUnreachable"}
    assert common <= set(names(dead)) and common <= set(names(cut_off))
    # ...but Prometheus, scraping over the data network, still reaches a partitioned node
    assert set(names(dead)) - set(names(cut_off)) == {"NodeDown"}
    assert set(names(cut_off)) == common
    # a dead node's node-agent is unreachable too, but NodeDown mutes it
    assert "NodeAgentDown" not in names(dead)
    ready = next(a for a in dead if a.alertname == "KubeNodeNotReady")
    assert ready.labels["condition"] == "Ready"
    assert ready.labels["status"] == "unknown"
    unreachable = next(a for a in cut_off if a.alertname == "KubeNodeUnreachable")
    assert unreachable.labels["key"] == "node.kubernetes.io/unreachable"


def test_a_dead_node_signals_first_through_its_scrapes() -> None:
    early = fire([make(FaultKind.NOT_READY)], now=T0 + timedelta(minutes=6))
    assert names(early) == ["NodeDown"]
    assert names(fire([make(FaultKind.PARTITION)], now=T0 + timedelta(minutes=6))) == []


def test_agent_down_is_not_a_node_failure() -> None:
    alerts = fire([make(FaultKind.AGENT_DOWN, namespace="supply-agent", pod="node-agent-x7k2p")], now=LATER)
    assert names(alerts) == ["NodeAgentDown", "KubePodCrashLooping"]
    agent = alerts[0]
    assert agent.labels["job"] == "node-agent" and agent.labels["instance"] == "gpu-node-05"
    assert agent.labels["severity"] == "warning"
    assert alerts[1].labels["pod"] == "node-agent-x7k2p"


def test_for_durations_delay_and_date_alerts() -> None:
    fault = make(FaultKind.THERMAL)
    assert fire([fault], now=T0 + timedelta(minutes=4, seconds=59)) == []
    (alert,) = fire([fault], now=T0 + timedelta(minutes=5))
    assert alert.starts_at == T0 + timedelta(minutes=5)
    assert fire([make(FaultKind.XID, started_at=T0 + timedelta(seconds=1))], now=T0) == []


def test_naive_datetimes_are_utc() -> None:
    naive = make(FaultKind.XID, started_at=T0.replace(tzinfo=None))
    assert fire([naive], now=T0.replace(tzinfo=None)) == fire([make(FaultKind.XID)], now=T0)


def test_fingerprint_matches_prometheus_labelset_fingerprint() -> None:
    # prometheus/common model: TestMetricToFingerprint (5799056148416392346) and the empty set
    assert fingerprint({"name": "garland, briggs", "fear": "love is not enough"}) == "507a62d79ee76c9a"
    assert fingerprint({}) == "cbf29ce484222325"


def test_fingerprints_are_stable_and_distinct() -> None:
    faults = [make(kind, fid=f"f-{kind.value}") for kind in FaultKind]
    first = fire(faults, now=LATER)
    second = fire(faults, now=LATER)
    fps = [a.fingerprint for a in first]
    assert fps == [a.fingerprint for a in second]
    assert len(set(fps)) == len(fps)
    for alert in first:
        assert re.fullmatch(r"[0-9a-f]{16}", alert.fingerprint)
        assert alert.fingerprint == fingerprint(alert.labels)
    # the fingerprint depends only on labels, not on the fault id or the time
    again = fire([make(FaultKind.XID, fid="other", started_at=T0 - timedelta(days=1))], now=T0)
    assert again[0].fingerprint == fire([make(FaultKind.XID)], now=T0)[0].fingerprint


def test_identical_label_sets_are_one_alert_the_earliest() -> None:
    early = make(FaultKind.XID, fid="b-early", started_at=T0 - timedelta(minutes=3))
    late = make(FaultKind.XID, fid="a-late")
    (alert,) = fire([late, early], now=LATER)
    assert alert.fault_id == "b-early"
    assert alert.starts_at == early.started_at


def test_output_is_deterministic_whatever_the_input_order() -> None:
    faults = [make(kind, fid=f"f-{i}") for i, kind in enumerate(FaultKind)]
    faults += [make(FaultKind.XID, fid="x2", node="gpu-node-09", code=31)]
    reference = fire(faults, now=LATER)
    rendered = json.dumps([to_alertmanager(reference), to_pagerduty(reference)])
    rng = random.Random(7)
    for _ in range(5):
        shuffled = faults[:]
        rng.shuffle(shuffled)
        alerts = fire(shuffled, now=LATER)
        assert alerts == reference
        assert json.dumps([to_alertmanager(alerts), to_pagerduty(alerts)]) == rendered
    starts = [a.starts_at for a in reference]
    assert starts == sorted(starts)


def test_label_names_are_sanitised_and_fields_win_over_enrichment() -> None:
    fault = make(
        FaultKind.CRASHLOOP, labels={"app.kubernetes.io/name": "trainer", "pod": "stale", "empty": ""}
    )
    (alert,) = fire([fault], now=LATER)
    assert alert.labels["app_kubernetes_io_name"] == "trainer"
    assert alert.labels["pod"] == "trainer-0"
    assert "empty" not in alert.labels


# --- Alertmanager ----------------------------------------------------------------------------------------

AM_TOP = {
    "version",
    "groupKey",
    "truncatedAlerts",
    "status",
    "receiver",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "alerts",
}
AM_ALERT = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}


def assert_json_ready(value: Any) -> None:
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for item in value.values():
            assert_json_ready(item)
    elif isinstance(value, list):
        for item in value:
            assert_json_ready(item)
    else:
        assert value is None or type(value) in (str, int, bool), repr(value)


def test_alertmanager_body_is_a_version_4_webhook_grouped_by_alertname() -> None:
    faults = [
        make(FaultKind.XID, fid="a", node="gpu-node-01", code=13),
        make(FaultKind.XID, fid="b", node="gpu-node-02", code=31, labels={**GPU_LABELS, "pool": "h100-west"}),
        make(FaultKind.CRASHLOOP, fid="c"),
    ]
    alerts = fire(faults, now=LATER)
    bodies = to_alertmanager(alerts)
    assert_json_ready(bodies)
    assert [b["groupKey"] for b in bodies] == [
        '{}:{alertname="GPUXidError"}',
        '{}:{alertname="KubePodCrashLooping"}',
    ]
    xid = bodies[0]
    assert set(xid) == AM_TOP
    assert xid["version"] == "4" and xid["truncatedAlerts"] == 0
    assert xid["status"] == "firing" and xid["receiver"] == "supply-agent"
    assert xid["externalURL"] == "http://alertmanager.sandbox.local:9093"
    assert xid["groupLabels"] == {"alertname": "GPUXidError"}
    assert len(xid["alerts"]) == 2
    common = xid["commonLabels"]
    assert common["alertname"] == "GPUXidError" and common["cluster"] == "sandbox"
    assert common["severity"] == "warning" and common["customer"] == "acme"
    for differing in ("node", "xid", "pool", "Hostname"):
        assert differing not in common
    assert set(xid["commonAnnotations"]) == {"runbook_url"}
    for item in xid["alerts"]:
        assert set(item) == AM_ALERT
        assert item["status"] == "firing"
        assert item["endsAt"] == FIRING_ENDS_AT == "0001-01-01T00:00:00Z"
        assert RFC3339_Z.match(item["startsAt"])
    assert {i["labels"]["node"] for i in xid["alerts"]} == {"gpu-node-01", "gpu-node-02"}
    assert {i["fingerprint"] for i in xid["alerts"]} == {a.fingerprint for a in alerts[:2]}
    assert json.loads(json.dumps(bodies)) == bodies


def test_alertmanager_group_by_more_labels_and_resolved_alerts() -> None:
    alerts = fire(
        [make(FaultKind.XID, fid="a", node="n1"), make(FaultKind.XID, fid="b", node="n2")], now=LATER
    )
    bodies = to_alertmanager(alerts, group_by=("alertname", "node"), receiver="oncall")
    assert [b["groupKey"] for b in bodies] == [
        '{}:{alertname="GPUXidError", node="n1"}',
        '{}:{alertname="GPUXidError", node="n2"}',
    ]
    assert bodies[0]["groupLabels"] == {"alertname": "GPUXidError", "node": "n1"}
    assert bodies[0]["receiver"] == "oncall"
    resolved = alerts[0].model_copy(update={"status": "resolved", "ends_at": LATER})
    (body,) = to_alertmanager([resolved])
    assert body["status"] == "resolved"
    assert body["alerts"][0]["endsAt"] == "2025-03-01T13:00:00Z"
    (mixed,) = to_alertmanager([resolved, alerts[1]])
    assert mixed["status"] == "firing"


# --- PagerDuty -------------------------------------------------------------------------------------------

PD_EVENT = {"id", "event_type", "resource_type", "occurred_at", "agent", "client", "data"}
PD_INCIDENT = {
    "id",
    "type",
    "self",
    "html_url",
    "number",
    "status",
    "incident_key",
    "created_at",
    "title",
    "service",
    "assignees",
    "escalation_policy",
    "teams",
    "priority",
    "urgency",
    "conference_bridge",
    "resolve_reason",
}


def test_pagerduty_body_is_a_v3_incident_triggered_webhook() -> None:
    alerts = fire([make(FaultKind.OFF_BUS), make(FaultKind.THERMAL, fid="t", gpu=4)], now=LATER)
    bodies = to_pagerduty(alerts, service_id="PSVC123", escalation_policy_id="PEP456")
    assert_json_ready(bodies)
    assert len(bodies) == len(alerts) == 2
    for body, alert in zip(bodies, alerts, strict=True):
        assert set(body) == {"event"}
        event = body["event"]
        assert set(event) == PD_EVENT
        assert event["event_type"] == "incident.triggered"
        assert event["resource_type"] == "incident"
        assert event["agent"] is None and event["client"] is None
        assert RFC3339_Z.match(event["occurred_at"])
        assert re.fullmatch(r"[0-9A-Z]{26}", event["id"])
        data = event["data"]
        assert set(data) == PD_INCIDENT
        assert data["type"] == "incident" and data["status"] == "triggered"
        assert re.fullmatch(r"Q[0-9A-Z]{13}", data["id"])
        assert data["self"] == f"https://api.pagerduty.com/incidents/{data['id']}"
        assert data["html_url"].endswith(f"/incidents/{data['id']}")
        assert isinstance(data["number"], int) and data["number"] > 0
        assert data["incident_key"] == alert.fingerprint
        assert data["created_at"] == event["occurred_at"]
        assert data["title"] == alert.annotations["summary"]
        assert data["service"]["id"] == "PSVC123" and data["service"]["type"] == "service_reference"
        assert {"summary", "self", "html_url"} <= set(data["service"])
        assert data["escalation_policy"]["id"] == "PEP456"
        assert data["escalation_policy"]["type"] == "escalation_policy_reference"
        assert data["assignees"] == [] and data["teams"] == []
        assert (
            data["priority"] is None and data["conference_bridge"] is None and data["resolve_reason"] is None
        )
    urgencies = {a.alertname: b["event"]["data"]["urgency"] for a, b in zip(alerts, bodies, strict=True)}
    assert urgencies == {"GPUFallenOffBus": "high", "GPUThermalThrottling": "low"}
    ids = [b["event"]["data"]["id"] for b in bodies] + [b["event"]["id"] for b in bodies]
    assert len(set(ids)) == 4
    assert to_pagerduty(alerts, service_id="PSVC123", escalation_policy_id="PEP456") == bodies


def test_pagerduty_incident_alerts_carry_the_node_gpu_and_xid() -> None:
    (alert,) = fire([make(FaultKind.XID, code=62)], now=T0)
    (incident,) = to_pagerduty([alert])
    doc = pagerduty_incident_alerts(alert)
    assert_json_ready(doc)
    assert set(doc) == {"alerts", "limit", "offset", "more"}
    assert doc["limit"] == 25 and doc["offset"] == 0 and doc["more"] is False
    (item,) = doc["alerts"]
    assert item["type"] == "alert" and item["status"] == "triggered"
    assert item["alert_key"] == alert.fingerprint == incident["event"]["data"]["incident_key"]
    assert item["incident"] == {"id": incident["event"]["data"]["id"], "type": "incident_reference"}
    assert item["severity"] == "critical"
    assert item["summary"] == alert.annotations["summary"]
    assert RFC3339_Z.match(item["created_at"])
    assert item["body"]["type"] == "alert_body" and item["body"]["contexts"] == []
    details = item["body"]["details"]
    assert details["node"] == "gpu-node-03"
    assert details["gpu"] == "2"
    assert details["xid"] == "62"
    assert details["UUID"] == GPU_LABELS["gpu_uuid"]
    assert details["alertname"] == "GPUXidError"
    assert details["description"] == alert.annotations["description"]
    assert details["runbook_url"] == alert.annotations["runbook_url"]


def test_rendered_bodies_do_not_reveal_the_injected_fault() -> None:
    faults = [
        make(kind, fid=f"secret-fault-{i}", detail="injected by the eval") for i, kind in enumerate(FaultKind)
    ]
    alerts = fire(faults, now=LATER)
    text = json.dumps(
        [to_alertmanager(alerts), to_pagerduty(alerts), [pagerduty_incident_alerts(a) for a in alerts]]
    )
    assert "secret-fault" not in text
    assert "injected by the eval" not in text


# --- the rules table and its documentation -----------------------------------------------------------------


def test_rule_templates_use_only_label_references() -> None:
    for rule in all_rules():
        for template in (rule.summary, rule.description):
            leftovers = re.sub(r"\{\{\s*\$labels\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}", "", template)
            assert "{{" not in leftovers and "}}" not in leftovers, rule.alert
        assert rule.runbook_url.startswith("http")
        assert rule.expr and rule.severity in ("critical", "warning", "info")


def test_docs_table_lists_every_alert_and_expression() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "alerts.md").read_text()
    for rule in all_rules():
        assert f"`{rule.alert}`" in doc, rule.alert
        assert rule.expr.replace("|", "\\|") in doc, rule.alert
    for kind in FaultKind:
        assert f"`{kind.value}`" in doc, kind
