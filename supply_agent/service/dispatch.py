"""The dispatcher: stored events in order, folded into incidents, what humans did in PagerDuty, clicks
from Slack; and the graph run as the runner's ``run`` job (one run per incident at a time).

An event whose handling fails with an error that may pass (a locked store, PagerDuty answering 500 to
the alert read) stays pending with one more attempt and a next-attempt time, and is handled again then;
only bad data ends it as ``failed`` (kept, with why, and revived by the sender's re-delivery)."""

from __future__ import annotations

import contextlib
import heapq
import json
import queue
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from sandbox.executor.fencing import LeaseLost
from supply_agent import failpoints
from supply_agent.incidents.agent import ApprovalAnswer, RunResult
from supply_agent.intake.events import (
    PD_HUMAN,
    PD_TRIGGERS,
    StoredEvent,
)
from supply_agent.models.incident import (
    AlertError,
    AlertIn,
    IncidentState,
    pagerduty_alerts,
    parse_alerts,
)
from supply_agent.service.leases import SINGLETON
from supply_agent.service.state import (
    FOLLOW_S,
    RESCAN_S,
    ServiceState,
    log,
)
from tools.errors import describe, retry_after, transient


class Handled(NamedTuple):
    """How handling one stored event ended: its status (``retry`` puts it back), why, and the wait the
    other side asked for."""

    event_id: int
    status: str
    note: str
    wait: float | None = None


class DispatchMixin(ServiceState):
    def _enqueue(self, event_id: int) -> None:
        """Hand a stored event to the dispatcher (once while it waits)."""
        with self._pending_lock:
            if event_id in self._queued:
                return
            self._queued.add(event_id)
            self._last_seen = max(self._last_seen, event_id)
            self._pending += 1
            self.metrics.queue.set(self._pending)
        self._queue.put(event_id)

    def _follow_loop(self) -> None:
        """Queue each event put back whose next attempt is due; following the log (another process
        stores the events), each new one too; and now and then every pending one not queued (an id
        stored out of order, or one whose handling was cut short)."""
        rescan_at = time.monotonic() + RESCAN_S
        leading = False
        while not self._stop.wait(FOLLOW_S):
            try:
                if self.leases.held(SINGLETON + "dispatcher") is None:
                    leading = False
                    continue
                if not leading:  # just took the lead: every pending event, the last leader's included
                    leading, rescan_at = True, 0.0
                now = time.time()
                with self._pending_lock:
                    again = []
                    while self._retry_at and self._retry_at[0][0] <= now:
                        again.append(heapq.heappop(self._retry_at)[1])
                for i in again:
                    self._enqueue(i)
                if time.monotonic() >= rescan_at:
                    ids = self.events.pending()
                    rescan_at = time.monotonic() + RESCAN_S
                elif self.follow_log:
                    ids = self.events.pending(after=self._last_seen)
                else:
                    ids = []
                for i in ids:
                    self._enqueue(i)
            except Exception as exc:
                log.warning("reading the event log failed", error=describe(exc))

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                ids = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(ids) < 256:  # a burst is handled in batches: one fold, one write per batch
                try:
                    ids.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # One replica folds at a time (grouping is deterministic in one thread): the others leave
            # the events stored, pending, for the leader; they are queued again if this one leads later.
            try:
                lead = self.leases.lead("dispatcher")
            except Exception as exc:
                log.warning("cannot read the dispatcher's lease", error=describe(exc))
                lead = None
            if lead is None:
                self._unqueue(ids)
                continue
            try:
                with self.fence.under(lead):
                    done = self._handle_batch(ids)
            except LeaseLost:  # the lead moved mid-batch: the events stay pending for the new leader
                self._unqueue(ids)
                continue
            except Exception as exc:  # never lose the batch: each event is tried again, or marked with why
                log.exception("event batch failed", events=len(ids))
                done = [Handled(i, *self._failure(exc)) for i in ids]
            try:
                self._record(done)
            except Exception as exc:  # still pending in the log: the rescan queues them again
                log.warning("cannot record handled events", error=describe(exc))
            self._unqueue(ids)

    def _unqueue(self, ids: list[int]) -> None:
        with self._pending_lock:
            self._queued.difference_update(ids)
            self._pending = max(0, self._pending - len(ids))
            self.metrics.queue.set(self._pending)

    @staticmethod
    def _failure(exc: BaseException) -> tuple[str, str, float | None]:
        """How an event's failed handling ends: ``retry`` when it may pass, ``failed`` for bad data;
        the note, and the wait the other side asked for (``Retry-After``)."""
        if transient(exc) or isinstance(exc, LeaseLost):  # lost: pending, for the lease's new holder
            return "retry", describe(exc), retry_after(exc)
        return "failed", describe(exc), None

    def _record(self, done: list[Handled]) -> None:
        finished = [(d.event_id, d.status, d.note) for d in done if d.status != "retry"]
        retried = [d for d in done if d.status == "retry"]
        later: list[tuple[int, str, float]] = []
        if retried:
            stored = self.events.get_many([d.event_id for d in retried])
            now = time.time()
            for d in retried:
                attempts = stored[d.event_id].attempts if d.event_id in stored else 0
                later.append((d.event_id, d.note, now + self.backoff.delay(attempts, d.wait)))
        self.events.finish_many(finished)
        self.events.retry_many(later)
        with self._pending_lock:
            for i, _, at in later:
                heapq.heappush(self._retry_at, (at, i))
        for d in done:
            status = d.status
            self.metrics.handled.labels(status).inc()
            if status == "failed":
                self.metrics.dead_letters.labels("event").inc()
        for i, note, _ in later:
            log.warning("event handling failed; trying again", event_id=i, error=note)

    def _handle_batch(self, ids: list[int]) -> list[Handled]:
        """Handle stored events in order. Alerts of consecutive events fold together (one call to the
        agent); a human's action in PagerDuty is applied in its place in the order."""
        done: list[Handled] = []
        held: list[tuple[int, list[AlertIn]]] = []

        def flush() -> None:
            if not held:
                return
            try:
                status, note = self._open([a for _, alerts in held for a in alerts])
            except Exception as exc:
                log.warning("folding alerts failed", events=len(held), error=describe(exc))
                done.extend(Handled(i, *self._failure(exc)) for i, _ in held)
                held.clear()
                return
            done.extend(Handled(i, status, note) for i, _ in held)
            held.clear()

        stored = self.events.get_many(ids)
        for event_id in ids:
            ev = stored.get(event_id)
            if ev is None or ev.status != "pending":
                continue  # handled before a restart, or queued twice
            try:
                alerts, human = self._read_event(ev)
            except Exception as exc:  # one bad event does not stop the others; it is kept, marked
                log.warning("event failed", event_id=event_id, error=describe(exc))
                done.append(Handled(event_id, *self._failure(exc)))
                continue
            if alerts is not None:
                held.append((event_id, alerts))
                continue
            flush()
            try:
                status, note = human() if human else ("ignored", "nothing to act on")
            except Exception as exc:
                log.warning("event failed", event_id=event_id, error=describe(exc))
                done.append(Handled(event_id, *self._failure(exc)))
                continue
            done.append(Handled(event_id, status, note))
        flush()
        return done

    def _read_event(
        self, ev: StoredEvent
    ) -> tuple[list[AlertIn] | None, Callable[[], tuple[str, str]] | None]:
        """The alerts an event brings, or what a human did (applied later, in order)."""
        if ev.source == "slack":
            body = ev.body
            return None, lambda: self._apply_click(body)[:2]
        data = json.loads(ev.body)
        if ev.source == "alertmanager":
            alerts, _ = parse_alerts(data)
            return alerts, None
        event = data["event"]
        event_type = str(event["event_type"])
        _, refs = parse_alerts(data)
        ref = refs[0]
        iid = f"pd-{ref.incident_id}"
        if event_type in PD_TRIGGERS:
            alerts = pagerduty_alerts(ref, self._pd_alerts(ref.incident_id))
            if not alerts:
                raise AlertError(f"PagerDuty incident {ref.incident_id} has no alerts to act on")
            return alerts, None
        if event_type in PD_HUMAN:
            agent = event.get("agent")
            return None, lambda: self._human(iid, ref.incident_id, event_type, agent)
        return None, None

    def _pd_alerts(self, pd_id: str) -> Mapping[str, Any]:
        if self.pd is not None:
            return self.pd.incident_alerts(pd_id)
        if self.env.sandbox is not None:
            return self.env.sandbox.pagerduty_incident_alerts(pd_id)
        raise AlertError(f"PagerDuty incident {pd_id}: no PagerDuty API key configured to read its alerts")

    def _open(self, alerts: list[AlertIn]) -> tuple[str, str]:
        """Fold alerts; acknowledge each new PagerDuty incident and ask every incident touched to run
        (a run of a thread with nothing to do only derives its write-back again)."""
        new, touched = self.agent.fold(alerts, window=self.window)
        failpoints.reached("fold")
        for state in new:
            self.metrics.opened.inc()
            self._acknowledge(state)
        for iid in sorted(touched):
            self._put_run(iid)
        if new:
            return "handled", "opened " + ", ".join(s.incident_id for s in new)
        return "handled", "joined or duplicate"

    def _human(self, iid: str, pd_id: str, event_type: str, agent_ref: Any) -> tuple[str, str]:
        ref = agent_ref if isinstance(agent_ref, Mapping) else {}
        if self.store.get(iid) is None:
            return "ignored", f"{iid} is not an incident the agent handles"
        if ref.get("type") != "user_reference":
            return "ignored", f"{event_type} not done by a user ({ref.get('type') or 'no agent'})"
        if self._own_pd_user and ref.get("id") == self._own_pd_user:
            return "ignored", f"{event_type} is the agent's own write-back"
        if not self._own_pd_user and event_type == "incident.acknowledged" and pd_id in self._our_acks:
            return "ignored", "the agent's own acknowledgement"
        if event_type == "incident.unacknowledged":
            return "ignored", "unacknowledged: the incident stays with whoever holds it"
        who = str(ref.get("summary") or ref.get("id") or "a PagerDuty user")
        verb = event_type.split(".", 1)[1]
        self.store.set_owner(iid, f"{who} ({verb} in PagerDuty)")
        self.store.note(
            iid, self.clock(), f"{who} {verb} the incident in PagerDuty: the agent makes no more writes"
        )
        log.info("a human took the incident", incident_id=iid, who=who, event_type=event_type)
        self._put_run(iid)  # a thread waiting for a step's moment ends now: the step is the human's
        return "handled", f"{who} {verb} it"

    def _run(self, target: IncidentState | str, resume: ApprovalAnswer | None = None) -> RunResult:
        """One graph run and its write-back; an error is raised to the job, which tries again."""
        iid = target if isinstance(target, str) else target.incident_id
        result = self._graph(iid, lambda: self.agent.run(target, resume=resume))
        assert result is not None
        return result

    def _wake_paused(self, iid: str) -> RunResult | None:
        """Wake a thread paused at an approval that alerts joined (see ``Agent.wake``), and write back
        what it reached; None when it is not paused or nothing joined it since it took its alerts in."""
        return self._graph(iid, lambda: self.agent.wake(iid))

    def _graph(self, iid: str, call: Callable[[], RunResult | None]) -> RunResult | None:
        try:
            result = call()
        except LeaseLost:
            raise  # not this replica's to note: the lease's new owner runs it
        except Exception as exc:
            log.bind(incident_id=iid).warning("graph run failed", error=describe(exc))
            with contextlib.suppress(Exception):  # the store may be what failed; the job keeps the error
                self.store.note(
                    iid, self.clock(), f"the graph run failed (tried again): {type(exc).__name__}: {exc}"
                )
            raise
        if result is not None:
            self._after(result)
        return result
