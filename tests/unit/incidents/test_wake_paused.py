"""An alert that joins an incident paused at an approval wakes it: the joined node gets the steps that
need no human now (through the gate), while the first node's request stays pending, answerable as it was
asked (same action hash, same expiry), and the thread pauses on it again. On the sandbox fleet (loopback)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.clock import SimClock
from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import Fleet, FleetSpec
from supply_agent.incidents.agent import ApprovalAnswer, ApprovalRequest, RunResult, open_agent
from supply_agent.mind.planners.base import PlanContext, Planner
from supply_agent.mind.planners.runbook import RunbookPlanner
from supply_agent.models.incident import IncidentState, Proposal
from supply_agent.policy import GlobalLimits, PlaybookSet, load_playbooks
from supply_agent.settings import Settings
from tests.support.agent_harness import APPROVER, Harness

PLAYBOOKS = Path(__file__).resolve().parents[3] / "playbooks"


def _playbooks(gpus_out_soft: int | None) -> PlaybookSet:
    pbs = load_playbooks(PLAYBOOKS)
    if gpus_out_soft is None:
        return pbs
    limits = pbs.limits.model_dump()
    limits["blast_radius"]["gpus_out"] = {"soft": gpus_out_soft, "hard": 32}
    return PlaybookSet(limits=GlobalLimits.model_validate(limits), playbooks=pbs.playbooks)


@contextlib.contextmanager
def fleet_agent(
    tmp: Path, gpus_out_soft: int | None = 16, planner: Planner | None = None
) -> Iterator[Harness]:
    """The agent harness, with the GPUs-out soft limit raised (by default) so that a second node's cordon
    needs no approval: two 8-GPU nodes out is 16."""
    fleet = Fleet(FleetSpec(nodes=24, pools=2, seed=7), SimClock("manual"))
    fleet.generate()
    with FleetServer(fleet) as server:
        kubeconfig = tmp / "kubeconfig"
        server.write_kubeconfig(kubeconfig)
        s = Settings(data_dir=tmp / "var", approvers=[APPROVER], verify_cap_s=5.0)
        with open_agent(
            s, kubeconfig, planner=planner or RunbookPlanner(), playbooks=_playbooks(gpus_out_soft)
        ) as (
            agent,
            env,
        ):
            env.runtime.verify_poll_s = 0.05
            yield Harness(fleet, server, kubeconfig, AdminClient.from_kubeconfig(kubeconfig), s, agent, env)


def _only(results: list[RunResult]) -> RunResult:
    assert len(results) == 1, [r.incident_id for r in results]
    return results[0]


def _paused_on_a(h: Harness) -> tuple[str, str, RunResult]:
    """Node A's XID 74: cordoned, its customers told, its drain waiting for approval."""
    a, b = h.nodes()[2], h.nodes()[9]
    h.inject("xid", node=a, gpu=1, code=74)
    paused = _only(h.handle(None, advance_s=60))
    assert paused.status == "paused" and paused.pending is not None
    assert (paused.pending.tool, paused.pending.params["node"]) == ("k8s.drain_node", a)
    return a, b, paused


def _b_joins(h: Harness, b: str) -> list[RunResult]:
    h.inject("xid", node=b, gpu=2, code=74)
    return h.handle(None, advance_s=300)  # five minutes later: the alert folds into A's incident


def _same_request(before: ApprovalRequest, after: ApprovalRequest | None) -> None:
    assert after is not None
    assert after.action_hash == before.action_hash and after.step == before.step
    assert (after.asked_at, after.expires_at) == (before.asked_at, before.expires_at)  # the TTL runs on
    assert (after.tool, after.params) == (before.tool, before.params)


def _unschedulable(h: Harness, node: str) -> bool:
    return bool(h.env.runtime.kube.get_node(node).unschedulable)


def _tenant_pods(h: Harness, node: str) -> list[str]:
    return [p.name for p in h.env.runtime.kube.list_pods_on_node(node) if not p.daemonset]


def _writes(result: RunResult, tool: str, node: str) -> list[Any]:
    return [
        s
        for s in result.state.steps
        if s.action.tool == tool and s.action.params.get("node") == node and s.outcome == "executed"
    ]


def test_a_joined_node_is_cordoned_while_the_first_nodes_approval_stays_pending(tmp_path: Path) -> None:
    with fleet_agent(tmp_path) as h:
        a, b, paused = _paused_on_a(h)
        assert paused.pending is not None
        iid = paused.incident_id
        assert _tenant_pods(h, a)
        woken = _only(_b_joins(h, b))
        assert woken.incident_id == iid and woken.status == "paused"
        # B is contained now, through the gate, and A's request is the one still pending, unchanged.
        assert _unschedulable(h, b) and _writes(woken, "k8s.cordon_node", b)
        _same_request(paused.pending, woken.pending)
        assert _tenant_pods(h, a), "A's drain ran without its approval"
        assert not _writes(woken, "k8s.drain_node", b)
        assert any(e.data.get("wake") for e in woken.state.timeline)
        # An answer bound to some other request does not land on this one.
        other = ApprovalAnswer(
            approved=True, approver=APPROVER, decided_at=h.env.runtime.clock(), action_hash="0" * 64
        )
        with pytest.raises(ValueError, match="pending approval is for"):
            h.agent.run(iid, resume=other)
        # The normal path answers A's request: A is drained; B's drain then asks its own question.
        after_a = h.answer(woken, approved=True)
        assert _writes(after_a, "k8s.drain_node", a) and _tenant_pods(h, a) == []
        drained_a = next(s for s in after_a.state.steps if s.action.tool == "k8s.drain_node")
        assert drained_a.action.digest() == paused.pending.action_hash and drained_a.approval is not None
        assert after_a.pending is not None and after_a.pending.params["node"] == b
        assert after_a.pending.action_hash != paused.pending.action_hash
        done = h.answer(after_a, approved=True)
        assert done.status == "done" and done.state.outcome == "mitigated", done.state.escalation_reason
        assert _writes(done, "k8s.drain_node", b)
        assert {n for n in (a, b) if _unschedulable(h, n)} == {a, b}


def test_a_rejected_first_approval_leaves_the_joined_nodes_containment_done(tmp_path: Path) -> None:
    with fleet_agent(tmp_path) as h:
        a, b, paused = _paused_on_a(h)
        woken = _only(_b_joins(h, b))
        assert woken.pending is not None and paused.pending is not None
        assert woken.pending.action_hash == paused.pending.action_hash
        done = h.answer(woken, approved=False)
        assert done.status == "done" and done.state.outcome == "escalated"
        assert "rejected by" in (done.state.escalation_reason or "")
        assert _unschedulable(h, b) and _writes(done, "k8s.cordon_node", b)
        assert _tenant_pods(h, a) and not _writes(done, "k8s.drain_node", a)


def test_waking_with_no_new_alerts_changes_nothing(tmp_path: Path) -> None:
    with fleet_agent(tmp_path) as h:
        _, b, paused = _paused_on_a(h)
        iid = paused.incident_id
        history = len(list(h.agent.graph.get_state_history(h.agent.config(iid))))
        assert h.agent.wake(iid) is None  # nothing joined: not even a checkpoint
        assert len(list(h.agent.graph.get_state_history(h.agent.config(iid)))) == history
        woken = _only(_b_joins(h, b))
        steps, timeline = woken.state.steps, woken.state.timeline
        history = len(list(h.agent.graph.get_state_history(h.agent.config(iid))))
        assert h.agent.wake(iid) is None  # the same joined alerts again: taken in already
        assert h.handle(None, advance_s=0) == []
        state = h.agent.state(iid)
        assert state.steps == steps and state.timeline == timeline
        assert len(list(h.agent.graph.get_state_history(h.agent.config(iid)))) == history
        _same_request(paused.pending, h.agent.pending(iid))  # type: ignore[arg-type]


def test_a_wake_cut_short_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    with fleet_agent(tmp_path) as h:
        a, b, paused = _paused_on_a(h)
        iid = paused.incident_id

        def crash(node: str, part: dict[str, Any]) -> None:
            if node == "read":  # the wake got as far as reading B
                raise RuntimeError("killed mid-wake")

        h.agent.on_update = crash
        with pytest.raises(RuntimeError, match="killed mid-wake"):
            _b_joins(h, b)
        h.agent.on_update = None
        assert h.agent.unfinished(iid) and h.agent.pending(iid) is None
        assert h.agent.wake(iid) is None  # not paused: the checkpoint is what goes on
        # A run of the thread (the service's reconcile, or ``run`` after a restart) goes on from there.
        resumed = h.agent.run(iid)
        assert resumed.status == "paused"
        _same_request(paused.pending, resumed.pending)  # type: ignore[arg-type]
        assert _unschedulable(h, b) and len(_writes(resumed, "k8s.cordon_node", b)) == 1
        assert h.agent.wake(iid) is None
        done = h.answer(resumed, approved=True)
        assert _writes(done, "k8s.drain_node", a)


def test_a_joined_node_whose_cordon_needs_approval_waits_behind_the_pending_request(tmp_path: Path) -> None:
    """With the default limits a second 8-GPU node out (16 GPUs) is over the soft limit: the gate asks.
    One question at a time: A's stays pending as asked, B's cordon is not written, and it is asked once
    A's is answered."""
    with fleet_agent(tmp_path, gpus_out_soft=None) as h:
        a, b, paused = _paused_on_a(h)
        woken = _only(_b_joins(h, b))
        _same_request(paused.pending, woken.pending)  # type: ignore[arg-type]
        assert not _unschedulable(h, b) and not _writes(woken, "k8s.cordon_node", b)
        assert [s.approval_state for s in woken.state.steps].count("pending") == 1
        after_a = h.answer(woken, approved=True)
        assert _writes(after_a, "k8s.drain_node", a)
        assert after_a.pending is not None
        assert (after_a.pending.tool, after_a.pending.params["node"]) == ("k8s.cordon_node", b)


class _EscalatesOn(RunbookPlanner):
    """The runbook, except that it hands the incident to a human when it comes to one node's cordon."""

    def __init__(self) -> None:
        self.node = ""

    def propose(self, state: IncidentState, ctx: PlanContext) -> Proposal:
        p = super().propose(state, ctx)
        if self.node and p.tool == "k8s.cordon_node" and p.params.get("node") == self.node:
            return Proposal(kind="escalate", planner=self.name, reason=f"{self.node} needs a human")
        return p


def test_an_escalation_while_a_step_is_parked_ends_the_thread_and_nothing_runs_unapproved(
    tmp_path: Path,
) -> None:
    planner = _EscalatesOn()
    with fleet_agent(tmp_path, planner=planner) as h:
        a, b, _ = _paused_on_a(h)
        planner.node = b
        done = _only(_b_joins(h, b))
        assert done.status == "done" and done.pending is None
        assert done.state.outcome == "escalated" and b in (done.state.escalation_reason or "")
        assert _tenant_pods(h, a) and not _writes(done, "k8s.drain_node", a)
        assert not _unschedulable(h, b)
