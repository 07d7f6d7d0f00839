"""Waiting for a human's answer to the gate's ``ask``: the thread pauses (interrupt) and resumes on it.

Alerts that join an incident while it waits wake it (the interrupt resumed with a *wake*, not an
answer): the step waiting for approval is *parked* (kept in the steps, its approval still pending) and
the thread goes back to planning, so the new entities get the steps that need no human now. When the
plan reaches the parked step again, this node asks the same question again: the same action (its step
index, so its hash), the same ``asked_at`` and ``expires_at`` (the TTL does not restart), so an answer
bound to the original request (a Slack click: incident + action hash) still applies.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from langgraph.types import interrupt

from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes.common import entry
from supply_agent.models import Approval
from supply_agent.models.approvals import counts, expired, expires_at
from supply_agent.models.incident import IncidentState, Proposal, StepRecord, TimelineEntry

WAKE = "wake"  # the resume value's ``kind`` that wakes a paused thread (alerts joined) without answering


def is_wake(answer: Any) -> bool:
    """Whether a resume value is a wake (alerts joined the incident), not a human's answer."""
    return isinstance(answer, dict) and answer.get("kind") == WAKE


def parked(state: IncidentState) -> StepRecord | None:
    """The step whose approval is pending while the thread works on (the earliest such; None if none)."""
    return next((s for s in state.steps if s.approval_state == "pending"), None)


def _same_step(p: Proposal, step: StepRecord, state: IncidentState) -> bool:
    """Whether a proposal is the parked step proposed again: the same runbook step for the same node (a
    step recorded with no subject was the first node's), or the same action when no runbook names it."""
    if p.kind != "act" or p.tool != step.action.tool:
        return False
    if step.runbook_step:
        first = state.alert.node
        return p.runbook_step == step.runbook_step and (p.subject or first) == (step.subject or first)
    return p.params == step.action.params


def back_to_parked(state: IncidentState) -> bool:
    """After planning: whether the thread goes back to the parked approval. It does when the plan reaches
    the parked step again, or says it is done while that step waits (an incident does not resolve with a
    question open)."""
    held = parked(state)
    p = state.pending
    if held is None or p is None:
        return False
    return p.kind == "done" or _same_step(p, held, state)


def request_of(state: IncidentState, step: StepRecord, deps: GraphDeps) -> dict[str, Any]:
    """The question asked about one step: built from the step's record only, so asking again (after a
    restart, or when the plan comes back to a parked step) asks exactly the same thing."""
    rt = deps.runtime
    assert step.decision is not None
    asked_at = step.decision.decided_at or rt.clock()
    ttl: timedelta = rt.playbooks.limits.approvals.ttl
    return {
        "kind": "approval",
        "incident_id": state.incident_id,
        "step": step.index,
        "action_hash": step.action.digest(),
        "tool": step.action.tool,
        "params": step.action.params,
        "why": step.action.reason,
        "planner": step.planner,
        "blast_radius": step.decision.targets.model_dump(mode="json"),
        "reasons": list(step.decision.reasons),
        "asked_at": asked_at.isoformat(),
        "expires_at": expires_at(asked_at, ttl).isoformat(),
        "approvers": sorted(rt.executor.approvers),
    }


def asks_behind_parked(state: IncidentState) -> bool:
    """After the gate: whether the step it just asked about came while another waits (parked)."""
    held = parked(state)
    last = state.steps[-1] if state.steps else None
    return held is not None and last is not None and last is not held and last.approval_state == "pending"


def defer(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    """One question at a time: the gate asks about a new step while a parked one waits (its answer may
    be on its way). The new step is let go, written nowhere; the plan proposes it again once the parked
    step is answered, and the thread pauses on the parked request, as it was asked."""
    held = parked(state)
    last = state.steps[-1]
    assert held is not None
    text = f"{last.action.tool} needs an approval too: asked once step {held.index}'s is answered"
    return {
        "steps": state.steps[:-1],
        "timeline": [entry(deps, "defer", "approval", text, step=last.index, waits_for=held.index)],
    }


def approval(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    rt = deps.runtime
    target = parked(state)
    assert target is not None and target.decision is not None
    notes: list[TimelineEntry] = []
    request = request_of(state, target, deps)
    expires = datetime.fromisoformat(request["expires_at"])
    approvers = rt.executor.approvers
    while True:
        answer = interrupt(request)
        if is_wake(answer):
            # Alerts joined: plan for them while this step's approval stays pending (parked).
            text = (
                f"alerts joined while {target.action.tool} (step {target.index}) waits for approval: "
                "planning for them; the approval stays pending"
            )
            woke = entry(deps, "approval", "approval", text, step=target.index, wake=True)
            return {"timeline": [*notes, woke]}
        if not isinstance(answer, dict):
            answer = {"approved": bool(answer)}
        who = str(answer.get("approver", "unknown"))
        at_raw = answer.get("decided_at")
        at = datetime.fromisoformat(at_raw) if isinstance(at_raw, str) else rt.clock()
        if counts(who, bool(answer.get("approved", False)), approvers):
            break
        # Someone who may not approve: audited, and the request stays pending.
        notes.append(entry(deps, "approval", "approval", f"ignored an approval from {who}: not an approver"))
    approved = bool(answer.get("approved"))
    record = target.model_copy()
    p = state.pending
    if p is not None and _same_step(p, target, state):
        # The plan came back to the parked step: it is now for one node of several (the cursor moves
        # on only when every node had it).
        record.subject, record.more = p.subject, p.more
    if expired(at, expires):
        record.approval_state, record.outcome = "expired", "expired"
        record.error = f"the approval request expired at {expires.isoformat()} (answered {at.isoformat()})"
        text = record.error
    elif not approved:
        record.approval_state, record.outcome = "rejected", "rejected"
        record.error = f"rejected by {who}" + (f": {answer['comment']}" if answer.get("comment") else "")
        text = record.error
    else:
        record.approval_state = "approved"
        record.approval = Approval(
            action_hash=target.action.digest(),
            approver=who,
            approved=True,
            decided_at=at,
            expires_at=expires,
            channel=str(answer.get("channel", "terminal")),
        )
        text = f"approved by {who} via {record.approval.channel}"
    # The answered step goes last: execute and verify act on the last step.
    return {
        "steps": [*(s for s in state.steps if s is not target), record],
        "timeline": [*notes, entry(deps, "approval", "approval", text, approver=who, approved=approved)],
    }


def after_approval(state: IncidentState, deps: GraphDeps) -> str:
    if parked(state) is not None:
        return "plan"  # woken: the parked step waits, the plan goes on for the alerts that joined
    return "execute" if state.steps[-1].approval_state == "approved" else "escalate"
