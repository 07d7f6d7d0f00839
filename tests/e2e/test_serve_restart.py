"""`supply-agent serve` as a real process on loopback: killed while an approval is pending, restarted,
and the click still resumes the thread; events stored but not handled are handled after a restart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect

from sandbox.executor.audit import AuditLog
from sandbox.fleet.admin import AdminClient
from supply_agent.intake.signing import sign_pagerduty
from tests.support.pg_fixture import fresh_database
from tests.support.served import Served, approve_values, click, serve_env, until, xid79_page
from tests.support.service_harness import (
    PD_SECRET,
    outside_world,
)


def _post_recorded(url: str) -> bool:
    audit = AuditLog.from_url(url)
    try:
        return any(
            r.tool == "slack.post" and r.phase == "after" and r.outcome == "executed" for r in audit.records()
        )
    finally:
        audit.engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_while_an_approval_is_pending_restart_and_the_click_resumes(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same on the embedded SQLite files and on one PostgreSQL for everything (events, incidents,
    jobs, audit, approvals, ledger, checkpoints): two real ``serve`` processes, one after the other."""
    if backend == "postgres":
        server = str(request.getfixturevalue("postgres_url"))
        url = fresh_database(server, "serve_restart").replace("postgresql://", "postgresql+psycopg://")
    else:
        url = f"sqlite:///{tmp_path / 'var' / 'supply-agent.db'}"
    with outside_world(tmp_path) as (fleet, kubeconfig, pd, slack):
        admin = AdminClient.from_kubeconfig(kubeconfig)
        node, hook, pd_id = xid79_page(fleet, admin, pd)
        env = serve_env(tmp_path, pd, slack)
        if backend == "postgres":
            env["SUPPLY_AGENT_DATABASE_URL"] = url
        log = tmp_path / "serve.log"

        first = Served(env, kubeconfig, log)
        try:
            raw = json.dumps(hook).encode()
            r = httpx.post(
                f"{first.url}/webhooks/pagerduty",
                content=raw,
                headers={"x-pagerduty-signature": sign_pagerduty(raw, PD_SECRET)},
            )
            assert r.status_code == 202, r.text
            until("the Slack prompt", lambda: slack.posted())
            # Killed once the post is on record (its audit row): a kill between Slack taking the post
            # and that row is the one window where a restart posts again (at least once, not exactly).
            until("the prompt's post recorded", lambda: _post_recorded(url))
            first.kill()  # SIGKILL: no shutdown of any kind
        finally:
            first.stop()

        second = Served(env, kubeconfig, log)
        try:
            iid = f"pd-{pd_id}"
            row = httpx.get(f"{second.url}/incidents/{iid}").json()
            assert row["status"] == "paused"  # paused threads stay paused across a restart
            time.sleep(0.5)
            assert len(slack.posted()) == 1  # and nobody is asked twice
            [value] = approve_values(slack.posted())
            r = click(second.url, value)
            # Stored at the edge (the intake process), applied by the worker from the log.
            assert r.status_code == 200 and r.json()["status"] == "stored", r.text
            until("PagerDuty resolve", lambda: "resolved" in pd.statuses(pd_id))
            row = httpx.get(f"{second.url}/incidents/{iid}").json()
            assert row["outcome"] == "mitigated", row
            assert pd.statuses(pd_id) == ["acknowledged", "resolved"]
            # The fleet's own record: one cordon, the node drained; the credit exists once.
            truth = admin.truth()
            assert sum(p["nodes_cordoned"] for p in truth["pools"].values()) == 1
            left = [
                p["metadata"]["name"]
                for p in fleet.store.items("pods")
                if p["spec"].get("nodeName") == node
                and p["metadata"]["namespace"].startswith("tenant-")
                and p.get("status", {}).get("phase") == "Running"
            ]
            assert left == []  # drained
            from tools.billing import Ledger

            ledger = Ledger.from_url(url)
            try:
                assert len(ledger.credits_for_incident(iid).credits) == 1
            finally:
                ledger.close()
            # The prompt's update follows the resumed run's write-back (resolve first): wait for it.
            until("the Slack prompt updated", lambda: slack.updates(), 30)
            time.sleep(0.3)
            assert len(slack.updates()) == 1
        finally:
            second.stop()
    if backend == "postgres":
        # Nothing went to the embedded files: every store, the intake's and the checkpoints too, is in
        # the one database.
        assert not list((tmp_path / "var").glob("*.db"))
        engine = create_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
            assert {"intake_events", "checkpoints", "audit", "approval_prompts", "alembic_version"} <= tables
        finally:
            engine.dispose()
