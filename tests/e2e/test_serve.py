"""`supply-agent serve`: webhooks in, Slack approvals, PagerDuty write-back, health and metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from supply_agent.cli import main
from tests.support.service_harness import (
    AGENT_PD_USER,
    AM_TOKEN,
    APPROVER,
    POLICY,
    STRANGER,
    ServeHarness,
    serve_harness,
)
from tools.kubernetes import KubeTools
from tools.latches import BREAKER_CONFIGMAP, CONTROL_NAMESPACE, breaker_data

VECTOR = Path(__file__).resolve().parents[1] / "vectors" / "pd_gopagerduty_priority_updated.json"


def _xid79(h: ServeHarness) -> tuple[str, dict[str, Any]]:
    node = h.node()
    h.admin.inject("xid", node=node, gpu=1, code=79)
    hooks = h.pagerduty_webhooks()
    assert len(hooks) == 1
    return node, hooks[0]


def test_a_page_from_alertmanagers_default_pagerduty_receiver_is_read_from_its_details_text(
    tmp_path: Path,
) -> None:
    """A receiver configured with no ``details`` sends every alert as Alertmanager's ``firing`` text
    (Labels:, - name = value, Annotations:, Source:): the node, GPU and XID are read from it, and the
    page is handled as the flat one is."""
    with serve_harness(tmp_path) as h:
        node = h.node()
        h.admin.inject("xid", node=node, gpu=1, code=79)
        (hook,) = h.pagerduty_webhooks(details="alertmanager")
        pd_id = hook["event"]["data"]["id"]
        body = h.pd.alerts[pd_id][0]["body"]["details"]
        assert set(body) == {"firing", "resolved", "num_firing", "num_resolved"}
        assert f" - node = {node}" in body["firing"]
        assert h.post_pagerduty(hook).status_code == 202
        h.drain()
        iid = f"pd-{pd_id}"
        state = h.service.agent.state(iid)
        assert state.alert.alertname == "GPUFallenOffBus" and state.alert.node == node
        assert state.playbook_id == "xid-fallen-off-bus"
        assert h.service.agent.pending(iid) is not None  # up to the credit, which asks in Slack
        assert h.service.env.runtime.kube.get_node(node).unschedulable
        assert _running_tenant_pods(h, node) == []


def _running_tenant_pods(h: ServeHarness, node: str) -> list[str]:
    pods = h.service.env.runtime.kube.list_pods_on_node(node)
    return [p.name for p in pods if not p.daemonset and p.phase == "Running"]


def test_signed_pagerduty_page_to_slack_approval_to_mitigation_and_write_back(tmp_path: Path) -> None:
    with serve_harness(tmp_path) as h:
        node, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        iid = f"pd-{pd_id}"
        r = h.post_pagerduty(hook)
        assert r.status_code == 202, r.text
        h.drain()
        # The agent took the incident, investigated, acted up to the credit, and asks in Slack.
        assert h.pd.statuses(pd_id) == ["acknowledged"]
        assert len(h.slack.posted()) == 1
        prompt = h.slack.posted()[0]
        assert "billing.issue_credit" in json.dumps(prompt["blocks"])
        assert h.service.agent.pending(iid) is not None
        assert h.service.env.runtime.ledger.credits_for_incident(iid).credits == []

        # A stranger's click is refused, audited, and the approval stays pending.
        r = h.click(STRANGER, "approve", h.button())
        assert r.status_code == 200 and r.json()["status"] == "refused"
        h.drain()
        assert h.service.agent.pending(iid) is not None
        assert any("not an approver" in e.text for e in h.service.store.timeline(iid))
        assert h.slack.updates() == []
        assert h.service.env.runtime.ledger.credits_for_incident(iid).credits == []

        # The approver's click resumes the thread; a double click changes nothing.
        r = h.click(APPROVER, "approve", h.button())
        assert r.status_code == 200 and r.json()["status"] == "accepted"
        again = h.click(APPROVER, "approve", h.button())
        assert again.status_code == 200 and again.json()["status"] == "ignored"
        h.drain()
        state = h.service.agent.state(iid)
        assert state.outcome == "mitigated", state.escalation_reason
        # Scored from the world: the node is drained and the customer credited once.
        assert _running_tenant_pods(h, node) == []
        credits = h.service.env.runtime.ledger.credits_for_incident(iid).credits
        assert len(credits) == 1
        assert (
            h.fleet.truth()["pools"]
            and sum(p["nodes_cordoned"] for p in h.fleet.truth()["pools"].values()) == 1
        )
        # PagerDuty: acknowledged, a note per finding and action, resolved.
        assert h.pd.statuses(pd_id) == ["acknowledged", "resolved"]
        notes = h.pd.notes(pd_id)
        assert any(n.startswith("[evidence]") for n in notes)
        assert sum(n.startswith("[action]") for n in notes) >= 4
        assert any("approved by U0APPROVER" in n for n in notes)
        # Slack: the prompt now says who decided and when, with no buttons.
        updates = h.slack.updates()
        assert len(updates) == 1
        blob = json.dumps(updates[0]["blocks"])
        assert APPROVER in blob and '"actions"' not in blob
        # Each click is on the record.
        assert any("answered already" in e.text or "already" in e.text for e in h.service.store.timeline(iid))


def test_pagerduty_down_the_prompt_goes_out_and_every_write_arrives_later_in_order_once(
    tmp_path: Path,
) -> None:
    """PagerDuty refusing every write: the Slack prompt still goes out at once (its own lane of the
    outbox); PagerDuty's writes wait in the outbox, retried (each try an audited, failed executor
    action), and once PagerDuty heals they all arrive, in order, none twice."""
    with serve_harness(tmp_path) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        iid = f"pd-{pd_id}"
        h.pd.fail_writes(500)
        assert h.post_pagerduty(hook).status_code == 202
        h.until("the approval prompt", h.slack.posted)  # not held behind PagerDuty
        assert h.service.agent.pending(iid) is not None
        audit = h.service.env.runtime.audit
        h.until(
            "the acknowledge to be retried",
            lambda: (
                len(
                    [
                        r
                        for r in audit.records(iid)
                        if r.tool == "pagerduty.acknowledge" and r.outcome == "failed"
                    ]
                )
                >= 2
            ),
        )
        assert h.pd.notes(pd_id) == [] and h.pd.statuses(pd_id) == []
        h.pd.heal()
        assert h.click(APPROVER, "approve", h.button()).json()["status"] == "accepted"
        h.until("the resolve", lambda: "resolved" in h.pd.statuses(pd_id))
        h.drain()
        assert h.pd.statuses(pd_id) == ["acknowledged", "resolved"]  # in order: acknowledged first
        notes = h.pd.notes(pd_id)
        evidence = [e for e in h.service.store.timeline(iid) if e.kind == "evidence"]
        assert evidence and all(f"[evidence] {e.text}" in notes for e in evidence)
        assert len(notes) == len(set(notes)), "a note was sent twice"
        sent = [r for r in audit.records(iid) if r.tool == "pagerduty.note" and r.outcome == "executed"]
        assert len(sent) == len(notes)
        assert h.service.jobs.with_status("dead") == []


def test_pagerduty_signatures_and_bad_input(tmp_path: Path) -> None:
    with serve_harness(tmp_path, max_body_bytes=4096) as h:
        _, hook = _xid79(h)
        raw = json.dumps(hook).encode()
        assert h.post_pagerduty(raw, signature=None).status_code == 400
        assert h.post_pagerduty(raw, signature="sha256=abc").status_code == 400
        assert h.post_pagerduty(raw, signature="v1=" + "0" * 64).status_code == 403
        # Rotation: one of several signatures matches.
        from supply_agent.intake.signing import sign_pagerduty

        rotated = "v1=" + "f" * 64 + "," + sign_pagerduty(raw, "pd-webhook-secret-0001")
        assert h.post_pagerduty(raw, signature=rotated).status_code == 202
        assert h.post_pagerduty(b"{not json", signature="sign").status_code == 400
        r = h.post_pagerduty(b'{"event": {"id": "X"}}')
        assert r.status_code == 400 and "event_type" in r.json()["error"]
        big = b'{"pad": "' + b"x" * 5000 + b'"}'
        assert h.post_pagerduty(big).status_code == 413
        # An unknown (unhandled) event type is accepted and ignored: nothing stored.
        vector = VECTOR.read_bytes()
        r = h.post_pagerduty(vector)
        assert r.status_code == 202 and r.json()["status"] == "ignored"
        # A retried delivery is one event.
        assert h.post_pagerduty(raw).json()["status"] == "duplicate"
        h.drain()
        counts = h.service.events.counts()
        assert sum(counts.values()) == 1, counts
        assert len(h.service.store.incidents()) == 1


def test_alertmanager_bearer_dedup_and_storm_fold_into_one_incident(tmp_path: Path) -> None:
    with serve_harness(tmp_path) as h:
        h.admin.inject("xid", node=h.node(), gpu=1, code=79)
        h.admin.advance(1800)
        body = h.admin.alerts("alertmanager")[0]
        raw = json.dumps(body).encode()
        post = h.http.post
        assert post("/webhooks/alertmanager", content=raw).status_code == 401
        bad = {"authorization": "Bearer nope"}
        assert post("/webhooks/alertmanager", content=raw, headers=bad).status_code == 401
        auth = {"authorization": f"Bearer {AM_TOKEN}", "content-type": "application/json"}
        assert post("/webhooks/alertmanager", content=raw, headers=auth).status_code == 202
        assert post("/webhooks/alertmanager", content=raw, headers=auth).json()["status"] == "duplicate"
        r = post("/webhooks/alertmanager", content=b'{"alerts": [{"labels": {}}]}', headers=auth)
        assert r.status_code == 400 and "alertname" in r.json()["error"]
        # A storm: the same alert flapping (new startsAt each time) folds into the one incident.
        for i in range(20):
            flap = json.loads(raw)
            for a in flap["alerts"]:
                a["startsAt"] = f"2026-11-23T10:{i:02d}:00Z"
            assert (
                post("/webhooks/alertmanager", content=json.dumps(flap).encode(), headers=auth).status_code
                == 202
            )
        h.drain()
        incidents = h.service.store.incidents()
        assert len(incidents) == 1, [i.id for i in incidents]
        assert h.service.events.counts() == {"handled": 21}


def test_queue_full_answers_503_and_loses_nothing(tmp_path: Path) -> None:
    with serve_harness(tmp_path, queue_max=1) as h:
        h.service.stop()  # no dispatcher: stored events wait
        h.admin.inject("xid", node=h.node(), gpu=1, code=79)
        h.admin.inject("xid", node=h.node(1), gpu=1, code=43)
        hooks = h.pagerduty_webhooks()
        assert len(hooks) == 2
        assert h.post_pagerduty(hooks[0]).status_code == 202
        r = h.post_pagerduty(hooks[1])
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert h.post_pagerduty(hooks[0]).json()["status"] == "duplicate"
        assert h.service.events.counts() == {"pending": 1}


def test_a_human_ack_in_pagerduty_stops_the_agents_writes(tmp_path: Path) -> None:
    with serve_harness(tmp_path) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        iid = f"pd-{pd_id}"
        h.post_pagerduty(hook)
        h.drain()
        assert h.service.agent.pending(iid) is not None
        # The echo of the agent's own acknowledgement changes nothing.
        own = json.loads(json.dumps(hook))
        own["event"].update(id="EVOWN", event_type="incident.acknowledged")
        own["event"]["agent"] = {"id": AGENT_PD_USER, "type": "user_reference", "summary": "supply-agent"}
        assert h.post_pagerduty(own).status_code == 202
        human = json.loads(json.dumps(hook))
        human["event"].update(id="EVHUMAN", event_type="incident.acknowledged")
        human["event"]["agent"] = {"id": "PBOB", "type": "user_reference", "summary": "Bob Oncall"}
        assert h.post_pagerduty(human).status_code == 202
        h.drain()
        row = h.service.store.get(iid)
        assert row is not None and row.human_owner and "Bob Oncall" in row.human_owner
        # The approver clicks anyway: the thread resumes, and the write is refused, not executed.
        h.click(APPROVER, "approve", h.button())
        h.drain()
        state = h.service.agent.state(iid)
        assert state.steps[-1].outcome == "refused" and "Bob Oncall" in (state.steps[-1].error or "")
        assert h.service.env.runtime.ledger.credits_for_incident(iid).credits == []
        assert h.pd.statuses(pd_id) == ["acknowledged"]  # neither resolved nor escalated by the agent


def test_expired_approval_is_swept_escalated_in_pagerduty_and_a_late_click_changes_nothing(
    tmp_path: Path,
) -> None:
    with serve_harness(tmp_path) as h:
        _, hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        iid = f"pd-{pd_id}"
        h.post_pagerduty(hook)
        h.drain()
        h.admin.advance(16 * 60)  # past the 15-minute TTL
        assert h.service.sweep() == 1
        h.drain()
        state = h.service.agent.state(iid)
        assert state.outcome == "escalated" and "expired" in (state.escalation_reason or "")
        writes = h.pd.writes(pd_id)
        assert writes[-1][0] == "PUT" and writes[-1][2]["incident"]["escalation_policy"]["id"] == POLICY
        late = h.click(APPROVER, "approve", h.button())
        assert late.status_code == 200 and late.json()["status"] == "ignored"
        assert h.service.env.runtime.ledger.credits_for_incident(iid).credits == []
        assert "Expired" in json.dumps(h.slack.updates()[-1]["blocks"]) or "expired" in json.dumps(
            h.slack.updates()[-1]["blocks"]
        )


def test_slack_signature_window_and_malformed_clicks(tmp_path: Path) -> None:
    with serve_harness(tmp_path) as h:
        value = "pd-X|" + "a" * 64
        assert h.click(APPROVER, "approve", value, ts=int(time.time()) - 301).status_code == 401
        r = h.http.post("/slack/interactions", content=b"payload=%7B%7D")
        assert r.status_code == 400
        r = h.click(APPROVER, "approve", value)
        assert r.status_code == 200 and r.json()["status"] == "ignored"


def test_health_ready_metrics_and_incidents_api(tmp_path: Path) -> None:
    with serve_harness(tmp_path) as h:
        assert h.http.get("/healthz").json() == {"status": "ok"}
        assert h.http.get("/readyz").status_code == 200
        _, hook = _xid79(h)
        h.post_pagerduty(hook)
        h.post_pagerduty(hook)
        h.drain()
        text = h.http.get("/metrics").text
        assert 'supply_agent_events_received_total{result="accepted",source="pagerduty"} 1.0' in text
        assert 'supply_agent_events_received_total{result="duplicate",source="pagerduty"} 1.0' in text
        assert "supply_agent_tool_call_seconds" in text
        listed = h.http.get("/incidents").json()
        assert [i["id"] for i in listed] == [f"pd-{hook['event']['data']['id']}"]
        one = h.http.get(f"/incidents/{listed[0]['id']}").json()
        assert one["status"] == "paused" and any(e["kind"] == "evidence" for e in one["timeline"])
        assert h.http.get("/incidents/nope").status_code == 404
        h.click(APPROVER, "approve", h.button())
        h.drain()
        text = h.http.get("/metrics").text
        assert 'supply_agent_incidents_total{outcome="mitigated"} 1.0' in text
        assert 'supply_agent_proposals_total{decision="ask"} 1.0' in text
        assert "supply_agent_approval_wait_seconds_count" in text


def test_a_restart_handles_events_stored_but_not_handled(tmp_path: Path) -> None:
    from supply_agent.mind.planners.runbook import RunbookPlanner
    from supply_agent.service.core import open_service

    with serve_harness(tmp_path) as h:
        h.service.stop()  # the process "dies" after acknowledging: the event is stored, not handled
        _, hook = _xid79(h)
        assert h.post_pagerduty(hook).status_code == 202
        assert h.service.events.counts() == {"pending": 1}
        assert h.service.store.incidents() == []
        with open_service(h.service.settings, h.kubeconfig, planner=RunbookPlanner()) as again:
            again.start()
            try:
                assert again.drain(60)
                assert again.events.counts() == {"handled": 1}
                iid = f"pd-{hook['event']['data']['id']}"
                assert again.agent.pending(iid) is not None
                assert len(h.slack.posted()) == 1
            finally:
                again.stop()


def test_the_brakes_show_in_metrics_within_a_watchdog_round(tmp_path: Path) -> None:
    """The kill switch and the breaker, set and lifted with the CLI a human uses, show in /metrics (the
    PrometheusRule in deploy/ pages on them) within a round of the dead man's switch."""
    runner = CliRunner()

    def cli(*args: str) -> None:
        result = runner.invoke(main, [*args, "--kubeconfig", str(h.kubeconfig)])
        assert result.exit_code == 0, result.output

    def metric(name: str) -> str:
        line = [x for x in h.http.get("/metrics").text.splitlines() if x.startswith(name + " ")]
        return line[0].split()[-1] if line else ""

    with serve_harness(tmp_path, watchdog_s=0.2) as h:
        h.until("the latches read", lambda: metric("supply_agent_frozen") == "0.0", 10)
        assert metric("supply_agent_breaker_tripped") == "0.0"
        cli("freeze", "--reason", "maintenance window", "--by", "test")
        h.until("frozen in /metrics", lambda: metric("supply_agent_frozen") == "1.0", 10)
        cli("unfreeze", "--by", "test")
        h.until("unfrozen in /metrics", lambda: metric("supply_agent_frozen") == "0.0", 10)
        kube = KubeTools.from_kubeconfig(h.kubeconfig)
        try:  # as the executor trips it after failed verifications
            kube.upsert_config_map(
                CONTROL_NAMESPACE, BREAKER_CONFIGMAP, breaker_data(True, "3 failed", "test")
            )
        finally:
            kube.close()
        h.until("the breaker in /metrics", lambda: metric("supply_agent_breaker_tripped") == "1.0", 10)
        cli("breaker", "reset", "--by", "test")
        h.until("the breaker reset in /metrics", lambda: metric("supply_agent_breaker_tripped") == "0.0", 10)
