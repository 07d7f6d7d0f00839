"""`supply-agent playbooks explain --xid N` and `playbooks xids`: what the agent does for an XID, and why."""

from __future__ import annotations

import json

from click.testing import CliRunner

from supply_agent.cli.main import main


def _explain(code: int) -> dict[str, object]:
    result = CliRunner().invoke(main, ["playbooks", "explain", "--xid", str(code), "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def test_explain_an_xid_by_its_bucket_by_its_code_and_uncatalogued() -> None:
    reset = _explain(46)
    assert reset["bucket"] == "RESET_GPU" and reset["playbook"] == "xid-reset-gpu"
    assert reset["out_of_service"] and reset["pages"] and reset["as_catalogue_says"]
    app = _explain(8)
    assert app["bucket"] == "RESTART_APP" and app["playbook"] == "xid-application"
    assert not app["out_of_service"] and not app["pages"]
    named = _explain(79)
    assert named["playbook"] == "xid-fallen-off-bus" and named["why"] == "names XID 79"
    unknown = _explain(9999)
    assert unknown["catalogued"] is False and unknown["counted_as"] == "CONTACT_SUPPORT"
    assert unknown["out_of_service"]
    text = CliRunner().invoke(main, ["playbooks", "explain", "--xid", "92"]).output
    assert "xid-ignore" in text and "stays in service" in text and "nobody is paged" in text


def test_explain_needs_an_action_or_an_xid() -> None:
    result = CliRunner().invoke(main, ["playbooks", "explain"])
    assert result.exit_code != 0 and "--xid" in result.output


def test_the_xid_table_counts_every_catalogued_code() -> None:
    result = CliRunner().invoke(main, ["playbooks", "xids"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "172" in result.output and "RESET_GPU" in result.output
