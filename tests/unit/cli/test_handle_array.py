"""`supply-agent handle` on what `supply-agent sandbox alerts` prints: a JSON array of webhook bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sandbox.fleet.admin import AdminClient
from supply_agent.cli import main


@pytest.fixture(autouse=True)
def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from supply_agent.settings import get_settings

    monkeypatch.setenv("SUPPLY_AGENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SUPPLY_AGENT_VERIFY_CAP_S", "5")
    monkeypatch.setenv("SUPPLY_AGENT_PLANNER", "runbook")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _handle(kubeconfig: Path, alert_file: Path) -> Result:
    return CliRunner().invoke(
        main, ["handle", str(alert_file), "--kubeconfig", str(kubeconfig), "--approve", "never", "--json"]
    )


def _two_bodies(admin: AdminClient) -> list[dict]:
    """Two Alertmanager webhook bodies, one fault on each of two nodes in different pools."""
    admin.inject("off-bus", node="east-h100-00000", gpu=1)
    admin.inject("off-bus", node="west-a100-00000", gpu=2)
    admin.advance(900)
    bodies = admin.alerts("alertmanager")
    alerts = [a for b in bodies for a in b["alerts"]]
    by_node: dict[str, list[dict]] = {}
    for a in alerts:
        by_node.setdefault(a["labels"].get("node") or a["labels"].get("instance", ""), []).append(a)
    assert {"east-h100-00000", "west-a100-00000"} <= set(by_node), by_node.keys()
    template = {k: v for k, v in bodies[0].items() if k != "alerts"}
    return [
        {**template, "groupKey": f"{{}}:{{node={node!r}}}", "alerts": by_node[node]}
        for node in ("east-h100-00000", "west-a100-00000")
    ]


def test_handle_array_of_two_bodies_handles_both(
    kubeconfig: Path, admin: AdminClient, tmp_path: Path
) -> None:
    bodies = _two_bodies(admin)
    alert_file = tmp_path / "alerts.json"
    alert_file.write_text(json.dumps(bodies))
    result = _handle(kubeconfig, alert_file)
    assert result.exit_code == 0, result.output
    incidents = json.loads(result.stdout)["incidents"]
    # one handle over both bodies: the same root cause folds into one incident, which acts on both nodes
    assert len(incidents) == 1, json.dumps(incidents)[:2000]
    targets = {p["params"].get("node") for i in incidents for p in i["proposals"]}
    assert {"east-h100-00000", "west-a100-00000"} <= targets, targets
    assert len(_stored_incidents()) == 1


def test_handle_single_body_still_works(kubeconfig: Path, admin: AdminClient, tmp_path: Path) -> None:
    alert_file = tmp_path / "alert.json"
    alert_file.write_text(json.dumps(_two_bodies(admin)[0]))
    result = _handle(kubeconfig, alert_file)
    assert result.exit_code == 0, result.output
    incidents = json.loads(result.stdout)["incidents"]
    targets = {p["params"].get("node") for i in incidents for p in i["proposals"]}
    assert "east-h100-00000" in targets and "west-a100-00000" not in targets, targets


def _stored_incidents() -> list[dict]:
    result = CliRunner().invoke(main, ["incidents", "list", "--json"])
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (42, "body [2]: expected a webhook body"),
        ({"version": "4", "alerts": [{"labels": {"node": "x"}}]}, "body [2].alerts[0]: no alertname"),
        ({"version": "3", "alerts": []}, "body [2].version"),
    ],
)
def test_handle_array_bad_element_names_its_index(
    kubeconfig: Path, admin: AdminClient, tmp_path: Path, bad: object, needle: str
) -> None:
    bodies: list[object] = [*_two_bodies(admin), bad]
    alert_file = tmp_path / "alerts.json"
    alert_file.write_text(json.dumps(bodies))
    result = _handle(kubeconfig, alert_file)
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split()), result.output
    assert _stored_incidents() == []  # nothing handled


def test_handle_empty_array_is_a_usage_error(kubeconfig: Path, tmp_path: Path) -> None:
    alert_file = tmp_path / "alerts.json"
    alert_file.write_text("[]")
    result = _handle(kubeconfig, alert_file)
    assert result.exit_code == 2, result.output
    assert "empty JSON array" in result.output
    assert _stored_incidents() == []
