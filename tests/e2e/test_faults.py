"""Fault injection against the real service: a blip never becomes silence.

Each case breaks one thing the service depends on, for real: the incident store locked by another
process's transaction, PagerDuty's stub answering 500, 429 with Retry-After, or slowly, Slack's stub
failing and rate-limiting, the sandbox's Kubernetes API refusing (503) or accepting and never
answering. Each asserts what an SRE needs: every acknowledged webhook stored and handled (or a human
paged), none lost, no action repeated. (SIGKILL at each checkpoint: ``test_faults_kill.py``.)
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.service_harness import AM_TOKEN, APPROVER, ServeHarness, serve_harness

ROOT = Path(__file__).resolve().parents[2]


def _xid79(h: ServeHarness) -> tuple[str, dict[str, Any]]:
    node = h.node()
    h.admin.inject("xid", node=node, gpu=1, code=79)
    hooks = h.pagerduty_webhooks()
    assert len(hooks) == 1
    return node, hooks[0]


def _executed(h: ServeHarness, iid: str, tool: str) -> int:
    return len(
        [r for r in h.service.env.runtime.audit.records(iid) if r.tool == tool and r.outcome == "executed"]
    )


def _events(h: ServeHarness) -> dict[str, int]:
    return h.service.events.counts()


def _lock(db: Path, seconds: float) -> threading.Thread:
    """Hold a write lock on a SQLite store from another connection (what a stuck writer does)."""
    ready = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        ready.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert ready.wait(10)
    return t


def test_store_locked_webhooks_acknowledged_are_handled_after_the_lock(tmp_path: Path) -> None:
    """The incident store locked for longer than its busy timeout: 10 Alertmanager webhooks are
    answered 202 and stored; each one's fold fails, is put back (not marked failed), and is handled
    once the lock is gone. A re-delivery meanwhile is a duplicate of a live row, not a dead one."""
    with serve_harness(tmp_path) as h:
        h.admin.inject("xid", node=h.node(), gpu=1, code=79)
        h.admin.advance(1800)
        body = h.admin.alerts("alertmanager")[0]
        auth = {"authorization": f"Bearer {AM_TOKEN}", "content-type": "application/json"}
        holder = _lock(tmp_path / "var" / "supply-agent.db", 7.0)
        answers = []
        for i in range(10):
            flap = json.loads(json.dumps(body))
            for a in flap["alerts"]:
                a["startsAt"] = f"2026-01-01T00:{i:02d}:00Z"
            answers.append(
                h.http.post("/webhooks/alertmanager", content=json.dumps(flap).encode(), headers=auth)
            )
        assert [r.status_code for r in answers] == [202] * 10
        time.sleep(1.0)
        again = h.http.post("/webhooks/alertmanager", content=json.dumps(flap).encode(), headers=auth)
        assert again.json()["status"] == "duplicate"
        holder.join()
        h.until("every stored event handled", lambda: _events(h).get("pending", 0) == 0, 60)
        counts = _events(h)
        assert counts.get("failed", 0) == 0, counts
        assert counts.get("handled", 0) == 10, counts
        h.drain()
        opened = h.service.store.incidents(limit=10)
        assert len(opened) == 1 and opened[0].status == "paused", opened  # ran to its approval
        assert h.service.jobs.with_status("dead") == []


@pytest.mark.parametrize("status", [500, 429])
def test_pagerduty_alert_read_failing_the_page_is_handled_when_it_reads(tmp_path: Path, status: int) -> None:
    """PagerDuty's GET /incidents/{id}/alerts answering 500, or 429 with Retry-After: 3, for 4 s after
    the trigger: the event is put back (never marked failed; the wait PagerDuty asked for honoured),
    and the incident opens once the read succeeds."""
    with serve_harness(tmp_path) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        h.pd.outage(status, 4.0, method="GET", path="/alerts$", retry_after="3" if status == 429 else None)
        t0 = time.monotonic()
        assert h.post_pagerduty(hook).status_code == 202
        h.until("the incident to open", lambda: h.service.store.get(f"pd-{pd_id}"), 40)
        # Marked handled just after the fold that opened the incident: wait for it, then look.
        event = h.until(
            "the event marked handled",
            lambda: (e := h.service.events.get(1)) is not None and e.status == "handled" and e,
        )
        assert event.attempts >= 1
        reads = [r for r in h.pd.requests if r.path.endswith("/alerts")]
        if status == 429:  # Retry-After: 3 honoured: no hammering while PagerDuty asks us to wait
            assert len(reads) <= 3, len(reads)
        assert time.monotonic() - t0 >= 4.0  # it opened after the outage, not through it
        assert _events(h).get("failed", 0) == 0


def _pending_attempts(h: ServeHarness) -> int:
    ids = h.service.events.pending(due=False)
    return max((e.attempts for e in h.service.events.get_many(ids).values()), default=0)


def test_a_failed_event_is_revived_by_the_senders_redelivery(tmp_path: Path) -> None:
    """A PagerDuty incident with no alerts is bad data (failed, kept with why); when PagerDuty sends the
    event again and the alerts are there now, the re-delivery revives the row (202, not "duplicate")."""
    with serve_harness(tmp_path) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        alerts = h.pd.alerts.pop(pd_id)
        h.pd.alerts[pd_id] = []
        assert h.post_pagerduty(hook).status_code == 202
        h.until("the event to fail", lambda: _events(h).get("failed", 0) == 1)
        failed = h.service.events.failed()
        assert "no alerts" in failed[0][1]
        dead = h.http.get("/dead-letters").json()
        assert dead["events"][0]["source"] == "pagerduty" and "no alerts" in dead["events"][0]["error"]
        h.pd.alerts[pd_id] = alerts
        again = h.post_pagerduty(hook)
        assert again.status_code == 202 and again.json()["status"] == "accepted", again.json()
        h.until("the incident to open", lambda: h.service.store.get(f"pd-{pd_id}"), 20)


@pytest.mark.parametrize("mode", ["refuse", "hang"])
def test_kubernetes_api_down_the_run_is_retried_and_finishes(tmp_path: Path, mode: str) -> None:
    """The Kubernetes API refusing (503) or hanging for 4 s as the incident starts: the graph run fails,
    is put back with back-off (no 'graph run failed' dead end), and the incident pauses for its approval
    once the API answers; each write is done once."""
    with serve_harness(tmp_path) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        iid = f"pd-{pd_id}"
        h.admin.outage(4.0, mode)
        assert h.post_pagerduty(hook).status_code == 202
        h.until("the approval prompt", h.slack.posted, 60)
        assert h.service.agent.pending(iid) is not None
        assert _executed(h, iid, "k8s.cordon_node") == 1
        assert h.click(APPROVER, "approve", h.button()).json()["status"] == "accepted"
        h.until("the resolve", lambda: "resolved" in h.pd.statuses(pd_id), 60)
        assert _executed(h, iid, "k8s.drain_node") == 1
        assert _executed(h, iid, "billing.issue_credit") == 1


def test_slow_pagerduty_never_delays_the_prompt(tmp_path: Path) -> None:
    """PagerDuty taking 4 s a write: the notes queue in PagerDuty's lane while the Slack prompt, in its
    own lane, goes out as soon as the thread pauses."""
    with serve_harness(tmp_path) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        h.pd.delay_s = 4.0
        t0 = time.monotonic()
        assert h.post_pagerduty(hook).status_code == 202
        h.until("the approval prompt", h.slack.posted, 30)
        waited = time.monotonic() - t0
        writes = len([r for r in h.pd.requests if r.method in ("PUT", "POST")])
        assert writes <= 3, f"the prompt waited for {writes} PagerDuty writes ({waited:.1f} s)"
        h.pd.heal()
        h.until("the notes", lambda: len(h.pd.notes(pd_id)) >= 3, 60)


@pytest.mark.parametrize("fault", ["500-once", "429-thrice"])
def test_slack_post_failing_the_prompt_is_posted_again(tmp_path: Path, fault: str) -> None:
    """chat.postMessage answering 500 once, or 429 three times (Retry-After 1): the prompt job is put
    back and posted; one message, and the click on it resumes the thread."""
    with serve_harness(tmp_path) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        if fault == "500-once":
            h.slack.fail_next(1)
        else:
            h.slack.rate_limit_next(3, retry_after="1")
        assert h.post_pagerduty(hook).status_code == 202
        h.until("the approval prompt", h.slack.posted, 30)
        assert len(h.slack.posted()) == 1
        failed = [c for c in h.slack.calls_to("chat.postMessage") if not c.ok]
        assert failed, "the fault was not hit"
        assert h.click(APPROVER, "approve", h.button()).json()["status"] == "accepted"
        h.until("the resolve", lambda: "resolved" in h.pd.statuses(pd_id), 60)


def test_twenty_simultaneous_clicks_one_answer_no_error(tmp_path: Path) -> None:
    """Twenty clicks at once (two people, double clicks): every one answered 200, one approval."""
    with serve_harness(tmp_path) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        assert h.post_pagerduty(hook).status_code == 202
        h.until("the approval prompt", h.slack.posted, 30)
        value = h.button()
        answers: list[Any] = []

        def click(i: int) -> None:
            # distinct bodies (a click's payload differs by its action_ts), all signed
            answers.append(h.click(APPROVER, "approve", value))

        threads = [threading.Thread(target=click, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r.status_code for r in answers) == [200] * 20, [
            r.text for r in answers if r.status_code != 200
        ]
        accepted = [r for r in answers if r.json()["status"] == "accepted"]
        assert len(accepted) >= 1
        h.until("the resolve", lambda: "resolved" in h.pd.statuses(pd_id), 60)
        assert _executed(h, f"pd-{pd_id}", "billing.issue_credit") == 1


def test_a_rescan_while_a_click_is_applied_does_not_apply_it_twice(tmp_path: Path) -> None:
    """The dispatcher's rescan of pending events coming while the request applies a click it stored
    (the CI failure of 2026-12-02): the dispatcher leaves that click to the request, so the approver
    hears "accepted", and the credit is issued once."""
    with serve_harness(tmp_path) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        assert h.post_pagerduty(hook).status_code == 202
        h.until("the approval prompt", h.slack.posted, 30)
        events = h.service.events
        add = events.add

        def add_then_rescan(c: Any, body: bytes) -> int | None:
            event_id = add(c, body)
            for i in events.pending():  # what the rescan does, at the worst moment
                h.service._enqueue(i)
            time.sleep(1.5)  # the dispatcher's turn: time enough to apply it and resume the thread
            return event_id

        events.add = add_then_rescan  # type: ignore[method-assign]
        try:
            r = h.click(APPROVER, "approve", h.button())
        finally:
            events.add = add  # type: ignore[method-assign]
        assert r.json()["status"] == "accepted", r.json()
        h.until("the resolve", lambda: "resolved" in h.pd.statuses(pd_id), 60)
        assert _executed(h, f"pd-{pd_id}", "billing.issue_credit") == 1
        assert _events(h).get("handled", 0) >= 2  # the alert and the click, each once


def _quick_handback_playbooks(tmp: Path) -> Path:
    d = tmp / "playbooks"
    shutil.copytree(ROOT / "playbooks", d)
    g = d / "_global.yaml"
    g.write_text(g.read_text().replace("stalled_after: 3m", "stalled_after: 2s"))
    return d


def test_dead_mans_switch_pages_a_human_when_pagerduty_writes_keep_failing(tmp_path: Path) -> None:
    """PagerDuty refusing every write past the hand-back bound: the stall is said in Slack (the path
    that does not depend on PagerDuty), once, with what failed; the stall is in /metrics."""
    with serve_harness(tmp_path, playbooks_dir=_quick_handback_playbooks(tmp_path), watchdog_s=0.5) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        h.pd.fail_writes(500)
        assert h.post_pagerduty(hook).status_code == 202
        handback = h.until(
            "the hand-back in Slack",
            lambda: [m for m in h.slack.posted() if "hands this back" in str(m.get("text", ""))],
            30,
        )
        assert "pagerduty.acknowledge" in str(handback[0]["text"])
        h.until(
            "the hand-back in /metrics",
            lambda: 'supply_agent_handed_back_total{path="slack"} 1.0' in h.http.get("/metrics").text,
        )
        assert "supply_agent_stalled_incidents 1.0" in h.http.get("/metrics").text
        time.sleep(1.5)
        assert len([m for m in h.slack.posted() if "hands this back" in str(m.get("text", ""))]) == 1
        timeline = h.service.store.timeline(f"pd-{pd_id}")
        assert any("handed back to humans (slack)" in e.text for e in timeline)
        h.pd.heal()
        h.until("the acknowledge", lambda: "acknowledged" in h.pd.statuses(pd_id), 30)


def test_dead_mans_switch_reassigns_in_pagerduty_when_the_cluster_stays_down(tmp_path: Path) -> None:
    """The Kubernetes API down past the bound: the incident is reassigned to the escalation policy in
    PagerDuty with a note saying what failed."""
    with serve_harness(tmp_path, playbooks_dir=_quick_handback_playbooks(tmp_path), watchdog_s=0.5) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        h.admin.outage(30.0, "refuse")
        assert h.post_pagerduty(hook).status_code == 202
        note = h.until(
            "the hand-back note",
            lambda: [n for n in h.pd.notes(pd_id) if "hands this back" in n],
            30,
        )
        assert "run" in note[0]
        # The note and the reassignment are two PagerDuty writes: wait for the second as well.
        assert h.until(
            "the reassignment",
            lambda: h.pd.incidents.get(pd_id, {}).get("escalation_policy", {}).get("id") == "PPOLICY1",
            30,
        )
        h.admin.outage(0)


def test_pagerduty_down_during_an_escalation_the_reassign_arrives_after(tmp_path: Path) -> None:
    """A rejected approval escalates while PagerDuty answers 500 to everything for 5 s: the note and the
    reassignment to the escalation policy wait in the outbox and arrive once it is back, once each."""
    with serve_harness(tmp_path) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        assert h.post_pagerduty(hook).status_code == 202
        h.until("the approval prompt", h.slack.posted, 30)
        h.until("the notes so far", lambda: len(h.pd.notes(pd_id)) >= 3, 30)
        h.pd.outage(500, 5.0)
        assert h.click(APPROVER, "reject", h.button()).json()["status"] == "accepted"
        policy = h.until(
            "the reassignment",
            lambda: h.pd.incidents.get(pd_id, {}).get("escalation_policy", {}).get("id") == "PPOLICY1",
            40,
        )
        assert policy
        h.drain()
        escalations = [n for n in h.pd.notes(pd_id) if n.startswith("supply-agent escalates")]
        assert len(escalations) == 1, escalations
        assert "resolved" not in h.pd.statuses(pd_id)
        assert h.service.jobs.with_status("dead") == []


def test_a_note_cut_off_mid_call_is_looked_up_before_it_is_sent_again(tmp_path: Path) -> None:
    """A kill between PagerDuty storing a note and the audit saying so: the retry finds the note in
    PagerDuty and does not post it twice; a note that did not arrive is sent."""
    with serve_harness(tmp_path) as h:
        h.pd.add_incident("PCUT1")
        audit = h.service.env.runtime.executor.audit
        params = {"incident": "PCUT1", "content": "[evidence] the note that made it"}
        key = "cut-off-note"
        common = {"incident_id": "pd-PCUT1", "step": 0, "tool": "pagerduty.note", "action_hash": "h" * 64}
        audit.append(
            phase="before", outcome="pending", idempotency_key=key, params=params, verdict="control", **common
        )
        assert audit.interrupted(key)
        assert h.service.pd is not None
        h.service.pd.add_note("PCUT1", params["content"])  # PagerDuty got it; the process died then
        h.service._deliver("pd-PCUT1", "pagerduty.note", params, key)
        assert h.pd.notes("PCUT1") == [params["content"]]
        lost = {"incident": "PCUT1", "content": "[evidence] the note that did not"}
        audit.append(
            phase="before",
            outcome="pending",
            idempotency_key="cut-2",
            params=lost,
            verdict="control",
            **common,
        )
        # Delivered as the outbox job does: under the incident's lease.
        lease = h.service.leases.take("pd-PCUT1")
        assert lease is not None
        with h.service.fence.under(lease):
            h.service._deliver("pd-PCUT1", "pagerduty.note", lost, "cut-2")
        assert h.pd.notes("PCUT1") == [params["content"], lost["content"]]
        assert not audit.interrupted("cut-2")
