"""The guarded executor: the only code that calls a write tool.

It runs an action only with an ``allow`` decision, or an ``ask`` decision plus an approval, bound to
that action's hash; it dry-runs first where the API can, enforces a timeout, audits before and after,
and returns a typed result. A step whose idempotency key already executed returns the recorded result.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from sandbox.executor.audit import AuditLog, jsonable
from supply_agent.models import Action, Approval, Decision, Verdict
from tools.catalogue import CATALOGUE
from tools.names import Effect

Runner = Callable[[BaseModel, bool, Action], BaseModel]  # (parsed input, dry_run, the action) -> result


class ExecutionResult(BaseModel):
    action_hash: str
    tool: str
    outcome: Literal["executed", "refused", "failed", "duplicate"]
    reasons: list[str] = []
    dry_run_ok: bool | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    started_at: datetime
    finished_at: datetime


class GuardedExecutor:
    def __init__(
        self,
        runners: dict[str, Runner],
        audit: AuditLog,
        approvers: frozenset[str],
        timeout_s: float = 300.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        latch_breaker: Callable[[str], None] | None = None,
        enforce: bool = True,
    ) -> None:
        self.runners = runners
        self.audit = audit
        self.approvers = approvers
        self.timeout_s = timeout_s
        self.clock = clock
        self.latch_breaker = latch_breaker  # persists a tripped breaker (a ConfigMap) until a human resets it
        # False only for the evals' --no-gate ablation against a sandbox fleet: the gate's verdict is
        # audited as it was, and not enforced.
        self.enforce = enforce
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="executor")

    def _refusal(
        self, action: Action, decision: Decision | None, reasons: list[str], started: datetime
    ) -> ExecutionResult:
        self.audit.append(
            phase="refused",
            outcome="refused",
            incident_id=action.incident_id,
            step=action.step,
            tool=action.tool,
            action_hash=action.digest(),
            idempotency_key=action.idempotency_key(),
            params=jsonable(action.params),
            verdict=decision.verdict.value if decision else "none",
            error="; ".join(reasons),
        )
        return ExecutionResult(
            action_hash=action.digest(),
            tool=action.tool,
            outcome="refused",
            reasons=reasons,
            started_at=started,
            finished_at=self.clock(),
        )

    def check(self, action: Action, decision: Decision | None, approval: Approval | None) -> list[str]:
        """Why this action may not run (empty when it may)."""
        spec = CATALOGUE.get(action.tool)
        if spec is not None and spec.effect == Effect.READ:
            return [f"{action.tool} is a read: investigation runs it with read-only credentials"]
        if spec is None or action.tool not in self.runners:
            return [f"no write tool {action.tool!r}"]
        if decision is None:
            return ["no containment decision for this action"]
        if decision.action_hash != action.digest():
            return ["the decision was made for a different action"]
        if not self.enforce:
            return []
        if decision.verdict == Verdict.DENY:
            return ["the gate denied it: " + "; ".join(decision.reasons)]
        if decision.verdict == Verdict.ASK:
            if approval is None:
                return ["the gate asks for a human's approval and there is none"]
            ok, why = approval.admits(action, self.clock(), self.approvers)
            if not ok:
                return [why]
        return []

    def execute(
        self, action: Action, decision: Decision | None, approval: Approval | None = None
    ) -> ExecutionResult:
        started = self.clock()
        if (
            self.enforce
            and decision is not None
            and decision.trips_breaker
            and self.latch_breaker is not None
        ):
            self.latch_breaker("; ".join(r for r in decision.reasons if "circuit breaker" in r))
        reasons = self.check(action, decision, approval)
        if reasons:
            return self._refusal(action, decision, reasons, started)
        assert decision is not None
        key = action.idempotency_key()
        done = self.audit.completed(key)
        if done is not None:
            return ExecutionResult(
                action_hash=action.digest(),
                tool=action.tool,
                outcome="duplicate",
                reasons=[f"step already executed at {done.at.isoformat()}"],
                result=done.result,
                started_at=started,
                finished_at=self.clock(),
            )
        spec = CATALOGUE[action.tool]
        try:
            parsed = spec.input.model_validate(action.params)
        except ValidationError as exc:
            return self._refusal(action, decision, [f"invalid parameters: {exc}"], started)
        common = {
            "incident_id": action.incident_id,
            "step": action.step,
            "tool": action.tool,
            "action_hash": action.digest(),
            "idempotency_key": key,
            "params": jsonable(action.params),
            "verdict": decision.verdict.value,
            "approver": approval.approver if approval else None,
        }
        self.audit.append(phase="before", outcome="pending", **common)
        runner = self.runners[action.tool]
        dry_ok: bool | None = None
        try:
            if spec.dry_run:
                self._run(runner, parsed, True, action)
                dry_ok = True
            result = self._run(runner, parsed, False, action)
        except Exception as exc:  # a failed write is recorded and returned, never raised past the executor
            error = f"{'dry run' if dry_ok is None and spec.dry_run else 'run'} failed: {type(exc).__name__}: {exc}"
            self.audit.append(
                phase="after",
                outcome="failed",
                dry_run_ok=False if dry_ok is None and spec.dry_run else dry_ok,
                error=error,
                **common,
            )
            return ExecutionResult(
                action_hash=action.digest(),
                tool=action.tool,
                outcome="failed",
                dry_run_ok=False if dry_ok is None and spec.dry_run else dry_ok,
                error=error,
                started_at=started,
                finished_at=self.clock(),
            )
        payload = jsonable(result.model_dump(mode="json"))
        self.audit.append(phase="after", outcome="executed", dry_run_ok=dry_ok, result=payload, **common)
        return ExecutionResult(
            action_hash=action.digest(),
            tool=action.tool,
            outcome="executed",
            dry_run_ok=dry_ok,
            result=payload,
            started_at=started,
            finished_at=self.clock(),
        )

    def _run(self, runner: Runner, parsed: BaseModel, dry_run: bool, action: Action) -> BaseModel:
        future = self._pool.submit(runner, parsed, dry_run, action)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError as exc:
            raise TimeoutError(f"no answer within {self.timeout_s:.0f} s") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
