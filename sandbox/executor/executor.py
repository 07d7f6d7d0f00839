"""The guarded executor: the only code that causes a side effect.

It runs a proposed action only with an ``allow`` decision, or an ``ask`` decision plus an approval,
bound to that action's hash and made on the current world revision (a decision made before the agent's
last write is stale: the caller decides again); it dry-runs first where the API can, enforces a
timeout that bounds the tool itself (one deadline for the dry run and the run, handed to the tool, which
is told to stop when the executor stops waiting), audits before and after, and returns a typed result.
A step whose idempotency key already executed returns the recorded result. Control actions (the
latches, meter ingestion) never come from the mind: the hands or a human's command run them through
:meth:`GuardedExecutor.control`, with an audit row naming who asked. With a fence (``serve``), the
``before`` row is written only while the lease of the thread's work is still this replica's; otherwise
the attempt is audited as refused and :class:`~sandbox.executor.fencing.LeaseLost` raised, the one error
the executor lets out: the work stops, and the lease's new owner carries it on.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from sandbox.executor.audit import AuditLog, StaleBudget, jsonable
from sandbox.executor.fencing import Fence, LeaseLost, StaleFence
from supply_agent.models import Action, Approval, Decision, Verdict
from tools.catalogue import CATALOGUE, Deadline, Effect
from tools.errors import retry_after, transient

# (parsed input, dry_run, the action, the executor's deadline) -> result
Runner = Callable[[BaseModel, bool, Action, Deadline], BaseModel]


# How long one write action (its dry run and its run) may take, the tool's own waiting included.
EXECUTOR_TIMEOUT_S = 300.0


class RunTimedOut(Exception):
    """The executor stopped waiting for a run at its deadline (and told the tool to stop)."""


class ExecutionResult(BaseModel):
    action_hash: str
    tool: str
    outcome: Literal["executed", "refused", "failed", "duplicate"]
    reasons: list[str] = []
    dry_run_ok: bool | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    stale: bool = False  # refused because the world changed since the decision: decide again
    timed_out: bool = False  # failed because the tool did not answer before the executor's deadline
    transient: bool | None = None  # failed: whether trying again may succeed (tools.errors.transient)
    retry_after_s: float | None = None  # failed: the wait the other side asked for (Retry-After)
    started_at: datetime
    finished_at: datetime


class GuardedExecutor:
    def __init__(
        self,
        runners: dict[str, Runner],
        audit: AuditLog,
        approvers: frozenset[str],
        timeout_s: float = EXECUTOR_TIMEOUT_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        enforce: bool = True,
    ) -> None:
        self.runners = runners
        self.audit = audit
        self.approvers = approvers
        self.timeout_s = timeout_s
        self.clock = clock
        # The world revision: this executor's epoch and how many writes it has run. A decision carries the
        # revision it was made on; one made before a later write (or by an earlier process) is stale.
        self._epoch = secrets.token_hex(4)
        self._writes = 0
        self._revision_lock = threading.Lock()
        # False only for the evals' --no-gate ablation against a sandbox fleet: the gate's verdict is
        # audited as it was, and not enforced.
        self.enforce = enforce
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="executor")
        # Set by ``serve``: each write is fenced by the lease its thread's work runs under (an incident's,
        # or a singleton's), so a replica whose lease moved while it was frozen writes nothing more.
        self.fence: Fence | None = None

    @property
    def revision(self) -> str:
        """This process's world revision: its epoch and how many writes it ran."""
        return f"{self._epoch}:{self._writes}"

    def decision_revision(self) -> str:
        """The revision a decision made now records: this process's, and the shared audit log's budget
        sequence (``@n``), which another replica's write moves on as well."""
        return f"{self.revision}@{self.audit.budget_seq()}"

    def _wrote(self) -> None:
        with self._revision_lock:
            self._writes += 1

    def _refusal(
        self,
        action: Action,
        decision: Decision | None,
        reasons: list[str],
        started: datetime,
        stale: bool = False,
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
            stale=stale,
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
        if spec.control:
            return [f"{action.tool} is a control action: the hands or a human run it, never a proposal"]
        if decision is None:
            return ["no containment decision for this action"]
        if decision.action_hash != action.digest():
            return ["the decision was made for a different action"]
        if not self.enforce:
            return []
        if decision.verdict == Verdict.DENY:
            return ["the gate denied it: " + "; ".join(decision.reasons)]
        if (decision.world_revision or "").partition("@")[0] != self.revision:
            return [
                f"stale decision: made on world revision {decision.world_revision or 'none'}, and the agent "
                f"has written since (now {self.revision}): decide again"
            ]
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
        if self.enforce and decision is not None and decision.trips_breaker:
            # The breaker stays latched (a ConfigMap) until a human resets it; latching is audited too.
            self.control(
                Action(
                    tool="control.latch_breaker",
                    params={"reason": "; ".join(r for r in decision.reasons if "circuit breaker" in r)},
                    incident_id=action.incident_id,
                    step=action.step,
                    proposed_by="gate",
                ),
                by="supply-agent",
            )
        reasons = self.check(action, decision, approval)
        if reasons:
            return self._refusal(action, decision, reasons, started, stale=reasons[0].startswith("stale"))
        assert decision is not None
        seq = (decision.world_revision or "").partition("@")[2]
        return self._run_audited(
            action,
            decision.verdict.value,
            approval.approver if approval else None,
            started,
            targets=decision.targets.model_dump(mode="json"),
            budget_seq=int(seq) if seq.isdigit() and self.enforce else None,
            decision=decision,
        )

    def control(self, action: Action, by: str, key: str | None = None) -> ExecutionResult:
        """Run a control action (the latches, meter ingestion) for ``by`` (the agent, or the human whose
        command it is), audited like any write. ``key`` overrides the (incident, step, tool) key: a
        human's command is its own request each time."""
        started = self.clock()
        spec = CATALOGUE.get(action.tool)
        if spec is None or not spec.control or action.tool not in self.runners:
            return self._refusal(action, None, [f"{action.tool!r} is not a control action"], started)
        return self._run_audited(action, "control", by, started, key)

    def _run_audited(
        self,
        action: Action,
        verdict: str,
        approver: str | None,
        started: datetime,
        key: str | None = None,
        targets: dict[str, Any] | None = None,
        budget_seq: int | None = None,
        decision: Decision | None = None,
    ) -> ExecutionResult:
        """Dry-run, run, audit before and after; the recorded result for a key that already ran."""
        key = key or action.idempotency_key()
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
            return self._refusal(action, None, [f"invalid parameters: {exc}"], started)
        common = {
            "incident_id": action.incident_id,
            "step": action.step,
            "tool": action.tool,
            "action_hash": action.digest(),
            "idempotency_key": key,
            "params": jsonable(action.params),
            "verdict": verdict,
            "approver": approver,
            "targets": targets,
        }
        try:
            self._append_before(action, common, budget_seq)
        except StaleBudget as exc:  # another replica's write came first: decide again on what it spent
            return self._refusal(
                action, decision, [f"stale decision: {exc}: decide again"], started, stale=True
            )
        runner = self.runners[action.tool]
        dry_ok: bool | None = None
        deadline = Deadline.after(self.timeout_s)
        try:
            if spec.dry_run:
                self._run(runner, parsed, True, action, deadline)
                dry_ok = True
            try:
                result = self._run(runner, parsed, False, action, deadline)
            finally:
                # Whatever the outcome, the world may have changed: later decisions are stale. A message
                # to PagerDuty or Slack changes nothing the gate reads, and must not make them stale.
                if not (spec.control and spec.effect is Effect.EXTERNAL):
                    self._wrote()
        except Exception as exc:  # a failed write is recorded and returned, never raised past the executor
            what = "dry run" if dry_ok is None and spec.dry_run else "run"
            timed_out = isinstance(exc, RunTimedOut)
            error = f"{what} timed out: {exc}" if timed_out else f"{what} failed: {type(exc).__name__}: {exc}"
            self.audit.append(
                phase="after",
                # Its own outcome: the tool may still have changed the world before it stopped, and a
                # retry of the step runs it again (it converges), as for a failure.
                outcome="timed_out" if timed_out else "failed",
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
                timed_out=timed_out,
                transient=timed_out or transient(exc),
                retry_after_s=retry_after(exc),
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

    def _append_before(self, action: Action, common: dict[str, Any], budget_seq: int | None) -> None:
        """The ``before`` row, claiming the budget its decision saw (:class:`StaleBudget` when a gated
        write began since), and fenced when a fence is set: raises :class:`LeaseLost` (after auditing
        the refusal) when this thread's work holds no lease, or its lease moved or lapsed."""
        if self.fence is None:
            self.audit.append(phase="before", outcome="pending", budget_seq=budget_seq, **common)
            return
        lease = self.fence.current()
        try:
            if lease is None:
                raise StaleFence(f"{action.tool} for {action.incident_id}: this work runs under no lease")
            self.audit.append(
                phase="before",
                outcome="pending",
                fence=(self.fence.table, lease),
                budget_seq=budget_seq,
                **common,
            )
        except StaleFence as exc:
            held: dict[str, Any] = {"fence_owner": lease.owner, "fence_token": lease.token} if lease else {}
            self.audit.append(phase="refused", outcome="refused", error=f"fenced: {exc}", **common, **held)
            raise LeaseLost(str(exc)) from exc

    def _run(
        self, runner: Runner, parsed: BaseModel, dry_run: bool, action: Action, deadline: Deadline
    ) -> BaseModel:
        future = self._pool.submit(runner, parsed, dry_run, action, deadline)
        try:
            return future.result(timeout=deadline.remaining())
        except concurrent.futures.TimeoutError as exc:
            if future.done():  # the tool's own TimeoutError (a socket's), not the executor's
                raise
            deadline.stop.set()
            future.cancel()  # still queued behind other runs: it never starts
            raise RunTimedOut(
                f"no answer within {self.timeout_s:g} s; the tool was told to stop and change nothing more"
            ) from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
