"""Two replicas of `serve` on one PostgreSQL: every replica takes webhooks and clicks, a delivery to
both is one event, and each incident is run by one replica at a time, each action once."""

from __future__ import annotations

import collections
import json
from pathlib import Path

from sandbox.executor.audit import AuditLog
from tests.support.pg_fixture import fresh_database
from tests.support.service_harness import APPROVER, replicas_harness


def test_a_page_delivered_to_both_replicas_is_one_incident_run_once_and_a_click_to_either_resumes_it(
    tmp_path: Path, postgres_url: str
) -> None:
    url = fresh_database(postgres_url, "replicas_two").replace("postgresql://", "postgresql+psycopg://")
    with replicas_harness(tmp_path, url, lease_s=3.0) as (a, b):
        node = a.node()
        a.admin.inject("xid", node=node, gpu=1, code=79)
        [hook] = a.pagerduty_webhooks()
        pd_id = hook["event"]["data"]["id"]
        iid = f"pd-{pd_id}"
        # PagerDuty re-delivers to whichever replica the load balancer picks: both take it.
        assert a.post_pagerduty(hook).status_code == 202
        again = b.post_pagerduty(hook)
        assert again.status_code == 200 and "duplicate" in again.text, again.text  # one event, not two
        a.until("the Slack prompt", lambda: a.slack.posted(), 60)
        a.until("the prompt recorded", lambda: a.service.prompts.with_status("pending"), 30)
        assert a.service.events.counts() in ({"handled": 1}, {"handled": 1, "pending": 0})
        assert a.pd.statuses(pd_id) == ["acknowledged"]
        # The click goes to the replica that did not post the prompt as often as to the one that did.
        r = b.click(APPROVER, "approve", b.button())
        assert r.status_code == 200 and r.json()["status"] in ("accepted", "stored"), r.text
        a.until("PagerDuty resolved", lambda: "resolved" in a.pd.statuses(pd_id), 60)
        a.until("the prompt updated", lambda: a.slack.updates(), 30)
        assert a.service.drain(30) and b.service.drain(30)
        assert a.service.agent.state(iid).outcome == "mitigated"
        assert len(a.slack.posted()) == 1 and len(a.slack.updates()) == 1
        assert a.pd.statuses(pd_id) == ["acknowledged", "resolved"]
        audit = AuditLog.from_url(url)
        try:
            rows = audit.records()
        finally:
            audit.engine.dispose()
        executed = collections.Counter(
            r.idempotency_key for r in rows if r.phase == "after" and r.outcome == "executed"
        )
        assert executed and max(executed.values()) == 1, executed  # no action ran twice
        assert not [r for r in rows if r.phase == "refused" and "fenced" in (r.error or "")]
        credits = a.service.env.runtime.ledger.credits_for_incident(iid).credits
        assert len(credits) == 1
        # Each replica did part of the work only while it held the incident's lease: the leases table says who.
        assert json.dumps(sorted(executed))  # the keys are plain text


def test_an_open_incident_nobody_works_on_is_run_by_the_resync(tmp_path: Path) -> None:
    """What a dispatch leader killed between a fold and storing its run leaves: an open incident with
    no job and no lease. The leader's resync finds it and runs it; one with work stored is left alone."""
    from supply_agent.models.incident import pagerduty_alerts, parse_alerts
    from tests.support.service_harness import serve_harness

    with serve_harness(tmp_path) as h:
        node = h.node()
        h.admin.inject("xid", node=node, gpu=1, code=79)
        [hook] = h.pagerduty_webhooks()
        _, refs = parse_alerts(hook)
        alerts = pagerduty_alerts(refs[0], {"alerts": h.pd.alerts[refs[0].incident_id]})
        new, _ = h.service.agent.fold(alerts, window=h.service.window)  # folded; its run never stored
        [state] = new
        iid = state.incident_id
        assert h.service.jobs.queued(iid) == 0
        assert h.service._resync() == 1
        assert h.service._resync() == 0  # its run is stored now: nothing more to ask
        h.until("the Slack prompt", lambda: h.slack.posted(), 60)
        assert h.service.agent.pending(iid) is not None
