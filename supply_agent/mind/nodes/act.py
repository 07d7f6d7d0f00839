"""Running an allowed write through the guarded executor, and reading the world back until it holds."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes.common import default_verify, entry, result_line, runbook_step, short
from supply_agent.mind.nodes.gate import decide
from supply_agent.models.incident import IncidentState
from supply_agent.policy import OnFailure, Verify


def execute(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    rt = deps.runtime
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
                "timeline": [entry(deps, "execute", "decision", blocked, step=last.index)],
            }
        decision = last.decision
        res = rt.execute(last.action, decision, last.approval)
        if res.stale:
            # The executor refused a decision made before the agent's last write (another incident's,
            # or before a restart or a wait for approval): decide again on the world as it is now.
            decision = decide(state, deps, last.action, last.subject)
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
    detail = result_line(res.result) if res.result else (record.error or "")
    return {
        "steps": [*state.steps[:-1], record],
        "timeline": [
            entry(
                deps,
                "execute",
                "action",
                f"{res.outcome} {last.action.tool} {short(last.action.params)}{': ' + detail if detail else ''}",
                outcome=res.outcome,
                step=last.index,
            )
        ],
    }


def after_execute(state: IncidentState, deps: GraphDeps) -> str:
    last = state.steps[-1]
    if last.outcome in ("executed", "duplicate"):
        return "verify"
    return "escalate"


def verify(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    rt = deps.runtime
    last = state.steps[-1]
    step = runbook_step(deps, state, last.runbook_step)
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
    update["timeline"] = [entry(deps, "verify", "verify", text, verified=ok)]
    return update


def after_verify(state: IncidentState, deps: GraphDeps) -> str:
    last = state.steps[-1]
    if last.verified:
        return "plan"
    step = runbook_step(deps, state, last.runbook_step)
    on_failure = step.on_failure if step else OnFailure()
    if on_failure.action == "retry" and last.attempts <= (on_failure.retries or 0):
        return "plan"  # the cursor did not move: the planner proposes the step again
    return "escalate"
