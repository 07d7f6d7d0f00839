"""Asking the containment gate about a proposed write (the mind never decides it)."""

from __future__ import annotations

from typing import Any

from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes.common import entry, short
from supply_agent.models import Action, Verdict
from supply_agent.models.incident import IncidentState, StepRecord


def gate(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    rt = deps.runtime
    p = state.pending
    assert p is not None and p.tool is not None
    index = len(state.steps) + 1
    action = Action(
        tool=p.tool,
        params=p.params,
        incident_id=state.incident_id,
        step=index,
        playbook_id=state.playbook_id,
        proposed_by=p.planner,
        reason=p.reason[:500],
    )
    owner = deps.human_owner(state.incident_id)
    record = StepRecord(
        index=index,
        action=action,
        planner=p.planner,
        runbook_step=p.runbook_step,
        more=p.more,
        subject=p.subject,
    )
    prior = [
        s
        for s in state.steps
        if s.runbook_step and s.runbook_step == p.runbook_step and s.subject == p.subject
    ]
    record.attempts = len(prior) + 1
    if owner:
        record.outcome = "refused"
        record.error = f"{owner} took the incident: the agent makes no more writes on it"
        return {
            "steps": [*state.steps, record],
            "timeline": [entry(deps, "gate", "decision", record.error)],
        }
    with rt.write_lock:
        # The step's own node when the incident has several (a notice is about the node it follows).
        subject = frozenset({p.subject}) if p.subject else frozenset(state.nodes())
        decision = rt.decide(action, deps.alerting_nodes(rt.clock()), subject)
    record.decision = decision
    unenforced = not rt.enforce_gate and decision.verdict != Verdict.ALLOW
    if unenforced:
        pass  # the --no-gate ablation: the decision is logged below and the action goes ahead
    elif decision.verdict == Verdict.DENY:
        record.outcome = "denied"
    elif decision.verdict == Verdict.ASK:
        record.approval_state = "pending"
    root: str | None = state.root_cause
    if any("mass failure" in r for r in decision.reasons):
        root = "mass-failure"
    text = f"{decision.verdict.value.upper()} {action.tool} {short(action.params)}" + (
        f": {'; '.join(decision.reasons)}" if decision.reasons else ""
    )
    if unenforced:
        text = "NOT ENFORCED (--no-gate ablation): " + text
    return {
        "steps": [*state.steps, record],
        "root_cause": root,
        "timeline": [
            entry(
                deps,
                "gate",
                "decision",
                text,
                verdict=decision.verdict.value,
                reasons=list(decision.reasons),
                step=index,
            )
        ],
    }


def after_gate(state: IncidentState, deps: GraphDeps) -> str:
    last = state.steps[-1]
    if last.outcome in ("denied", "refused"):
        return "escalate"
    return "approval" if last.approval_state == "pending" else "execute"
