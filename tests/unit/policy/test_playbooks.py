"""Playbook schema, loader errors (file, line, field), matching, the shipped set and ``playbooks check``."""

from __future__ import annotations

import shutil
import textwrap
from datetime import timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from supply_agent.cli.playbooks import register
from supply_agent.policy import (
    GlobalLimits,
    IntOrPercent,
    MassFailure,
    Playbook,
    PlaybookError,
    PlaybookSetError,
    check,
    load_playbooks,
)
from tools.catalogue import CATALOGUE, TOOLS

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "playbooks"
# One playbook per file, named after its id: what the loader must find, known without the loader.
SHIPPED_IDS = {p.stem for p in SHIPPED.glob("*.yaml") if not p.name.startswith("_")}

# The sandbox fleet's alerts (docs/alerts.md), with the labels that tell them apart.
FLEET_ALERTS = {
    "GPUXidError",
    "GPUFallenOffBus",
    "GPUEccUncorrectable",
    "GPURowRemapPending",
    "GPURowRemapFailure",
    "GPUThermalThrottling",
    "KubeNodeNotReady",
    "KubeNodeUnreachable",
    "NodeDown",
    "NodeAgentDown",
    "KubeNodeDiskPressure",
    "KubePodCrashLooping",
    "KubePodOOMKilled",
    "KubePodStuckTerminating",
    "GPUMeteringAnomaly",
}
NODE_WRITES = {"k8s.cordon_node", "k8s.uncordon_node", "k8s.taint_node", "k8s.untaint_node", "k8s.drain_node"}

GOOD = """\
id: good
title: Good
severity: warning
source: CONTAINMENT.md
match:
  alertnames: [GPUXidError]
  xids: [79]
runbook:
  - name: read
    tool: nvml.gpu_health
    params: {node: "${labels.node}"}
  - name: cordon
    tool: k8s.cordon_node
    params: {node: "${labels.node}"}
    verify: {check: node_unschedulable, timeout: 1m}
    on_failure: rollback
"""


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def only(errors: list[PlaybookError]) -> PlaybookError:
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


# -- the shipped set -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    return load_playbooks(SHIPPED)


def test_shipped_set_checks_clean(tmp_path: Path) -> None:
    assert len(SHIPPED_IDS) >= 18
    assert check(SHIPPED) == []
    # The same check on a copy with one broken file is not clean: the check can fail.
    copy = tmp_path / "playbooks"
    shutil.copytree(SHIPPED, copy)
    broken = copy / "disk-pressure.yaml"
    broken.write_text(broken.read_text() + "bogus: 1\n")
    err = only(check(copy))
    assert (err.file, err.field) == (str(broken), "bogus")


def test_shipped_set_has_every_class(shipped) -> None:
    assert {p.id for p in shipped} == SHIPPED_IDS
    assert {p.id for p in shipped} >= {
        "xid-fallen-off-bus",
        "xid-row-remap",
        "xid-row-remap-failure",
        "xid-ecc",
        "xid-ecc-contained",
        "xid-nvlink",
        "xid-gsp",
        "xid-application",
        "ecc-uncorrectable",
        "thermal-throttling",
        "node-notready",
        "network-partition",
        "disk-pressure",
        "stuck-terminating",
        "tenant-crashloop",
        "tenant-oomkilled",
        "double-metering",
        "node-agent-down",
    }
    for pb in shipped:
        assert pb.source.strip(), pb.id
        assert pb.runbook, pb.id
        assert all(step.tool in TOOLS for step in pb.runbook), pb.id
        assert {a for m in pb.match for a in m.alertnames} <= FLEET_ALERTS, pb.id


def test_shipped_xid_playbooks_cite_nvidia(shipped) -> None:
    by_xid = [pb for pb in shipped if any(m.xids for m in pb.match)]
    assert {pb.id for pb in by_xid} == {
        "xid-application",
        "xid-ecc",
        "xid-ecc-contained",
        "xid-fallen-off-bus",
        "xid-gsp",
        "xid-nvlink",
        "xid-row-remap",
        "xid-row-remap-failure",
    }
    for pb in by_xid:
        assert "docs.nvidia.com/deploy/xid-errors" in pb.source or "health.go" in pb.source, pb.id


# What each immediate bucket means for the node (NVIDIA's Xid Catalog; xid_buckets.csv): leave it in
# service (the application's problem, or nothing), or take it out until a human resets or reboots it.
IN_SERVICE = {"RESTART_APP", "IGNORE", "WORKFLOW_XID_45"}


def test_every_catalogued_xid_has_a_response_that_follows_its_bucket(shipped) -> None:
    """Every code in NVIDIA's catalogue matches a playbook; an in-service bucket's playbook never takes
    the node out of service, any other bucket's does (cordon or drain). Codes whose own playbook the
    catalogue disagrees with are listed (they are the README's XID table's exceptions)."""
    from supply_agent.policy.xids import bucket_of, load_catalogue

    disagree = []
    for entry in load_catalogue().entries:
        hits = shipped.match("GPUXidError", {"xid": str(entry.code), "node": "n1"})
        assert hits, f"XID {entry.code} has no playbook"
        tools = {s.tool for s in hits[0].runbook}
        out_of_service = bool(tools & {"k8s.cordon_node", "k8s.drain_node", "k8s.taint_node"})
        bucket = bucket_of(entry.code) or shipped.limits.xid_uncatalogued
        if out_of_service == (bucket in IN_SERVICE):
            disagree.append((entry.code, bucket, hits[0].id))
    # 63 (row remap recorded) and 94 (contained ECC): the catalogue says IGNORE / RESTART_APP; our own
    # playbooks for them keep the node out of service while the remap or the page retirement is pending.
    assert {code for code, _, _ in disagree} <= {63, 94}, disagree


def test_a_clause_naming_codes_beats_one_naming_their_bucket() -> None:
    from supply_agent.policy.matching import Match, specificity

    codes = Match(alertnames=["GPUXidError"], xids=[46, 62])
    bucket = Match(alertnames=["GPUXidError"], xid_buckets=["RESET_GPU"])
    assert specificity(codes) < specificity(bucket)
    with pytest.raises(ValueError, match=r"Input should be"):
        Match(alertnames=["GPUXidError"], xid_buckets=["REBOOT_PLEASE"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("alertname", "labels", "expected"),
    [
        ("GPUXidError", {"xid": "79", "node": "n1"}, "xid-fallen-off-bus"),
        ("GPUFallenOffBus", {"xid": "79"}, "xid-fallen-off-bus"),
        ("GPUXidError", {"xid": "13"}, "xid-application"),
        ("GPUXidError", {"err_code": "43"}, "xid-application"),
        ("GPUXidError", {"xid": "48"}, "xid-ecc"),
        ("GPUXidError", {"xid": "95"}, "xid-ecc"),
        ("GPUXidError", {"xid": "94"}, "xid-ecc-contained"),
        ("GPUXidError", {"xid": "63"}, "xid-row-remap"),
        ("GPURowRemapPending", {"xid": "63"}, "xid-row-remap"),
        ("GPURowRemapFailure", {"xid": "64"}, "xid-row-remap-failure"),
        ("GPUXidError", {"xid": "74"}, "xid-nvlink"),
        ("GPUXidError", {"xid": "120"}, "xid-gsp"),
        # By the catalogue's bucket, where no playbook names the code:
        ("GPUXidError", {"xid": "46"}, "xid-reset-gpu"),
        ("GPUXidError", {"xid": "140"}, "xid-reset-gpu"),
        ("GPUXidError", {"xid": "8"}, "xid-application"),
        ("GPUXidError", {"xid": "92"}, "xid-ignore"),
        ("GPUXidError", {"xid": "171"}, "xid-reset-gpu"),  # no bucket: _global.yaml's xid_uncatalogued
        ("GPUXidError", {"xid": "9999"}, "xid-reset-gpu"),  # not in the catalogue at all
        ("GPUEccUncorrectable", {"xid": "48"}, "ecc-uncorrectable"),
        ("GPUThermalThrottling", {}, "thermal-throttling"),
        ("NodeAgentDown", {"job": "node-agent"}, "node-agent-down"),
        ("KubePodCrashLooping", {"namespace": "supply-agent-system"}, "node-agent-down"),
        ("KubePodCrashLooping", {"namespace": "tenant-a"}, "tenant-crashloop"),
        ("KubePodOOMKilled", {"namespace": "tenant-a"}, "tenant-oomkilled"),
        ("KubePodStuckTerminating", {"namespace": "tenant-a"}, "stuck-terminating"),
        ("KubeNodeDiskPressure", {}, "disk-pressure"),
        ("GPUMeteringAnomaly", {}, "double-metering"),
        ("NodeDown", {}, "node-notready"),
    ],
)
def test_match_picks_the_playbook(shipped, alertname: str, labels: dict[str, str], expected: str) -> None:
    assert [p.id for p in shipped.match(alertname, labels)][:1] == [expected]


def test_every_fleet_alert_has_a_playbook(shipped) -> None:
    labels = {
        "GPUFallenOffBus": {"xid": "79"},
        "GPUEccUncorrectable": {"xid": "48"},
        "GPURowRemapPending": {"xid": "63"},
        "GPURowRemapFailure": {"xid": "64"},
        "NodeAgentDown": {"job": "node-agent"},
        "KubePodCrashLooping": {"namespace": "tenant-a", "reason": "CrashLoopBackOff"},
        "KubePodOOMKilled": {"namespace": "tenant-a", "reason": "OOMKilled"},
        "KubePodStuckTerminating": {"namespace": "tenant-a"},
    }
    for alertname in FLEET_ALERTS - {"GPUXidError"}:
        assert shipped.match(alertname, {"node": "n1", **labels.get(alertname, {})}), alertname
    for xid in (13, 31, 43, 45, 68, 48, 63, 64, 74, 79, 94, 95, 119, 120):
        hits = shipped.match("GPUXidError", {"xid": str(xid)})
        # The playbook naming the code wins; only bucket playbooks may match it too.
        assert any(xid in m.xids for m in hits[0].match), xid
        assert all(not any(xid in m.xids for m in pb.match) for pb in hits[1:]), xid


def test_tenant_and_system_pods_never_share_a_playbook(shipped) -> None:
    ids = [p.id for p in shipped.match("KubePodCrashLooping", {"namespace": "kube-system"})]
    assert "tenant-crashloop" not in ids
    assert [p.id for p in shipped.match("KubePodCrashLooping", {"namespace": "supply-agent-system"})] == [
        "node-agent-down"
    ]


def test_dead_node_versus_partition(shipped) -> None:
    # Before the node's events are read, both are candidates; after, exactly one.
    assert {p.id for p in shipped.match("KubeNodeNotReady", {})} == {"node-notready", "network-partition"}
    dead = shipped.match("KubeNodeNotReady", {}, events=["NodeNotReady", "HostUnresponsive"])
    cut = shipped.match("KubeNodeUnreachable", {}, events=["NodeNotReady", "ControlPlanePathDown"])
    assert [p.id for p in dead] == ["node-notready"]
    assert [p.id for p in cut] == ["network-partition"]
    assert cut[0].write_tools == []


def test_match_is_deterministic_most_specific_first(tmp_path: Path) -> None:
    write(tmp_path, "broad.yaml", GOOD.replace("id: good", "id: a-broad").replace("  xids: [79]\n", ""))
    write(tmp_path, "narrow.yaml", GOOD.replace("id: good", "id: z-narrow"))
    pset = load_playbooks(tmp_path)
    for _ in range(3):
        assert [p.id for p in pset.match("GPUXidError", {"xid": "79"})] == ["z-narrow", "a-broad"]
    assert [p.id for p in pset.match("GPUXidError", {"xid": "13"})] == ["a-broad"]
    assert pset.match("NodeDown", {}) == []


def test_node_agent_down_never_drains_or_cordons(shipped) -> None:
    pb = shipped.get("node-agent-down")
    assert {"k8s.drain_node", "k8s.cordon_node"} <= set(pb.containment.forbidden_tools)
    assert [s.tool for s in pb.runbook][-1] == "escalate.human"  # it reads, then pages a human
    assert pb.write_tools == []
    assert not pb.containment.permits("k8s.drain_node")


@pytest.mark.parametrize("pid", ["xid-application", "tenant-crashloop", "tenant-oomkilled"])
def test_application_faults_never_touch_nodes_or_restart(shipped, pid: str) -> None:
    pb = shipped.get(pid)
    assert pb.runbook, pid
    forbidden = set(pb.containment.forbidden_tools)
    assert NODE_WRITES | {"k8s.rollout_restart", "k8s.delete_pod"} <= forbidden
    assert pb.containment.max_nodes == 0
    assert not set(pb.write_tools) & (NODE_WRITES | {"k8s.rollout_restart", "k8s.delete_pod"})


def test_fatal_xids_need_the_node_agent_to_confirm(shipped) -> None:
    for pid in ("xid-fallen-off-bus", "xid-ecc", "xid-gsp", "xid-nvlink", "xid-row-remap-failure"):
        pre = shipped.get(pid).containment.preconditions
        assert "gpu_fault_confirmed" in [c.check for c in pre], pid
        assert any(getattr(c, "condition", None) == "GpuHealthy" and c.status == "False" for c in pre), pid


def test_write_steps_are_verified(shipped) -> None:
    writes = [(pb.id, step) for pb in shipped for step in pb.runbook if step.tool in pb.write_tools]
    # Every playbook but the read-only ones writes something; the check below is not vacuous.
    read_only = {
        "network-partition",
        "node-agent-down",
        "rack-cooling",
        "pool-wide",
        "rack-power",
        "switch-down",
        "driver-rollout",
    }
    assert {pid for pid, _ in writes} == SHIPPED_IDS - read_only
    assert {step.tool for _, step in writes} >= {"k8s.cordon_node", "k8s.drain_node", "billing.issue_credit"}
    for pid, step in writes:
        assert step.verify is not None, (pid, step.name)


# -- errors: file, line, field ---------------------------------------------------------------------------
def test_good_playbook_loads(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    pset = load_playbooks(tmp_path)
    (pb,) = pset.playbooks
    assert pb.runbook[1].verify is not None
    assert pb.runbook[1].verify.timeout == timedelta(minutes=1)
    assert pb.runbook[1].rollback_tool == "k8s.uncordon_node"
    assert pset.files["good"] == tmp_path / "good.yaml"


def test_unknown_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        GOOD.replace("    on_failure: rollback\n", "    on_failure: rollback\n    retires: 3\n"),
    )
    err = only(check(tmp_path))
    assert (err.file, err.line, err.field) == (str(path), 17, "runbook[1].retires")
    assert "unknown field 'retires'" in err.message


def test_unknown_field_in_a_flat_verify_suggests_the_name(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p.yaml",
        GOOD.replace("check: node_unschedulable, timeout: 1m", "check: node_unschedulable, timout: 1m"),
    )
    err = only(check(tmp_path))
    assert (err.line, err.field) == (15, "runbook[1].verify.timout")
    assert "did you mean 'timeout'" in err.message


def test_wrong_type(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p.yaml",
        GOOD.replace("severity: warning\n", "severity: warning\ncontainment:\n  max_nodes: lots\n"),
    )
    err = only(check(tmp_path))
    assert (err.line, err.field) == (5, "containment.max_nodes")
    assert "integer" in err.message


def test_limit_above_100_percent(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    path = write(
        tmp_path,
        "_global.yaml",
        """\
        kill_switch: false
        blast_radius:
          pool_cordoned: {soft: 0.1, hard: 1.5}
          fleet_cordoned: {soft: "5%", hard: "120%"}
        mass_failure:
          max_unhealthy_pool: 140%
        circuit_breaker:
          percentage: 150
        """,
    )
    errors = check(tmp_path)
    got = {(e.file, e.line, e.field) for e in errors}
    assert got == {
        (str(path), 3, "blast_radius.pool_cordoned.hard"),
        (str(path), 4, "blast_radius.fleet_cordoned.hard"),
        (str(path), 6, "mass_failure.max_unhealthy_pool"),
        (str(path), 8, "circuit_breaker.percentage"),
    }
    assert all("100" in e.message for e in errors)


def test_unknown_tool(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", GOOD.replace("tool: nvml.gpu_health", "tool: k8s.reboot_node"))
    err = only(check(tmp_path))
    assert (err.line, err.field) == (10, "runbook[0].tool")
    assert "unknown tool 'k8s.reboot_node'" in err.message


def test_rollback_without_an_inverse(tmp_path: Path) -> None:
    text = GOOD.replace("tool: k8s.cordon_node", "tool: k8s.drain_node").replace(
        "check: node_unschedulable, timeout: 1m", "check: pods_on_node, max: 0"
    )
    write(tmp_path, "p.yaml", text)
    err = only(check(tmp_path))
    assert (err.line, err.field) == (16, "runbook[1].on_failure.action")
    assert "inverse" in err.message and "k8s.drain_node" in err.message
    # The long form points at `action`; a retry that ends in a rollback is checked too.
    write(tmp_path, "p.yaml", text.replace("on_failure: rollback", "on_failure:\n      action: rollback"))
    assert (only(check(tmp_path)).line, only(check(tmp_path)).field) == (17, "runbook[1].on_failure.action")
    write(
        tmp_path,
        "p.yaml",
        text.replace("on_failure: rollback", "on_failure: {action: retry, retries: 2, then: rollback}"),
    )
    assert only(check(tmp_path)).field == "runbook[1].on_failure.then"


def test_retry_must_be_bounded(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", GOOD.replace("on_failure: rollback", "on_failure: retry"))
    err = only(check(tmp_path))
    assert err.line == 16 and "bounded" in err.message


def test_missing_source(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", GOOD.replace("source: CONTAINMENT.md\n", ""))
    err = only(check(tmp_path))
    assert (err.line, err.field) == (1, "source")
    assert "missing" in err.message


def test_missing_field_in_a_step_points_at_the_step(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", GOOD.replace("    tool: nvml.gpu_health\n", ""))
    err = only(check(tmp_path))
    assert (err.line, err.field) == (9, "runbook[0].tool")


def test_empty_match(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p.yaml",
        GOOD.replace("  alertnames: [GPUXidError]\n  xids: [79]\n", "  node_events: [X]\n"),
    )
    err = only(check(tmp_path))
    assert (err.line, err.field) == (5, "match")
    assert "empty match" in err.message
    write(
        tmp_path, "p.yaml", GOOD.replace("match:\n  alertnames: [GPUXidError]\n  xids: [79]\n", "match: []\n")
    )
    assert only(check(tmp_path)).field == "match"


def test_duplicate_id(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    path = write(tmp_path, "b.yaml", "# same id as a.yaml\n" + GOOD)
    err = only(check(tmp_path))
    assert (err.file, err.line, err.field) == (str(path), 2, "id")
    assert "duplicate playbook id 'good'" in err.message and "a.yaml:1" in err.message


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", GOOD.replace("title: Good", "title: Good\n  bad: indent"))
    err = only(check(tmp_path))
    assert (err.file, err.line, err.field) == (str(path), 3, "<yaml>")
    write(tmp_path, "p.yaml", "id: x\ntitle: [unclosed\n")
    assert "line 2" in only(check(tmp_path)).message


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", GOOD.replace("severity: warning\n", "severity: warning\nseverity: critical\n"))
    err = only(check(tmp_path))
    assert (err.line, err.field) == (4, "severity") and "duplicate key" in err.message


def test_forbidden_tool_in_runbook_and_unbounded_params(tmp_path: Path) -> None:
    text = GOOD.replace("runbook:\n", "containment:\n  forbidden_tools: [node-writes]\nrunbook:\n").replace(
        'params: {node: "${labels.node}"}\n    verify', 'params: {node: "*"}\n    verify'
    )
    write(tmp_path, "p.yaml", text)
    got = {(e.line, e.field) for e in check(tmp_path)}
    # node-writes also forbids k8s.uncordon_node, the rollback of the cordon.
    assert got == {(15, "runbook[1].tool"), (16, "runbook[1].params.node"), (18, "runbook[1].on_failure")}


def test_template_errors(tmp_path: Path) -> None:
    text = GOOD.replace(
        'params: {node: "${labels.node}"}\n  - name: cordon',
        'params: {node: "${label.node}", x: "${steps.cordon.id}"}\n  - name: cordon',
    )
    write(tmp_path, "p.yaml", text)
    got = {(e.line, e.field) for e in check(tmp_path)}
    assert got == {(11, "runbook[0].params.node"), (11, "runbook[0].params.x")}


def test_write_without_verify(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", GOOD.replace("    verify: {check: node_unschedulable, timeout: 1m}\n", ""))
    err = only(check(tmp_path))
    assert (err.line, err.field) == (12, "runbook[1].verify")


def test_several_errors_in_several_files_are_all_reported(tmp_path: Path) -> None:
    a = write(
        tmp_path,
        "a.yaml",
        GOOD.replace("severity: warning", "severity: bad").replace("nvml.gpu_health", "nope"),
    )
    b = write(tmp_path, "b.yaml", GOOD.replace("id: good", "id: b").replace("source: CONTAINMENT.md\n", ""))
    c = write(tmp_path, "c.yaml", "id: c\n  title: broken\n")
    write(tmp_path, "d.yaml", GOOD.replace("id: good", "id: d"))
    g = write(tmp_path, "_global.yaml", "deny:\n  namespaces: [kube-system]\napprovals: {ttl: 2d}\n")
    errors = check(tmp_path)
    assert [(e.file, e.line, e.field) for e in errors] == [
        (str(g), 2, "deny.namespaces"),
        (str(g), 3, "approvals.ttl"),
        (str(a), 3, "severity"),
        (str(a), 10, "runbook[0].tool"),
        (str(b), 1, "source"),
        (str(c), 2, "<yaml>"),
    ]
    with pytest.raises(PlaybookSetError) as raised:
        load_playbooks(tmp_path)
    assert raised.value.errors == errors


def test_directory_problems(tmp_path: Path) -> None:
    assert only(check(tmp_path / "missing")).line == 0
    assert "no playbooks" in only(check(tmp_path)).message
    write(tmp_path, "empty.yaml", "")
    assert "empty file" in only(check(tmp_path)).message


# -- global limits ------------------------------------------------------------------------------------
def test_missing_global_means_safe_defaults(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    pset = load_playbooks(tmp_path)
    assert [p.id for p in pset] == ["good"]
    limits = pset.limits
    assert limits == GlobalLimits()
    assert limits.kill_switch is False
    assert {"kube-system", "supply-agent-system"} <= set(limits.deny.namespaces)
    assert {(a.verb, a.resource) for a in limits.deny.actions} >= {
        ("delete", "nodes"),
        ("delete", "namespaces"),
        ("delete", "persistentvolumeclaims"),
        ("delete", "secrets"),
    }
    assert limits.circuit_breaker.enabled and limits.approvals.approvers == []
    assert limits.rate_limits.per_hour_for("k8s.drain_node") >= 1


def test_shipped_global(shipped) -> None:
    limits = shipped.limits
    assert limits != GlobalLimits()  # _global.yaml was read, not the defaults
    assert (limits.blast_radius.pool_cordoned.soft, limits.blast_radius.pool_cordoned.hard) == (0.2, 0.34)
    assert (limits.blast_radius.fleet_cordoned.soft, limits.blast_radius.fleet_cordoned.hard) == (0.1, 0.2)
    assert limits.kill_switch is False
    assert limits.circuit_breaker.duration == timedelta(minutes=30)
    assert str(limits.mass_failure.max_unhealthy_pool) == "20%"


def test_mandatory_denies_cannot_be_removed(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    write(tmp_path, "_global.yaml", "deny:\n  actions: [delete nodes, {verb: delete, resource: pvc}]\n")
    err = only(check(tmp_path))
    assert (err.line, err.field) == (2, "deny.actions")
    assert "delete namespaces" in err.message and "delete secrets" in err.message


def test_cluster_api_rounding_and_short_circuit() -> None:
    forty = IntOrPercent.parse("40%")
    assert forty.scaled(25) == 10 and forty.scaled(6) == 2
    mf = MassFailure(max_unhealthy_pool="40%", max_unhealthy_fleet=3, always_allow_nodes=0)
    assert mf.allows(10, 25, "pool") and not mf.allows(11, 25, "pool")
    assert mf.allows(3, 1000, "fleet") and not mf.allows(4, 1000, "fleet")
    # One failing node in a tiny pool is never a mass failure (the default floor).
    assert MassFailure(max_unhealthy_pool="40%").allows(1, 2, "pool")


def test_soft_and_hard_limits() -> None:
    limits = GlobalLimits()
    credit = limits.blast_radius.credit_usd_per_incident
    assert credit.verdict(credit.soft) == "allow"
    assert credit.verdict(credit.soft + 1) == "ask"
    assert credit.verdict(credit.hard + 1) == "deny"
    br = limits.blast_radius
    assert br.cordon_verdict(1, 4, 12) == "allow"  # always_allow_nodes
    assert br.cordon_verdict(40, 100, 100) == "deny"


def test_circuit_breaker_trips_on_cordons_or_failed_verifications() -> None:
    cb = GlobalLimits.model_validate(
        {"circuit_breaker": {"percentage": "50%", "duration": "5m"}}
    ).circuit_breaker
    assert cb.percentage == 50 and cb.duration == timedelta(minutes=5)
    assert not cb.trips(5, 10) and cb.trips(6, 10)
    assert cb.trips(0, 10, failed_verifications=cb.failed_verifications)


def test_models_forbid_extra_fields_everywhere() -> None:
    with pytest.raises(ValueError, match="Extra inputs"):
        GlobalLimits.model_validate({"blast_radius": {"pool_cordoned": {"soft": 0.1, "hard": 0.2, "x": 1}}})
    with pytest.raises(ValueError, match="Extra inputs"):
        Playbook.model_validate({"id": "x", "bogus": 1})


# -- the CLI ----------------------------------------------------------------------------------------------
@pytest.fixture
def cli() -> click.Group:
    @click.group()
    def root() -> None:
        """Test root."""

    register(root)
    return root


def test_cli_check_shipped(cli: click.Group) -> None:
    result = CliRunner().invoke(cli, ["playbooks", "check", str(SHIPPED)])
    assert result.exit_code == 0, result.output
    assert "no errors" in result.output
    for pid in SHIPPED_IDS:
        assert pid in result.output, pid


def test_cli_check_lists_every_error(cli: click.Group, tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", GOOD.replace("nvml.gpu_health", "nope"))
    b = write(tmp_path, "b.yaml", GOOD.replace("id: good", "id: b").replace("source: CONTAINMENT.md\n", ""))
    result = CliRunner().invoke(cli, ["playbooks", "check", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith(f"{a}:10: runbook[0].tool: unknown tool 'nope'")
    assert lines[1] == f"{b}:1: source: required field is missing"


def test_cli_check_defaults_to_playbooks_dir(cli: click.Group, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "playbooks", "good.yaml", GOOD)
    result = CliRunner().invoke(cli, ["playbooks", "check"])
    assert result.exit_code == 0, result.output
    (tmp_path / "playbooks" / "good.yaml").unlink()
    result = CliRunner().invoke(cli, ["playbooks", "check"])
    assert result.exit_code == 1 and "playbooks:0: <file>: no playbooks" in result.stdout


def test_shipped_params_fit_the_tool_inputs(shipped) -> None:
    """Every parameter a shipped step passes is a field of its tool's input model, and every required
    field is given (templates are filled at run time, so only names are checked here)."""
    steps = [(pb, step) for pb in shipped for step in pb.runbook]
    assert {pb.id for pb, _ in steps} == SHIPPED_IDS  # every playbook has steps to check
    for pb, step in steps:
        fields = CATALOGUE[step.tool].input.model_fields
        assert set(step.params) <= set(fields), (pb.id, step.name, set(step.params) - set(fields))
        required = {name for name, f in fields.items() if f.is_required()}
        assert required <= set(step.params), (pb.id, step.name, required - set(step.params))
