"""`playbooks explain`, `freeze`/`unfreeze` and `breaker` against a sandbox fleet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox.fleet.admin import AdminClient
from supply_agent.cli import main

ROOT = Path(__file__).resolve().parents[3]


def _explain(kubeconfig: Path, action: dict) -> dict:
    result = CliRunner().invoke(
        main,
        [
            "playbooks",
            "explain",
            json.dumps(action),
            "--kubeconfig",
            str(kubeconfig),
            "--dir",
            str(ROOT / "playbooks"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_explain_freeze_and_breaker(
    kubeconfig: Path, admin: AdminClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from supply_agent.settings import get_settings

    monkeypatch.setenv("SUPPLY_AGENT_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    node = "east-h100-00000"
    cordon = {"tool": "k8s.cordon_node", "params": {"node": node}, "playbook_id": "xid-fallen-off-bus"}
    before = _explain(kubeconfig, cordon)
    assert before["verdict"] == "deny" and any("not confirmed" in r for r in before["reasons"])
    admin.inject("off-bus", node=node, gpu=1)
    after = _explain(kubeconfig, cordon)
    assert after["verdict"] == "allow", after["reasons"]
    assert after["targets"]["gpus"] == 8

    runner = CliRunner()
    out = runner.invoke(
        main, ["freeze", "--kubeconfig", str(kubeconfig), "--reason", "change freeze", "--by", "sre"]
    )
    assert out.exit_code == 0, out.output
    frozen = _explain(kubeconfig, cordon)
    assert frozen["verdict"] == "deny" and any("kill switch" in r for r in frozen["reasons"])
    assert runner.invoke(main, ["unfreeze", "--kubeconfig", str(kubeconfig)]).exit_code == 0
    assert _explain(kubeconfig, cordon)["verdict"] == "allow"

    from sandbox.executor.audit import AuditLog
    from tools.kubernetes import KubeTools
    from tools.latches import BREAKER_CONFIGMAP, CONTROL_NAMESPACE

    kube = KubeTools.from_kubeconfig(kubeconfig)  # the fleet's admin: the world as a test arranges it
    kube.upsert_config_map(CONTROL_NAMESPACE, BREAKER_CONFIGMAP, {"status": "TRIPPED", "reason": "3 failed"})
    assert "TRIPPED" in runner.invoke(main, ["breaker", "status", "--kubeconfig", str(kubeconfig)]).output
    assert _explain(kubeconfig, cordon)["verdict"] == "deny"
    reset = runner.invoke(main, ["breaker", "reset", "--kubeconfig", str(kubeconfig), "--by", "oncall"])
    assert "CLOSED" in reset.output, reset.output
    assert _explain(kubeconfig, cordon)["verdict"] == "allow"
    assert kube.read_config_map(CONTROL_NAMESPACE, BREAKER_CONFIGMAP)["by"] == "oncall"
    kube.close()
    # Every human command is an executor action with its audit row: who, what, why.
    audit = AuditLog.from_url(get_settings().resolved_database_url())
    rows = [(r.tool, r.outcome, r.approver) for r in audit.records("control") if r.phase == "after"]
    assert rows == [
        ("control.freeze", "executed", "sre"),
        ("control.unfreeze", "executed", rows[1][2]),
        ("control.reset_breaker", "executed", "oncall"),
    ]
    get_settings.cache_clear()


def test_explain_rejects_bad_input(kubeconfig: Path) -> None:
    result = CliRunner().invoke(main, ["playbooks", "explain", "{not json", "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 2 and "not an action" in result.output
    result = CliRunner().invoke(
        main, ["playbooks", "explain", '{"tool": "k8s.get_node"}', "--kubeconfig", "/nope"]
    )
    assert result.exit_code == 2 and "does not exist" in result.output


def test_a_setting_that_cannot_be_read_names_its_variable_and_never_its_value(tmp_path: Path) -> None:
    from supply_agent.settings import get_settings

    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(
            main, ["incidents", "list"], env={"SUPPLY_AGENT_WORKERS": "many-s3cret-workers"}
        )
        assert out.exit_code != 0
        assert "SUPPLY_AGENT_WORKERS: Input should be a valid integer" in out.output
        assert "s3cret" not in out.output
        get_settings.cache_clear()
        out = CliRunner().invoke(
            main, ["incidents", "list"], env={"SUPPLY_AGENT_SECRETS_DIR": str(tmp_path / "absent")}
        )
        assert (
            out.exit_code != 0
            and "SUPPLY_AGENT_SECRETS_DIR=" in out.output
            and "not a directory" in out.output
        )
    finally:
        get_settings.cache_clear()


GROUPS = """node_groups:
  - name: h100-reserved
    match: {gpu_model: ["NVIDIA-H100*"], tenant_tier: [reserved]}
    source: reserved capacity, its contract's availability floor
    blast_radius: {gpus_out: {soft: 0, hard: 4}, pool_cordoned: {hard_max: 2}}
    rate_limits: {per_hour: {k8s.drain_node: 1}}
"""


def test_a_node_group_decides_on_its_nodes_and_explain_says_which(
    kubeconfig: Path, admin: AdminClient, tmp_path: Path
) -> None:
    import shutil

    books = tmp_path / "playbooks"
    shutil.copytree(ROOT / "playbooks", books)
    text = (books / "_global.yaml").read_text()
    assert "\nnode_groups: []\n" in text
    (books / "_global.yaml").write_text(text.replace("node_groups: []\n", GROUPS))
    # A playbook of the group's own (chosen at triage there) and a fleet-wide one's rule for the group.
    from tests.unit.policy.test_node_groups import RESERVED_BOOK

    (books / "xid-fallen-off-bus-reserved.yaml").write_text(RESERVED_BOOK)
    fob = books / "xid-ecc.yaml"
    fob.write_text(
        fob.read_text().replace(
            "\ncontainment:\n",
            "\ncontainment:\n  node_groups:\n    h100-reserved: {ask_for: [k8s.drain_node]}\n",
            1,
        )
    )
    reserved, on_demand = "east-h100-00000", "west-a100-00000"
    for node in (reserved, on_demand):
        admin.inject("off-bus", node=node, gpu=1)

    def explain(*args: str) -> str:
        result = CliRunner().invoke(main, ["playbooks", "explain", *args, "--dir", str(books)])
        assert result.exit_code == 0, result.output
        return result.output

    def cordon(node: str) -> dict:
        action = {"tool": "k8s.cordon_node", "params": {"node": node}, "playbook_id": "xid-fallen-off-bus"}
        return json.loads(explain(json.dumps(action), "--kubeconfig", str(kubeconfig), "--json"))

    # The reserved H100's 8 GPUs are over its group's hard limit of 4; the on-demand A100 is within the
    # fleet-wide limits.
    denied = cordon(reserved)
    assert denied["verdict"] == "deny"
    assert any("node group h100-reserved" in r and "blast_radius.gpus_out" in r for r in denied["reasons"])
    assert "node_groups.h100-reserved" in denied["limits_consulted"]
    allowed = cordon(on_demand)
    assert allowed["verdict"] == "allow", allowed["reasons"]

    text = explain("--node", reserved, "--kubeconfig", str(kubeconfig))
    assert "node group h100-reserved" in text and "tenant_tier=reserved" in text
    assert "availability floor" in text
    # The pool of 6 nodes (the fractions in nodes), and the group's cap beside its fraction.
    assert "of 6 nodes" in text and "(hard_max 2 nodes)" in text and "of 12 nodes" in text
    assert "rate_limits.per_hour.k8s.drain_node" in text and "also 1 an hour on the group's nodes" in text
    assert "the playbooks' choices on node group h100-reserved" in text
    assert "xid-fallen-off-bus-reserved" in text and "chosen at triage on these nodes" in text
    assert "xid-ecc" in text and "'ask_for': ['k8s.drain_node']" in text
    other = explain("--pool", "west-a100", "--gpu-model", "NVIDIA-A100-SXM4-80GB", "--tier", "on-demand")
    assert "no node group matches (h100-reserved): the fleet-wide limits" in other
