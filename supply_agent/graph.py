"""The agent loop: a LangGraph ``StateGraph`` from alert to verified mitigation (or a human).

triage -> investigate -> plan -> (read -> plan)* -> gate -> [approval] -> execute -> verify -> plan ...
-> resolve | escalate -> summarise. Thread id = incident id. Every write goes through the gate and the
guarded executor; a denied, rejected, expired or failed step escalates to a human with the reason.
A node re-runs from its start after a crash or a resume, so each node is safe to run twice: reads
are harmless, and the executor returns the recorded result for a step that already executed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt

from supply_agent.incident import Evidence, IncidentState, Proposal, StepRecord, TimelineEntry
from supply_agent.models import Action, Approval, Verdict
from supply_agent.planners.base import PlanContext, Planner, PlannerError
from supply_agent.policy import (
    OnFailure,
    Step,
    Verify,
)
from supply_agent.runtime import Runtime
from supply_agent.triage import (
    first_reads,
    match_playbook,
    observed,
    severity,
    summarise_read,
    symptom_absent,
)
from tools.catalogue import CATALOGUE, FRESH_METERS, TOOLS, Effect
from tools.kubernetes import ToolError


def default_verify(tool: str) -> Any:
    """How to read back a write that no runbook step describes (an LLM's proposal): the tool table's."""
    spec = CATALOGUE.get(tool)
    return Verify.model_validate(spec.verify).condition if spec and spec.verify is not None else None


@dataclass
class GraphDeps:
    runtime: Runtime
    planner: Planner
    alerting_nodes: Callable[[datetime], frozenset[str]] = lambda now: frozenset()
    human_owner: Callable[[str], str | None] = lambda incident_id: None
    max_reads: int = 30
    max_writes: int = 20
    timings: dict[str, float] = field(default_factory=dict)


def _entry(deps: GraphDeps, node: str, kind: str, text: str, **data: Any) -> TimelineEntry:
    return TimelineEntry(at=deps.runtime.clock(), node=node, kind=kind, text=text, data=data)


def _runbook_step(deps: GraphDeps, state: IncidentState, name: str | None) -> Step | None:
    pb = deps.runtime.playbooks.get(state.playbook_id) if state.playbook_id else None
    if pb is None or name is None:
        return None
    return next((s for s in pb.runbook if s.name == name), None)


def build_graph(deps: GraphDeps, checkpointer: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
    rt = deps.runtime
    pbs = rt.playbooks

    # -- triage ------------------------------------------------------------------------------------
    def triage(state: IncidentState) -> dict[str, Any]:
        pb = match_playbook(pbs, state.alerts)
        sev = severity(pb, state.alerts)
        nodes = state.nodes()
        where = (
            f" on {len(nodes)} node(s): {', '.join(nodes[:5])}{'…' if len(nodes) > 5 else ''}"
            if nodes
            else ""
        )
        text = (
            f"{state.alert.alertname}{where}: playbook {pb.id} ({pb.title}), severity {sev}"
            if pb
            else f"{state.alert.alertname}{where}: no playbook matches, severity {sev}"
        )
        return {
            "playbook_id": pb.id if pb else None,
            "severity": sev,
            "root_cause": pb.id if pb else None,
            "phase": "investigate",
            "read_budget": deps.max_reads,
            "timeline": [_entry(deps, "triage", "triage", text, playbook=pb.id if pb else None)],
        }

    # -- investigate -------------------------------------------------------------------------------
    def _read(
        incident_id: str, tool: str, params: dict[str, Any], node: str, step: str | None, planner: str
    ) -> Evidence:
        t0 = time.perf_counter()
        try:
            if tool in FRESH_METERS:  # the ledger first takes in the meters as they read now (audited)
                rt.ingest_meters(incident_id, 0)
            value = rt.read(tool, params)
            summary, untrusted = summarise_read(tool, value)
            ok = True
        except (ToolError, ValueError, KeyError) as exc:
            value, summary, untrusted, ok = None, f"failed: {exc}", False, False
        return Evidence(
            tool=tool,
            params=params,
            ok=ok,
            summary=summary,
            result=value,
            untrusted=untrusted,
            ms=(time.perf_counter() - t0) * 1000,
            runbook_step=step,
            planner=planner,
        )

    def investigate(state: IncidentState) -> dict[str, Any]:
        evidence = [
            _read(state.incident_id, t, p, "investigate", None, "investigate")
            for t, p in first_reads(state.alert)
        ]
        timeline = [_entry(deps, "investigate", "evidence", f"{e.tool}: {e.summary}") for e in evidence]
        probe = state.model_copy(update={"evidence": [*state.evidence, *evidence]})
        pb = pbs.get(state.playbook_id) if state.playbook_id else None
        update: dict[str, Any] = {
            "evidence": evidence,
            "read_budget": state.read_budget - len(evidence),
            "phase": "plan",
        }
        # What the node showed refines the match: NotReady with ControlPlanePathDown is a partition,
        # with HostUnresponsive a dead host.
        conditions, events = observed(probe.evidence, state.alert.node)
        if conditions is not None or events is not None:
            refined = match_playbook(pbs, state.alerts, conditions, events)
            if (refined.id if refined else None) != state.playbook_id:
                timeline.append(
                    _entry(
                        deps,
                        "investigate",
                        "triage",
                        f"what the node shows changes the playbook: {state.playbook_id or 'none'} → "
                        f"{refined.id if refined else 'none'} (events: {', '.join(events or []) or '-'})",
                    )
                )
                pb = refined
                update |= {"playbook_id": pb.id if pb else None, "root_cause": pb.id if pb else None}
        absent = symptom_absent(probe, pb)
        if absent:
            update |= {"outcome": "no_action", "root_cause": "no-fault", "phase": "summarise"}
            timeline.append(_entry(deps, "investigate", "no_action", f"nothing to do: {absent}"))
        update["timeline"] = timeline
        return update

    # -- plan --------------------------------------------------------------------------------------
    def plan(state: IncidentState) -> dict[str, Any]:
        writes = sum(1 for s in state.steps if s.outcome in ("executed", "duplicate"))
        if writes >= deps.max_writes:
            proposal = Proposal(kind="escalate", reason=f"the incident used its {deps.max_writes} writes")
        else:
            ctx = PlanContext(playbooks=pbs, now=rt.clock(), graph_node="plan", max_steps=deps.max_writes)
            try:
                proposal = deps.planner.propose(state, ctx)
            except PlannerError as exc:
                proposal = Proposal(
                    kind="escalate", planner=deps.planner.name, reason=f"planner failed: {exc}"
                )
        what = f"{proposal.tool} {_short(proposal.params)}" if proposal.kind == "act" else proposal.kind
        return {
            "pending": proposal,
            "llm_calls": proposal.calls,
            "timeline": [
                _entry(
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

    def after_plan(state: IncidentState) -> str:
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

    # -- read (a planner's read, or a hand-off to a human) ------------------------------------------
    def read(state: IncidentState) -> dict[str, Any]:
        p = state.pending
        assert p is not None
        advance = {"runbook_cursor": state.runbook_cursor + 1} if p.runbook_step else {}
        if p.kind == "skip":
            return {**advance, "pending": None, "timeline": [_entry(deps, "read", "skip", p.reason)]}
        assert p.tool is not None
        if p.tool == "escalate.human":
            if p.runbook_step:  # a runbook's hand-off (a hardware ticket): the mitigation goes on
                reason = str(p.params.get("reason", p.reason))
                return {
                    **advance,
                    "handoff": reason,
                    "pending": None,
                    "timeline": [_entry(deps, "read", "handoff", f"hand-off to a human: {reason}")],
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
        ev = _read(state.incident_id, p.tool, p.params, "read", p.runbook_step, p.planner)
        return {
            **advance,
            "evidence": [ev],
            "read_budget": state.read_budget - 1,
            "pending": None,
            "timeline": [_entry(deps, "read", "evidence", f"{ev.tool}: {ev.summary}", planner=p.planner)],
        }

    def after_read(state: IncidentState) -> str:
        return "escalate" if state.pending is not None and state.pending.kind == "escalate" else "plan"

    # -- gate --------------------------------------------------------------------------------------
    def gate(state: IncidentState) -> dict[str, Any]:
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
            index=index, action=action, planner=p.planner, runbook_step=p.runbook_step, more=p.more
        )
        prior = [s for s in state.steps if s.runbook_step and s.runbook_step == p.runbook_step]
        record.attempts = len(prior) + 1
        if owner:
            record.outcome = "refused"
            record.error = f"{owner} took the incident: the agent makes no more writes on it"
            return {
                "steps": [*state.steps, record],
                "timeline": [_entry(deps, "gate", "decision", record.error)],
            }
        with rt.write_lock:
            decision = rt.decide(action, deps.alerting_nodes(rt.clock()), frozenset(state.nodes()))
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
        text = f"{decision.verdict.value.upper()} {action.tool} {_short(action.params)}" + (
            f": {'; '.join(decision.reasons)}" if decision.reasons else ""
        )
        if unenforced:
            text = "NOT ENFORCED (--no-gate ablation): " + text
        return {
            "steps": [*state.steps, record],
            "root_cause": root,
            "timeline": [
                _entry(
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

    def after_gate(state: IncidentState) -> str:
        last = state.steps[-1]
        if last.outcome in ("denied", "refused"):
            return "escalate"
        return "approval" if last.approval_state == "pending" else "execute"

    # -- approval ----------------------------------------------------------------------------------
    def approval(state: IncidentState) -> dict[str, Any]:
        last = state.steps[-1]
        assert last.decision is not None
        asked_at = last.decision.decided_at or rt.clock()
        ttl: timedelta = pbs.limits.approvals.ttl
        expires = asked_at + ttl
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
            if who in approvers or not answer.get("approved", False):
                break
            # Someone who may not approve: audited, and the request stays pending.
            notes.append(
                _entry(deps, "approval", "approval", f"ignored an approval from {who}: not an approver")
            )
        approved = bool(answer.get("approved"))
        record = last.model_copy()
        if at >= expires:
            record.approval_state, record.outcome = "expired", "expired"
            record.error = (
                f"the approval request expired at {expires.isoformat()} (answered {at.isoformat()})"
            )
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
            "timeline": [*notes, _entry(deps, "approval", "approval", text, approver=who, approved=approved)],
        }

    def after_approval(state: IncidentState) -> str:
        return "execute" if state.steps[-1].approval_state == "approved" else "escalate"

    # -- execute -----------------------------------------------------------------------------------
    def execute(state: IncidentState) -> dict[str, Any]:
        last = state.steps[-1]
        assert last.decision is not None
        t0 = time.perf_counter()
        with rt.write_lock:
            owner = deps.human_owner(state.incident_id)
            if owner:
                blocked = f"{owner} took the incident: the agent makes no more writes on it"
                record = last.model_copy(update={"outcome": "refused", "error": blocked})
                return {
                    "steps": [*state.steps[:-1], record],
                    "timeline": [_entry(deps, "execute", "decision", blocked, step=last.index)],
                }
            decision = last.decision
            res = rt.execute(last.action, decision, last.approval)
            if res.stale:
                # The executor refused a decision made before the agent's last write (another incident's,
                # or before a restart or a wait for approval): decide again on the world as it is now.
                decision = rt.decide(last.action, deps.alerting_nodes(rt.clock()), frozenset(state.nodes()))
                res = rt.execute(last.action, decision, last.approval)
                if res.outcome == "refused":
                    res = res.model_copy(
                        update={"reasons": ["the world changed since the gate's decision", *decision.reasons]}
                    )
        record = last.model_copy()
        record.decision = decision
        record.outcome = res.outcome
        record.result = res.result
        record.error = res.error or ("; ".join(res.reasons) if res.outcome == "refused" else None)
        record.io_ms = (time.perf_counter() - t0) * 1000
        detail = _result_line(res.result) if res.result else (record.error or "")
        return {
            "steps": [*state.steps[:-1], record],
            "timeline": [
                _entry(
                    deps,
                    "execute",
                    "action",
                    f"{res.outcome} {last.action.tool} {_short(last.action.params)}{': ' + detail if detail else ''}",
                    outcome=res.outcome,
                    step=last.index,
                )
            ],
        }

    def after_execute(state: IncidentState) -> str:
        last = state.steps[-1]
        if last.outcome in ("executed", "duplicate"):
            return "verify"
        return "escalate"

    # -- verify ------------------------------------------------------------------------------------
    def verify(state: IncidentState) -> dict[str, Any]:
        last = state.steps[-1]
        step = _runbook_step(deps, state, last.runbook_step)
        spec: Verify | None = step.verify if step else None
        condition = spec.condition if spec else default_verify(last.action.tool)
        timeout = spec.timeout if spec else timedelta(minutes=2)
        if condition is None:
            ok, seen = True, "no read-back defined for this tool"
        else:
            ok, seen = rt.verify(condition, last.action, timeout)
        record = last.model_copy(update={"verified": ok, "verify_note": seen})
        update: dict[str, Any] = {"steps": [*state.steps[:-1], record]}
        on_failure: OnFailure = step.on_failure if step else OnFailure()
        if ok:
            if last.runbook_step and not last.more:
                update["runbook_cursor"] = state.runbook_cursor + 1
            text = f"verified {last.action.tool}: {seen}"
        elif on_failure.action == "retry" and record.attempts <= (on_failure.retries or 0):
            text = f"not verified ({seen}); retrying ({record.attempts}/{on_failure.retries})"
        else:
            text = f"not verified within {int(timeout.total_seconds())} s: {seen}"
        update["timeline"] = [_entry(deps, "verify", "verify", text, verified=ok)]
        return update

    def after_verify(state: IncidentState) -> str:
        last = state.steps[-1]
        if last.verified:
            return "plan"
        step = _runbook_step(deps, state, last.runbook_step)
        on_failure = step.on_failure if step else OnFailure()
        if on_failure.action == "retry" and last.attempts <= (on_failure.retries or 0):
            return "plan"  # the cursor did not move: the planner proposes the step again
        return "escalate"

    # -- endings -----------------------------------------------------------------------------------
    def resolve(state: IncidentState) -> dict[str, Any]:
        acted = [s for s in state.steps if s.outcome in ("executed", "duplicate") and s.verified]
        if not acted and state.handoff:  # the runbook's answer is a human (a partition, a broken monitor)
            return {
                "outcome": "escalated",
                "escalation_reason": state.handoff,
                "phase": "summarise",
                "timeline": [_entry(deps, "resolve", "escalate", f"escalated to a human: {state.handoff}")],
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
            "timeline": [_entry(deps, "resolve", "resolve", text)],
        }

    def escalate(state: IncidentState) -> dict[str, Any]:
        reason = _escalation_reason(state)
        return {
            "outcome": "escalated",
            "escalation_reason": reason,
            "phase": "summarise",
            "timeline": [_entry(deps, "escalate", "escalate", f"escalated to a human: {reason}")],
        }

    def summarise(state: IncidentState) -> dict[str, Any]:
        return {"summary": summary_of(state, rt.clock()), "phase": "done"}

    g: StateGraph[Any, Any, Any, Any] = StateGraph(IncidentState)
    for name, fn in [
        ("triage", triage),
        ("investigate", investigate),
        ("plan", plan),
        ("read", read),
        ("gate", gate),
        ("approval", approval),
        ("execute", execute),
        ("verify", verify),
        ("resolve", resolve),
        ("escalate", escalate),
        ("summarise", summarise),
    ]:
        g.add_node(name, _timed(deps, name, fn))
    g.add_edge(START, "triage")
    g.add_edge("triage", "investigate")
    g.add_conditional_edges(
        "investigate", lambda s: "summarise" if s.outcome else "plan", ["summarise", "plan"]
    )
    g.add_conditional_edges("plan", after_plan, ["read", "gate", "resolve", "escalate"])
    g.add_conditional_edges("read", after_read, ["plan", "escalate"])
    g.add_conditional_edges("gate", after_gate, ["approval", "execute", "escalate"])
    g.add_conditional_edges("approval", after_approval, ["execute", "escalate"])
    g.add_conditional_edges("execute", after_execute, ["verify", "escalate"])
    g.add_conditional_edges("verify", after_verify, ["plan", "escalate"])
    g.add_edge("resolve", "summarise")
    g.add_edge("escalate", "summarise")
    g.add_edge("summarise", END)
    return g.compile(checkpointer=checkpointer)


def _timed(deps: GraphDeps, name: str, fn: Callable[[IncidentState], dict[str, Any]]) -> Callable[..., Any]:
    def run(state: IncidentState) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            return fn(state)
        finally:
            deps.timings[name] = deps.timings.get(name, 0.0) + time.perf_counter() - t0

    run.__name__ = name
    return run


def _short(params: dict[str, Any]) -> str:
    keys = ("node", "namespace", "pod", "deployment", "customer", "amount_usd")
    shown = [str(params[k]) for k in keys if k in params]
    return "/".join(shown[:2]) + (
        f" ${params['amount_usd']}" if "amount_usd" in params and len(shown) > 2 else ""
    )


def _result_line(result: dict[str, Any]) -> str:
    if "evicted" in result:
        return (
            f"evicted {len(result['evicted'])}, blocked {len(result.get('blocked', []))}, "
            f"remaining {len(result.get('remaining', []))}"
        )
    if "changed" in result and "detail" in result:
        return str(result["detail"] or ("changed" if result["changed"] else "already so"))
    if "amount_usd" in result:
        return f"credit ${result['amount_usd']} to {result.get('customer')}"
    return ""


def _escalation_reason(state: IncidentState) -> str:
    p = state.pending
    if state.steps:
        last = state.steps[-1]
        what = f"{last.action.tool} {_short(last.action.params)}"
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
