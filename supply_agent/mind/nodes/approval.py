"""Waiting for a human's answer to the gate's ``ask``: the thread pauses (interrupt) and resumes on it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from langgraph.types import interrupt

from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes.common import entry
from supply_agent.models import Approval
from supply_agent.models.approvals import counts, expired, expires_at
from supply_agent.models.incident import IncidentState, TimelineEntry


def approval(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    rt = deps.runtime
    pbs = deps.runtime.playbooks
    last = state.steps[-1]
    assert last.decision is not None
    asked_at = last.decision.decided_at or rt.clock()
    ttl: timedelta = pbs.limits.approvals.ttl
    expires = expires_at(asked_at, ttl)
    approvers = rt.executor.approvers
    request = {
        "kind": "approval",
        "incident_id": state.incident_id,
        "step": last.index,
        "action_hash": last.action.digest(),
        "tool": last.action.tool,
        "params": last.action.params,
        "why": last.action.reason,
        "planner": last.planner,
        "blast_radius": last.decision.targets.model_dump(mode="json"),
        "reasons": list(last.decision.reasons),
        "asked_at": asked_at.isoformat(),
        "expires_at": expires.isoformat(),
        "approvers": sorted(approvers),
    }
    notes: list[TimelineEntry] = []
    while True:
        answer = interrupt(request)
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
    record = last.model_copy()
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
            action_hash=last.action.digest(),
            approver=who,
            approved=True,
            decided_at=at,
            expires_at=expires,
            channel=str(answer.get("channel", "terminal")),
        )
        text = f"approved by {who} via {record.approval.channel}"
    return {
        "steps": [*state.steps[:-1], record],
        "timeline": [*notes, entry(deps, "approval", "approval", text, approver=who, approved=approved)],
    }


def after_approval(state: IncidentState, deps: GraphDeps) -> str:
    return "execute" if state.steps[-1].approval_state == "approved" else "escalate"
