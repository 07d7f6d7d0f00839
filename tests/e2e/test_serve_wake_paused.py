"""`supply-agent serve`: an alert that joins an incident paused at an approval wakes it. The joined node
is contained now while the first node's Slack prompt stays as it was (not posted again), and a click on
that prompt's button still applies after the wake (bound to incident + action hash, not to the
interrupt)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.support.service_harness import AM_TOKEN, APPROVER, ServeHarness, serve_harness

ROOT = Path(__file__).resolve().parents[2]


def _playbooks(tmp: Path) -> Path:
    """The repository's playbooks with room for two 8-GPU nodes out (so B's cordon needs no human)."""
    d = tmp / "playbooks"
    shutil.copytree(ROOT / "playbooks", d)
    g = d / "_global.yaml"
    text = g.read_text()
    assert "gpus_out: {soft: 8, hard: 32}" in text
    g.write_text(text.replace("gpus_out: {soft: 8, hard: 32}", "gpus_out: {soft: 16, hard: 32}"))
    return d


def _post_alerts(h: ServeHarness, advance_s: float) -> None:
    h.admin.advance(advance_s)
    auth = {"authorization": f"Bearer {AM_TOKEN}", "content-type": "application/json"}
    for body in h.admin.alerts("alertmanager"):
        r = h.http.post("/webhooks/alertmanager", content=json.dumps(body).encode(), headers=auth)
        assert r.status_code in (200, 202), r.text
    h.drain()


def test_a_joined_alert_wakes_the_paused_incident_and_the_slack_click_still_applies(tmp_path: Path) -> None:
    with serve_harness(tmp_path, playbooks_dir=_playbooks(tmp_path)) as h:
        kube = h.service.env.runtime.kube
        nodes = sorted(n.name for n in kube.list_nodes() if n.name.startswith(h.node()[:9]))
        a, b = nodes[2], nodes[9]
        h.admin.inject("xid", node=a, gpu=1, code=74)
        _post_alerts(h, 60)
        (row,) = h.service.store.incidents()
        iid = row.id
        asked = h.service.agent.pending(iid)
        assert asked is not None and (asked.tool, asked.params["node"]) == ("k8s.drain_node", a)
        assert len(h.slack.posted()) == 1
        button = h.button()

        h.admin.inject("xid", node=b, gpu=2, code=74)
        _post_alerts(h, 300)
        assert [r.id for r in h.service.store.incidents()] == [iid]
        # Woken: B is cordoned (through the gate), A's question is the one pending, as it was asked.
        assert kube.get_node(b).unschedulable
        still = h.service.agent.pending(iid)
        assert still is not None and still.action_hash == asked.action_hash
        assert (still.asked_at, still.expires_at) == (asked.asked_at, asked.expires_at)
        prompt = h.service.prompts.get(iid, asked.action_hash)
        assert prompt is not None and prompt.status == "pending" and prompt.expires_at == asked.expires_at
        assert len(h.slack.posted()) == 1 and h.slack.updates() == []  # not asked again
        assert any(p.name for p in kube.list_pods_on_node(a) if not p.daemonset)  # A waits for its human

        # The click on the original prompt applies: A is drained; B's drain asks its own question.
        r = h.click(APPROVER, "approve", button)
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
        h.drain()
        assert [p.name for p in kube.list_pods_on_node(a) if not p.daemonset] == []
        assert h.service.prompts.get(iid, asked.action_hash).status == "approved"  # type: ignore[union-attr]
        nxt = h.service.agent.pending(iid)
        assert nxt is not None and (nxt.tool, nxt.params["node"]) == ("k8s.drain_node", b)
        assert len(h.slack.posted()) == 2 and len(h.slack.updates()) == 1
        r = h.click(APPROVER, "approve", h.button())
        assert r.json()["status"] == "accepted"
        h.drain()
        state = h.service.agent.state(iid)
        assert state.outcome == "mitigated", state.escalation_reason
