"""The job runner: stored jobs (:mod:`supply_agent.service.jobs`) taken lane by lane, run on the pools,
and put back with back-off when they fail; and the outbox, the write-back jobs to PagerDuty and Slack.

Each kind of job is level-triggered: it reads what is stored (the thread's checkpoint, the prompt's
row, the executor's audit under the job's key) and does what is left, so running one twice, or after
a kill, repeats nothing.

- ``run``: bring an incident's thread forward: start it from its stored alerts, continue it after a
  crash, wake it when alerts joined it while it waits for an approval, or, when it has nothing left to
  do, derive its write-back again (stored under keys, so nothing goes twice).
- ``resume``: apply a claimed approval answer to the thread.
- ``timer``: a thread waiting for a step's moment (supply_agent.mind.nodes.wait), due at that moment:
  reconciled like a run, which resumes the thread when it still waits and its time has come.
- ``send``: one PagerDuty or Slack write through the guarded executor, under its key.
- ``prompt`` / ``prompt_update``: post the approval prompt / update it with the answer, reading the
  pending approval and the posted message when the job runs, not when it was stored.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future
from typing import Any

from sandbox.executor.fencing import Lease, LeaseLost
from supply_agent import failpoints
from supply_agent.incidents.agent import RunResult
from supply_agent.models import Action
from supply_agent.models.incident import IncidentState
from supply_agent.service.jobs import Job
from supply_agent.service.state import ServiceState, log
from tools.errors import describe, retry_after, transient

TICK_S = 0.5  # the longest the runner sleeps when nothing wakes it


class NotDue(Exception):
    """A timer job whose moment has not come on the service's clock: put back, not failed."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(f"due in {delay_s:.1f} s")
        self.delay_s = delay_s


class DeliveryError(Exception):
    """A write-back the executor ran and that failed; carries whether to try again and when."""

    def __init__(self, message: str, *, again: bool, after_s: float | None) -> None:
        super().__init__(message)
        self.again = again
        self.retry_after = after_s


def _lane(kind: str, iid: str, tool: str = "") -> str:
    if kind == "timer":  # its own lane: a timer due in an hour holds back no run of the incident
        return f"timer:{iid}"
    if kind in ("run", "resume"):
        return f"run:{iid}"
    if kind in ("prompt", "prompt_update") or tool.startswith("slack."):
        return f"slack:{iid}"
    return f"pagerduty:{iid}"


class RunnerMixin(ServiceState):
    # -- storing work ------------------------------------------------------------------------------
    def _put(
        self, kind: str, iid: str, key: str, payload: dict[str, Any] | None = None, delay_s: float = 0.0
    ) -> int | None:
        """Store a job for an incident (idempotent by key), due in ``delay_s``, and wake the runner."""
        tool = str((payload or {}).get("tool", ""))
        job_id = self.jobs.put(
            kind, key, payload or {}, lane=_lane(kind, iid, tool), incident_id=iid, delay_s=delay_s
        )
        self._wake.set()
        return job_id

    def _put_run(self, iid: str) -> None:
        """Ask for the incident's thread to be brought forward. A run already waiting (not started) covers
        the request: it reads the thread when it starts, after whatever asked for it. A run already
        running may have read it before, so then another is stored (a new key each time). A run of
        an incident whose lease another replica holds may be running there: another is stored too."""
        lane = _lane("run", iid)
        with self._lanes_lock:
            running = lane in self._busy
        if not running and self.leases.held(iid) is None:
            holder = self.leases.table.holder(iid)
            running = holder is not None and holder.owner != self.leases.owner
        if not running and self.jobs.waiting(lane, "run"):
            return
        self._put("run", iid, f"run:{iid}:{time.time_ns()}:{threading.get_ident()}")

    # -- the loop ----------------------------------------------------------------------------------
    def _runner_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._take_due()
                wait = self.jobs.next_due_in()
            except Exception as exc:  # the job store itself failing: the jobs wait there, try again soon
                log.warning("the job store failed; trying again", error=describe(exc))
                wait = TICK_S
            self._wake.wait(TICK_S if wait is None else min(TICK_S, max(wait, 0.01)))

    def _take_due(self) -> None:
        with self._lanes_lock:
            busy = frozenset(self._busy)
        for job in self.jobs.due(busy=busy, owner=self.leases.owner):
            # Run only under the incident's lease: another replica's while it holds it.
            lease = self.leases.take(job.incident_id or "") if job.incident_id else None
            if job.incident_id and lease is None:
                continue
            with self._lanes_lock:
                if job.lane in self._busy:
                    continue
                self._busy[job.lane] = time.monotonic()
            pool = self._pool if job.kind in ("run", "resume", "timer") else self._outbox_pool
            fut = pool.submit(self._work, job, lease)
            with self._pending_lock:
                self._futures.add(fut)
            fut.add_done_callback(self._forget)

    def _forget(self, fut: Future[None]) -> None:
        with self._pending_lock:
            self._futures.discard(fut)
        if (exc := fut.exception()) is not None:
            log.error("a job failed outside its handler", error=describe(exc))

    def _work(self, job: Job, lease: Lease | None = None) -> None:
        bound = log.bind(incident_id=job.incident_id, job=job.kind, job_id=job.id, attempt=job.attempts + 1)
        try:
            try:
                with self.fence.under(lease) if lease is not None else contextlib.nullcontext():
                    self._handle(job)
            except LeaseLost as exc:  # frozen past the lease: the new owner runs this job; record nothing
                bound.warning("lease lost mid-job; another replica carries it on", error=str(exc)[:300])
                return
            except NotDue as exc:
                self.jobs.later(job.id, exc.delay_s)
                return
            except Exception as exc:
                self._failed(job, exc, bound)
            else:
                self._note_progress(f"job:{job.lane}")
                self.jobs.done(job.id)
                if job.attempts:
                    bound.info("job done after retries", attempts=job.attempts + 1)
        except Exception as exc:  # recording the outcome failed: the job is still queued and runs again
            bound.warning("cannot record a job's outcome", error=describe(exc))
        finally:
            with self._lanes_lock:
                self._busy.pop(job.lane, None)
            self._wake.set()

    def _failed(self, job: Job, exc: Exception, bound: Any) -> None:
        error = describe(exc)
        again = exc.again if isinstance(exc, DeliveryError) else transient(exc)
        iid = job.incident_id
        pd_id = iid.removeprefix("pd-") if iid and iid.startswith("pd-") else None
        self._note_failure(
            f"job:{job.lane}", iid, pd_id, f"{job.kind} {_what(job)}: {error}".replace("  ", " ")
        )
        if again:
            delay = self.backoff.delay(job.attempts, retry_after(exc))
            self.jobs.retry(job, error, delay)
            self.metrics.job_retries.labels(job.kind).inc()
            bound.warning("job failed; trying again", error=error, retry_in_s=round(delay, 2))
            return
        self.jobs.dead(job, error)
        self.metrics.dead_letters.labels(job.kind).inc()
        bound.error("job failed for good (dead letter)", error=error)
        if job.incident_id:
            try:
                self.store.note(
                    job.incident_id,
                    self.clock(),
                    f"dead letter: {job.kind} {_what(job)} failed for good: {error}",
                )
            except Exception:
                bound.exception("cannot note the dead letter on the timeline")

    def _handle(self, job: Job) -> None:
        iid = job.incident_id or ""
        p = job.payload
        if job.kind == "run":
            self._reconcile(iid)
        elif job.kind == "timer":
            self._on_timer(iid, str(p.get("interrupt", "")))
        elif job.kind == "resume":
            prompt = self.prompts.get(iid, str(p["action_hash"]))
            if prompt is not None and prompt.status == "deciding":
                self._resume(prompt)
        elif job.kind == "send":
            self._deliver(iid, str(p["tool"]), dict(p["params"]), str(p["key"]))
        elif job.kind == "prompt":
            self._post_prompt(iid, str(p["action_hash"]))
        elif job.kind == "prompt_update":
            self._update_prompt(iid, str(p["action_hash"]), str(p["status"]))
        else:
            raise ValueError(f"unknown job kind {job.kind!r}")

    # -- runs --------------------------------------------------------------------------------------
    def _reconcile(self, iid: str) -> None:
        """Bring the incident's thread forward from what is stored; write back what it reached. A thread
        paused at an approval that new alerts joined is woken: it plans for them now, and the approval
        stays pending (the same request, the same prompt)."""
        with self._locks_lock:
            lock = self._incident_locks[iid]
        with lock:
            snap = self.agent.graph.get_state(self.agent.config(iid))
            ran = False
            if not snap.values:
                row = self.store.get(iid)
                alerts = self.store.alerts_for(iid)
                if row is None or not alerts:
                    log.warning("no thread and no stored alerts to start one", incident_id=iid)
                    return
                state = IncidentState(incident_id=iid, alerts=alerts, opened_at=row.opened_at)
                self._run(state)
                ran = True
            elif self.agent.unfinished(iid):  # a crash (mid-wake too): continued from its checkpoint
                self._run(iid)
                ran = True
            # Level-triggered: the alerts linked to the incident that its thread has not taken in.
            if self._wake_paused(iid) is not None or ran:
                return
            # A step's wait whose time has come (its timer, or any run after it), or whose incident a
            # human took: resumed now.
            waiting = self.agent.waiting(iid)
            if waiting is not None and self._graph(iid, lambda: self.agent.resume_wait(iid)) is not None:
                return
            # Nothing left to run: derive the write-back again (keys make it a no-op if sent; a wait's
            # timer is stored again).
            pending = self.agent.pending(iid)
            state = self.agent.state(iid)
            status = "paused" if pending is not None or waiting is not None else "done"
            result = RunResult(incident_id=iid, status=status, state=state, pending=pending, waiting=waiting)
            self._after(result, fresh=False)

    def _on_timer(self, iid: str, interrupt: str) -> None:
        """A wait's timer: reconcile the thread once the moment has come on the service's clock (the
        fleet's simulated one in the sandbox, which the jobs' wall clock does not follow: the timer looks
        again at most every back-off cap until then). When the thread no longer waits on this pause (a
        run is moving it now, a resume failed half-way, or it waits again on a new pause), it is
        reconciled all the same: under the incident's lock, level-triggered, that continues a cut-off
        run and stores the new pause's own timer."""
        waiting = self.agent.waiting(iid)
        if waiting is not None and waiting.interrupt_id == interrupt:
            left = (waiting.until - self.clock()).total_seconds()
            if left > 0 and self.agent.deps.human_owner(iid) is None:  # a taken incident ends its wait
                raise NotDue(min(left, self.backoff.cap_s))
        self._reconcile(iid)

    # -- the outbox --------------------------------------------------------------------------------
    def _deliver(self, iid: str, tool: str, params: dict[str, Any], key: str) -> dict[str, Any] | None:
        """One write-back through the guarded executor under its key; DeliveryError when it failed."""
        if (tool.startswith("pagerduty.") and self.pd is None) or (
            tool.startswith("slack.") and self.slack is None
        ):
            log.warning("write-back has no client configured; skipped", incident_id=iid, call=tool)
            return None
        executor = self.env.runtime.executor
        # The last try was cut off mid-call (a kill): PagerDuty may hold the note already, and a note
        # sent twice is noise on the page. Look before sending again.
        if (
            tool == "pagerduty.note"
            and self.pd is not None
            and executor.audit.interrupted(key)
            and str(params.get("content")) in self.pd.notes(str(params.get("incident")))
        ):
            log.info("note delivered before the interruption; not sent again", incident_id=iid)
            return {}
        action = Action(tool=tool, params=params, incident_id=iid, step=0, proposed_by="service")
        res = executor.control(action, by="supply-agent", key=key)
        if res.outcome in ("executed", "duplicate"):
            failpoints.reached("sent")
            return res.result or {}
        service = tool.split(".", 1)[0]
        self.metrics.writeback_errors.labels(service).inc()
        error = res.error or "; ".join(res.reasons)
        # A refusal (the kill switch, bad parameters) or a permanent failure ends the job; a transient
        # failure (or one the executor could not classify) is tried again.
        again = res.outcome == "failed" and res.transient is not False
        raise DeliveryError(f"{tool}: {error}", again=again, after_s=res.retry_after_s)

    def _send(self, iid: str, tool: str, params: dict[str, Any], key: str) -> None:
        """Store one write-back in the outbox (delivered in order per incident and service)."""
        self._put("send", iid, key, {"tool": tool, "params": params, "key": key})


def _what(job: Job) -> str:
    tool = job.payload.get("tool")
    return str(tool) if tool else ""
