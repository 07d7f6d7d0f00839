"""SIGKILL at each named checkpoint of an incident, in the real two-process ``supply-agent serve``.

The worker kills itself (``SUPPLY_AGENT_CRASH_AT``, :mod:`supply_agent.failpoints`) once, at one point:
after the fold, after each graph node that writes or decides, between an approval and its action,
after a click is claimed, after Slack took the prompt, after a write-back was delivered. The intake
process starts it again; the restarted worker must finish the incident with no action repeated and
none skipped: one acknowledge then one resolve in PagerDuty, every note once, one prompt and one
update in Slack, one cordon, one drain, one credit.

The points the issue measured (between the approval and the credit; a claimed click; a delivered
write-back) run in ``make test``; the rest are marked ``chaos`` (``make chaos``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from sandbox.executor.audit import AuditLog
from sandbox.fleet.admin import AdminClient
from supply_agent.intake.signing import sign_pagerduty, sign_slack
from tests.support.served import Served, serve_env, until, xid79_page
from tests.support.service_harness import APPROVER, PD_SECRET, SLACK_SECRET, outside_world
from tests.support.slack_stub import block_actions_payload, click_body

ESSENTIAL = ["node:approval", "claim", "sent"]
MORE = ["fold", "node:gate", "node:execute", "node:verify", "prompt-posted", "node:resolve"]


def _approve_value(blocks: object) -> str:
    parsed = json.loads(blocks) if isinstance(blocks, str) else blocks
    assert isinstance(parsed, list)
    return next(
        el["value"]
        for b in parsed
        if b.get("type") == "actions"
        for el in b["elements"]
        if el["action_id"] == "approve"
    )


def _killed_once_and_finished(tmp_path: Path, point: str) -> None:
    with outside_world(tmp_path) as (fleet, kubeconfig, pd, slack):
        admin = AdminClient.from_kubeconfig(kubeconfig)
        _, hook, pd_id = xid79_page(fleet, admin, pd)
        iid = f"pd-{pd_id}"
        marker = tmp_path / "crashed"
        env = serve_env(tmp_path, pd, slack)
        env.update({"SUPPLY_AGENT_CRASH_AT": point, "SUPPLY_AGENT_CRASH_ONCE": str(marker)})
        served = Served(env, kubeconfig, tmp_path / "serve.log")
        try:
            raw = json.dumps(hook).encode()
            r = httpx.post(
                f"{served.url}/webhooks/pagerduty",
                content=raw,
                headers={"x-pagerduty-signature": sign_pagerduty(raw, PD_SECRET)},
            )
            assert r.status_code == 202, r.text
            until("the Slack prompt", slack.posted, 90)
            body = click_body(
                block_actions_payload(APPROVER, "approve", _approve_value(slack.posted()[0]["blocks"]))
            )
            ts = int(time.time())
            headers = {
                "content-type": "application/x-www-form-urlencoded",
                "x-slack-request-timestamp": str(ts),
                "x-slack-signature": sign_slack(body, SLACK_SECRET, ts),
            }
            click = httpx.post(f"{served.url}/slack/interactions", content=body, headers=headers)
            assert click.status_code == 200, click.text  # stored at the edge, worker or no worker
            until("PagerDuty resolve", lambda: "resolved" in pd.statuses(pd_id), 90)
            until("the Slack prompt updated", slack.updates, 30)
            time.sleep(1.0)  # anything repeated would arrive now
            assert marker.exists(), f"the worker never reached {point}"
            assert marker.read_text() == point
            # PagerDuty: one acknowledge, then one resolve; every note once.
            assert pd.statuses(pd_id) == ["acknowledged", "resolved"]
            notes = pd.notes(pd_id)
            twice = sorted({n for n in notes if notes.count(n) > 1})
            assert notes and not twice, f"sent twice: {twice}"
            # Slack: one prompt, one update.
            assert len(slack.posted()) == 1 and len(slack.updates()) == 1
            # The fleet and the ledger: each action done once, none skipped.
            db = f"sqlite:///{tmp_path / 'var' / 'supply-agent.db'}"
            audit = AuditLog.from_url(db)
            try:
                done = [r.tool for r in audit.records(iid) if r.outcome == "executed" and r.phase == "after"]
            finally:
                audit.engine.dispose()
            for tool in ("k8s.cordon_node", "k8s.drain_node", "billing.issue_credit", "notify.customer"):
                assert done.count(tool) == 1, (tool, done)
            truth = admin.truth()
            assert sum(p["nodes_cordoned"] for p in truth["pools"].values()) == 1
            from tools.billing import Ledger

            ledger = Ledger.from_url(db)
            try:
                assert len(ledger.credits_for_incident(iid).credits) == 1
            finally:
                ledger.close()
            row = httpx.get(f"{served.url}/incidents/{iid}").json()
            assert row["outcome"] == "mitigated", row
        finally:
            served.stop()


@pytest.mark.parametrize("point", ESSENTIAL)
def test_killed_at_an_essential_point_the_incident_finishes_once(tmp_path: Path, point: str) -> None:
    _killed_once_and_finished(tmp_path, point)


@pytest.mark.chaos
@pytest.mark.parametrize("point", MORE)
def test_killed_at_every_other_point_the_incident_finishes_once(tmp_path: Path, point: str) -> None:
    _killed_once_and_finished(tmp_path, point)
