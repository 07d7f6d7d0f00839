"""Planning the next step, and the reads (or the hand-off) a planner proposes."""

from __future__ import annotations

from typing import Any

from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes.common import entry, short
from supply_agent.mind.nodes.investigate import read_evidence
from supply_agent.mind.planners.base import PlanContext, PlannerError
from supply_agent.models.incident import IncidentState, Proposal
from tools.catalogue import TOOLS, Effect


def plan(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    rt = deps.runtime
    pbs = deps.runtime.playbooks
    writes = sum(1 for s in state.steps if s.outcome in ("executed", "duplicate"))
    if writes >= deps.max_writes:
        proposal = Proposal(kind="escalate", reason=f"the incident used its {deps.max_writes} writes")
    else:
        ctx = PlanContext(playbooks=pbs, now=rt.clock(), graph_node="plan", max_steps=deps.max_writes)
        try:
            proposal = deps.planner.propose(state, ctx)
        except PlannerError as exc:
            proposal = Proposal(kind="escalate", planner=deps.planner.name, reason=f"planner failed: {exc}")
    what = f"{proposal.tool} {short(proposal.params)}" if proposal.kind == "act" else proposal.kind
    return {
        "pending": proposal,
        "llm_calls": proposal.calls,
        "timeline": [
            entry(
                deps,
                "plan",
                "proposal",
                f"[{proposal.planner}] {what}: {proposal.reason}",
                planner=proposal.planner,
                tool=proposal.tool,
                params=proposal.params,
            )
        ],
    }


def after_plan(state: IncidentState, deps: GraphDeps) -> str:
    p = state.pending
    if p is None or p.kind == "escalate":
        return "escalate"
    if p.kind == "done":
        return "resolve"
    if p.kind == "skip":
        return "read"
    if p.tool not in TOOLS:
        return "gate"  # the gate denies unknown tools, with the reason
    if TOOLS[p.tool] == Effect.READ:
        return "read"
    return "gate"


def read(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    p = state.pending
    assert p is not None
    advance = {"runbook_cursor": state.runbook_cursor + 1} if p.runbook_step and not p.more else {}
    if p.kind == "skip":
        skipped = entry(deps, "read", "skip", p.reason, runbook_step=p.runbook_step, subject=p.subject)
        return {**advance, "pending": None, "timeline": [skipped]}
    assert p.tool is not None
    if p.tool == "escalate.human":
        if p.runbook_step:  # a runbook's hand-off (a hardware ticket): the mitigation goes on
            reason = str(p.params.get("reason", p.reason))
            # One hand-off per affected node: each is kept (a human gets every node's ticket).
            handoff = (
                f"{state.handoff}; {reason}" if state.handoff and reason not in state.handoff else reason
            )
            text = f"hand-off to a human: {reason}"
            return {
                **advance,
                "handoff": handoff,
                "pending": None,
                "timeline": [
                    entry(deps, "read", "handoff", text, runbook_step=p.runbook_step, subject=p.subject)
                ],
            }
        return {
            "pending": p.model_copy(
                update={"kind": "escalate", "reason": str(p.params.get("reason", p.reason))}
            )
        }
    if state.read_budget <= 0:
        return {
            "pending": Proposal(
                kind="escalate", reason=f"investigation budget of {deps.max_reads} reads spent"
            ),
        }
    ev = read_evidence(deps, state.incident_id, p.tool, p.params, "read", p.runbook_step, p.planner)
    if p.subject:
        ev = ev.model_copy(update={"subject": p.subject})
    return {
        **advance,
        "evidence": [ev],
        "read_budget": state.read_budget - 1,
        "pending": None,
        "timeline": [entry(deps, "read", "evidence", f"{ev.tool}: {ev.summary}", planner=p.planner)],
    }


def after_read(state: IncidentState, deps: GraphDeps) -> str:
    return "escalate" if state.pending is not None and state.pending.kind == "escalate" else "plan"
