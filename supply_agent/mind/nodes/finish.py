"""How an incident ends: mitigated, no action, or a human with the reason; then its report."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes.common import entry, short
from supply_agent.models import Action
from supply_agent.models.incident import IncidentState


def resolve(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    acted = [s for s in state.steps if s.outcome in ("executed", "duplicate") and s.verified]
    if not acted and state.handoff:  # the runbook's answer is a human (a partition, a broken monitor)
        return {
            "outcome": "escalated",
            "escalation_reason": state.handoff,
            "phase": "summarise",
            "timeline": [entry(deps, "resolve", "escalate", f"escalated to a human: {state.handoff}")],
        }
    left = goal_left(state, deps) if acted else []
    if left:
        # The runbook ran and every step verified, but the world does not show the symptom gone.
        reason = "the runbook ran, but the symptom is still there: " + "; ".join(left)
        if state.handoff:
            reason += f" ({state.handoff})"
        return {
            "outcome": "escalated",
            "escalation_reason": reason,
            "phase": "summarise",
            "timeline": [entry(deps, "resolve", "escalate", f"escalated to a human: {reason}")],
        }
    outcome = "mitigated" if acted else "no_action"
    text = (
        f"mitigated: {len(acted)} action(s) executed and verified"
        if acted
        else "no action needed: the runbook finished without a write"
    )
    return {
        "outcome": outcome,
        "phase": "summarise",
        "timeline": [entry(deps, "resolve", "resolve", text)],
    }


def goal_left(state: IncidentState, deps: GraphDeps) -> list[str]:
    """What of the playbook's goal does not hold now, read back from the cluster (empty: all does)."""
    from supply_agent.mind.planners.runbook import trusted_labels

    pb = deps.runtime.playbooks.get(state.playbook_id) if state.playbook_id else None
    if pb is None or not pb.goal:
        return []
    labels = trusted_labels(state.alert)
    probe = Action(tool="goal", params=labels, incident_id=state.incident_id, step=len(state.steps))
    left = []
    for condition in pb.goal:
        try:
            ok, seen = deps.runtime.check(condition, probe)
        except KeyError as exc:  # the alert does not name what the goal reads
            ok, seen = False, f"{condition.check}: the alert names no {exc}"
        if not ok:
            left.append(seen)
    return left


def escalate(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    reason = escalation_reason(state)
    return {
        "outcome": "escalated",
        "escalation_reason": reason,
        "phase": "summarise",
        "timeline": [entry(deps, "escalate", "escalate", f"escalated to a human: {reason}")],
    }


def summarise(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    rt = deps.runtime
    return {"summary": summary_of(state, rt.clock()), "phase": "done"}


def escalation_reason(state: IncidentState) -> str:
    p = state.pending
    if state.steps:
        last = state.steps[-1]
        what = f"{last.action.tool} {short(last.action.params)}"
        if last.outcome == "denied" and last.decision is not None:
            return f"the gate denied {what}: {'; '.join(last.decision.reasons)}"
        if last.outcome in ("rejected", "expired", "refused", "failed"):
            return f"{what}: {last.error}"
        if last.verified is False:
            return f"{what} was not verified: {last.verify_note}"
    if p is not None and p.kind == "escalate":
        return p.reason or "the planner asked for a human"
    return "the agent could not finish the incident"


def summary_of(state: IncidentState, now: datetime) -> dict[str, Any]:
    """The incident report: what happened, the evidence, each proposal with its decision, each action
    with its result, time and cost."""
    tokens = sum(c.input_tokens + c.output_tokens for c in state.llm_calls)
    cost = sum((c.cost_usd for c in state.llm_calls), Decimal(0))
    return {
        "incident_id": state.incident_id,
        "alert": state.alert.alertname,
        "nodes": state.nodes(),
        "playbook": state.playbook_id,
        "severity": state.severity,
        "outcome": state.outcome,
        "root_cause": state.root_cause,
        "escalation_reason": state.escalation_reason,
        "handoff": state.handoff,
        "evidence": [
            {"tool": e.tool, "params": e.params, "summary": e.summary, "ok": e.ok} for e in state.evidence
        ],
        "proposals": [
            {
                "step": s.index,
                "tool": s.action.tool,
                "params": s.action.params,
                "planner": s.planner,
                "runbook_step": s.runbook_step,
                "decision": s.decision.verdict.value if s.decision else None,
                "reasons": list(s.decision.reasons) if s.decision else [],
                "approval": s.approval_state,
                "approver": s.approval.approver if s.approval else None,
            }
            for s in state.steps
        ],
        "actions": [
            {
                "step": s.index,
                "tool": s.action.tool,
                "params": s.action.params,
                "outcome": s.outcome,
                "verified": s.verified,
                "verify": s.verify_note,
                "result": s.result,
                "error": s.error,
            }
            for s in state.steps
            if s.outcome in ("executed", "duplicate", "failed")
        ],
        "llm": {"calls": len(state.llm_calls), "tokens": tokens, "cost_usd": str(cost)},
        "opened_at": state.opened_at.isoformat(),
        "closed_at": now.isoformat(),
        "duration_s": max(0.0, (now - state.opened_at).total_seconds()),
    }
