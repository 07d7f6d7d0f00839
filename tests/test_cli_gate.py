"""`playbooks explain`, `freeze`/`unfreeze` and `breaker` against a sandbox fleet."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sandbox.fleet.admin import AdminClient
from supply_agent.cli import main

ROOT = Path(__file__).resolve().parent.parent


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


def test_explain_freeze_and_breaker(kubeconfig: Path, admin: AdminClient) -> None:
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

    from supply_agent.worldview import set_breaker
    from tools.kubernetes import KubeTools

    kube = KubeTools.from_kubeconfig(kubeconfig)
    set_breaker(kube, True, "3 failed verifications", "gate")
    assert "TRIPPED" in runner.invoke(main, ["breaker", "status", "--kubeconfig", str(kubeconfig)]).output
    assert _explain(kubeconfig, cordon)["verdict"] == "deny"
    assert "CLOSED" in runner.invoke(main, ["breaker", "reset", "--kubeconfig", str(kubeconfig)]).output
    assert _explain(kubeconfig, cordon)["verdict"] == "allow"
    kube.close()


def test_explain_rejects_bad_input(kubeconfig: Path) -> None:
    result = CliRunner().invoke(main, ["playbooks", "explain", "{not json", "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 2 and "not an action" in result.output
    result = CliRunner().invoke(
        main, ["playbooks", "explain", '{"tool": "k8s.get_node"}', "--kubeconfig", "/nope"]
    )
    assert result.exit_code == 2 and "does not exist" in result.output
