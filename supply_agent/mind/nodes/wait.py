"""Waiting for a better moment before a step that stops gang jobs (supply_agent.policy.waiting).

plan -> schedule -> gate (now) | wait (a pause). ``schedule`` asks the gate which gang jobs the step
would stop (the same reads as the decision, nothing written), reads the alert GPU's recovery action from
the incident's own NVML report, and plans the moment: just after the checkpoint that throws away the
least work, never past the deadline counted from when the step *first* came due (kept in
``state.scheduled``, so waking does not move it). Only a step the gate would allow now waits: a question
for a human is asked at once (the checkpoint's age is in its reasons) and the human picks the moment.

``wait`` pauses the thread (an interrupt of kind "wait", its time in the request). The service's durable
timer, or the eval's clock, resumes it then; alerts that join wake it, as they wake an approval; a human
who takes the incident ends it. Either way the thread plans again, and the step, proposed again, is
scheduled again: it runs once its wait has passed, and the gate decides it on the world as it is then.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from langgraph.types import interrupt

from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes import approval
from supply_agent.mind.nodes.common import entry, runbook_step, short
from supply_agent.mind.nodes.gate import action_of, decide
from supply_agent.models import Verdict
from supply_agent.models.health import pace
from supply_agent.models.incident import IncidentState, Proposal, ScheduledStep
from supply_agent.policy.waiting import WaitForCheckpoint, plan_wait
from tools.catalogue import DISRUPTING

WAIT = "wait"  # the interrupt's kind
TIMER = "timer"  # the resume value's kind when the wait's time has come
TAKEN = "taken"  # and when a human took the incident before it


def step_key(state: IncidentState, p: Proposal) -> str:
    """Where a scheduled step is kept: its runbook step and node (the first node's when none is named)."""
    return f"{p.runbook_step}@{p.subject or state.alert.node or '-'}"


def option_of(state: IncidentState, deps: GraphDeps) -> WaitForCheckpoint | None:
    """The pending proposal's ``wait_for_checkpoint``: a runbook step that stops gang jobs and may wait."""
    p = state.pending
    if p is None or p.kind != "act" or p.tool not in DISRUPTING or not p.runbook_step:
        return None
    step = runbook_step(deps, state, p.runbook_step)
    if step is None or step.tool != p.tool:
        return None
    return step.wait_for_checkpoint


def needs_schedule(state: IncidentState, deps: GraphDeps) -> bool:
    """After planning: whether the proposed step is one that may wait. Not while a step is parked at its
    approval: the thread pauses on that question, one pause at a time."""
    return option_of(state, deps) is not None and approval.parked(state) is None


def _reports(state: IncidentState, node: str | None) -> Iterator[list[dict[str, Any]]]:
    """The GPUs of the incident's NVML reports of ``node``, newest first: the alert's GPU alone where
    the alert names one, else every GPU of the node."""
    gpu = next((a.labels.get("gpu") for a in state.alerts if a.node == node and a.labels.get("gpu")), None)
    for ev in reversed(state.evidence):
        if not ev.ok or ev.tool != "nvml.gpu_health" or ev.params.get("node") != node:
            continue
        report = (ev.result.get("report") if isinstance(ev.result, dict) else None) or {}
        yield [
            g
            for g in report.get("gpus") or []
            if isinstance(g, dict) and (gpu is None or str(g.get("index")) == str(gpu))
        ]


def _recovery_action(state: IncidentState, node: str | None) -> str | None:
    """The recovery action the incident's own latest NVML report gives the alert's GPU on ``node`` (any
    GPU of it that reports one when the alert names none); None when no report says."""
    for gpus in _reports(state, node):
        said = [str(g["recovery_action"]) for g in gpus if g.get("recovery_action")]
        if said:  # a GPU that needs something says more than one that needs nothing
            return next((a for a in said if a != "none"), said[0])
    return None


def _pace(state: IncidentState, node: str | None) -> float | None:
    """The pace of the alert's GPU on ``node`` (the slowest of the node's GPUs when the alert names
    none), from the incident's latest NVML report: its SM clock over its maximum; None when not read."""
    for gpus in _reports(state, node):
        paces = [p for g in gpus if (p := pace(g)) is not None]
        return min(paces) if paces else None
    return None


def schedule(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    rt = deps.runtime
    p = state.pending
    option = option_of(state, deps)
    assert p is not None and p.tool is not None and option is not None
    now = rt.clock()
    key = step_key(state, p)
    before = state.scheduled.get(key)
    node = p.subject or state.alert.node
    what = f"{p.tool} {short(p.params)}"
    owner = deps.human_owner(state.incident_id)
    if owner:  # the gate refuses the step now: no wait for a step that will not run
        return _now(deps, state, key, now, f"{what}: {owner} took the incident: no wait")
    if before is not None and now >= before.until:
        text = f"{what}: its wait ended at {before.until:%H:%M:%S} ({', '.join(before.waits_for)}): runs now"
        return _now(deps, state, key, now, text)
    with rt.write_lock:
        decision = decide(state, deps, action_of(state, p), p.subject)
    if decision.verdict != Verdict.ALLOW and rt.enforce_gate:
        # A question is never held back: the human is asked now, the checkpoint's age in the reasons,
        # and chooses the moment; a step the gate denies is denied now.
        return _now(deps, state, key, now, f"{what}: the gate would {decision.verdict.value} now: no wait")
    hits = decision.targets.workloads
    first_due = before.first_due if before is not None else now
    plan = plan_wait(option, hits, now, first_due, _recovery_action(state, node), _pace(state, node))
    if plan.until is None:  # plan_wait's moments are all after now
        return _now(deps, state, key, now, f"{what}: {plan.reason}")
    slot = ScheduledStep(
        key=key,
        tool=p.tool,
        subject=node,
        first_due=first_due,
        until=plan.until,
        deadline=plan.deadline,
        reason=plan.reason,
        waits_for=list(plan.waits_for),
    )
    text = f"{what} scheduled for {plan.until:%H:%M:%S}: {plan.reason}"
    return {
        "scheduled": {**state.scheduled, key: slot},
        "timeline": [
            entry(
                deps,
                "schedule",
                "scheduled",
                text,
                step_key=key,
                until=plan.until.isoformat(),
                deadline=plan.deadline.isoformat(),
                waits_for=list(plan.waits_for),
            )
        ],
    }


def _now(deps: GraphDeps, state: IncidentState, key: str, now: datetime, text: str) -> dict[str, Any]:
    """The step runs now: said on the timeline, and a wait it had ends now (its first due time and
    deadline kept)."""
    out: dict[str, Any] = {"timeline": [entry(deps, "schedule", "scheduled", text, step_key=key, now=True)]}
    before = state.scheduled.get(key)
    if before is not None and before.until > now:
        out["scheduled"] = {**state.scheduled, key: before.model_copy(update={"until": now})}
    return out


def after_schedule(state: IncidentState, deps: GraphDeps) -> str:
    p = state.pending
    slot = state.scheduled.get(step_key(state, p)) if p is not None else None
    return WAIT if slot is not None and slot.until > deps.runtime.clock() else "gate"


def request_of(state: IncidentState, slot: ScheduledStep) -> dict[str, Any]:
    """What the thread waits for, built from the stored slot only (asking again asks the same)."""
    return {
        "kind": WAIT,
        "incident_id": state.incident_id,
        "step_key": slot.key,
        "tool": slot.tool,
        "subject": slot.subject,
        "until": slot.until.isoformat(),
        "deadline": slot.deadline.isoformat(),
        "reason": slot.reason,
    }


def wait(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    p = state.pending
    assert p is not None
    slot = state.scheduled[step_key(state, p)]
    answer = interrupt(request_of(state, slot))
    kind = answer.get("kind") if isinstance(answer, dict) else None
    why = {TIMER: "its time came", TAKEN: "a human took the incident"}.get(str(kind), "alerts joined")
    text = f"woke ({why}) while {slot.tool} on {slot.subject} waits until {slot.until:%H:%M:%S}: planning"
    return {"pending": None, "timeline": [entry(deps, "wait", "scheduled", text, step_key=slot.key)]}
