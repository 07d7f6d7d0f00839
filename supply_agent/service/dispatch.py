"""The dispatcher: stored events in order, folded into incidents, what humans did in PagerDuty, and the
bounded pool of graph runs (one run per incident at a time)."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

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
from supply_agent.service.state import (
    FOLLOW_S,
    RESCAN_S,
    ServiceState,
    log,
    pd_id_of,
)


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
        """Another process stores the events: queue each new one, and now and then every pending one
        not queued (an id stored out of order, or one whose handling was cut short)."""
        rescan_at = time.monotonic() + RESCAN_S
        while not self._stop.wait(FOLLOW_S):
            try:
                if time.monotonic() >= rescan_at:
                    ids = self.events.pending()
                    rescan_at = time.monotonic() + RESCAN_S
                else:
                    ids = self.events.pending(after=self._last_seen)
                for i in ids:
                    self._enqueue(i)
            except Exception:
                log.exception("reading the event log failed")

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
            try:
                done = self._handle_batch(ids)
            except Exception as exc:  # never lose the batch: each event is marked with why
                log.exception("event batch failed", events=len(ids))
                done = [(i, "failed", f"{type(exc).__name__}: {exc}") for i in ids]
            self.events.finish_many(done)
            for _, status, _ in done:
                self.metrics.handled.labels(status).inc()
            with self._pending_lock:
                self._queued.difference_update(ids)
                self._pending = max(0, self._pending - len(ids))
                self.metrics.queue.set(self._pending)

    def _handle_batch(self, ids: list[int]) -> list[tuple[int, str, str]]:
        """Handle stored events in order. Alerts of consecutive events fold together (one call to the
        agent); a human's action in PagerDuty is applied in its place in the order."""
        done: list[tuple[int, str, str]] = []
        held: list[tuple[int, list[AlertIn]]] = []

        def flush() -> None:
            if not held:
                return
            try:
                status, note = self._open([a for _, alerts in held for a in alerts])
            except Exception as exc:
                log.exception("folding alerts failed", events=len(held))
                status, note = "failed", f"{type(exc).__name__}: {exc}"
            done.extend((i, status, note) for i, _ in held)
            held.clear()

        stored = self.events.get_many(ids)
        for event_id in ids:
            ev = stored.get(event_id)
            if ev is None or ev.status != "pending":
                continue  # handled before a restart, or queued twice
            try:
                alerts, human = self._read_event(ev)
            except Exception as exc:  # one bad event does not stop the others; it is kept, marked
                log.exception("event failed", event_id=event_id)
                done.append((event_id, "failed", f"{type(exc).__name__}: {exc}"))
                continue
            if alerts is not None:
                held.append((event_id, alerts))
                continue
            flush()
            try:
                status, note = human() if human else ("ignored", "nothing to act on")
            except Exception as exc:
                log.exception("event failed", event_id=event_id)
                status, note = "failed", f"{type(exc).__name__}: {exc}"
            done.append((event_id, status, note))
        flush()
        return done

    def _read_event(
        self, ev: StoredEvent
    ) -> tuple[list[AlertIn] | None, Callable[[], tuple[str, str]] | None]:
        """The alerts an event brings, or what a human did (applied later, in order)."""
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
        new = self.agent.open(alerts, window=self.window)
        for state in new:
            self.metrics.opened.inc()
            pd_id = pd_id_of(state)
            if pd_id and self.pd is not None:
                self._send(state.incident_id, "pagerduty.acknowledge", {"incident": pd_id}, self.clock())
                self._our_acks.add(pd_id)
            self._submit(state.incident_id, self._run, state)
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
        return "handled", f"{who} {verb} it"

    def _submit(self, iid: str, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the pool, one run per incident at a time."""

        def job() -> None:
            with self._locks_lock:
                lock = self._incident_locks[iid]
            with lock:
                fn(*args)

        fut = self._pool.submit(job)
        with self._pending_lock:
            self._futures.add(fut)
        fut.add_done_callback(self._forget)

    def _forget(self, fut: Future[None]) -> None:
        with self._pending_lock:
            self._futures.discard(fut)
        if (exc := fut.exception()) is not None:
            log.error("graph run failed", error=f"{type(exc).__name__}: {exc}")

    def _run(self, target: IncidentState | str, resume: ApprovalAnswer | None = None) -> RunResult | None:
        iid = target if isinstance(target, str) else target.incident_id
        bound = log.bind(incident_id=iid)
        try:
            result = self.agent.run(target, resume=resume)
        except Exception as exc:
            bound.exception("graph run failed")
            self.store.note(iid, self.clock(), f"the graph run failed: {type(exc).__name__}: {exc}")
            return None
        self._after(result)
        return result
