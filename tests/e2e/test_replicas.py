"""Two replicas of `serve` on one PostgreSQL: every replica takes webhooks and clicks, a delivery to
both is one event, and each incident is run by one replica at a time, each action once."""

from __future__ import annotations

import collections
import json
import time
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


def test_the_singletons_are_led_by_the_holders_of_their_kubernetes_leases(
    tmp_path: Path, postgres_url: str
) -> None:
    """SUPPLY_AGENT_LEADER_ELECTION=kubernetes: each singleton's database lease (the fence) is held by the
    replica that holds its Lease on the cluster (the election), a page is handled under them, a clean
    stop hands both on at once, and an API server out of reach leaves the leader leading."""
    from kubernetes import client, config

    from supply_agent.service.leases import SINGLETON

    url = fresh_database(postgres_url, "replicas_kube_lease").replace(
        "postgresql://", "postgresql+psycopg://"
    )
    with replicas_harness(tmp_path, url, lease_s=3.0, leader_election="kubernetes") as (a, b):
        leases = client.CoordinationV1Api(config.new_client_from_config(str(a.kubeconfig)))

        def kube_holder(singleton: str) -> str | None:
            try:
                lease = leases.read_namespaced_lease(f"supply-agent-{singleton}", "supply-agent-system")
            except client.ApiException:
                return None
            return lease.spec.holder_identity

        def agreed() -> str | None:
            """The one replica leading every singleton by both the Lease and the database, if so."""
            owners = set()
            for singleton in ("dispatcher", "sweeper", "watchdog"):
                fence = a.service.leases.table.holder(SINGLETON + singleton)
                if fence is None or kube_holder(singleton) != fence.owner:
                    return None
                owners.add(fence.owner)
            return owners.pop() if len(owners) == 1 else None

        first = a.until("one replica leads by Lease and fence alike", agreed, 20)
        (leader, other) = (a, b) if a.service.leases.owner == first else (b, a)
        assert not other.service.leases.held(SINGLETON + "dispatcher")
        # Work flows under them: a page folded by the leader, run to its prompt.
        node = a.node()
        a.admin.inject("xid", node=node, gpu=1, code=79)
        [hook] = a.pagerduty_webhooks()
        assert other.post_pagerduty(hook).status_code == 202
        a.until("the Slack prompt", lambda: a.slack.posted(), 60)
        # The API server out of reach past the lease time: the Lease cannot be renewed, and the database
        # lease alone keeps the leader leading (its dead man's switch is wanted exactly then).
        a.admin.outage(8, "hang")  # accepted and never answered: the renewals must not wait on it
        time.sleep(7)
        assert leader.service.leases.held(SINGLETON + "watchdog") is not None
        assert not other.service.leases.held(SINGLETON + "watchdog")
        time.sleep(1.5)
        # A clean stop releases both: the other replica leads within a couple of its one-second looks.
        started = time.monotonic()
        leader.service.stop()
        second = a.until("the other replica leads", agreed, 20)
        assert second == other.service.leases.owner
        assert time.monotonic() - started < 3.0 + 3.0  # well within the lease time after the stop
