"""The on-call service behind ``supply-agent serve``: stored events in, graph threads run, humans asked.

- Intake (called from the HTTP handlers) checks and stores each webhook, then answers; it refuses with
  503 + Retry-After when too many stored events wait, rather than dropping any. ``supply-agent serve``
  runs intake in a process of its own (:mod:`supply_agent.intake_server`); the service then follows
  the event log (``follow_log``) instead of being handed each id.
- One dispatcher thread handles stored events in order: it folds alerts into incidents (one thread, so
  grouping is deterministic), records what humans did in PagerDuty, and hands graph runs to a pool.
- A bounded pool runs graph threads, one run per incident at a time. After each run: PagerDuty notes
  and resolve or escalate, a Slack prompt when the thread paused for an approval, metrics.
- A Slack click is verified, bound to one pending approval by the action's hash, claimed atomically,
  and resumes the thread once. A sweeper expires approvals nobody answered.
- On start, events stored but not handled are handled, claimed clicks are finished, threads a crash
  interrupted are continued, and paused threads stay paused.
"""

from __future__ import annotations

import hashlib
import json
import queue
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import structlog

from sandbox.executor.executor import ExecutionResult
from sandbox.executor.runners import runners
from supply_agent.agent import Agent, ApprovalAnswer, ApprovalRequest, RunResult
from supply_agent.environment import Environment, open_agent
from supply_agent.incident import (
    AlertError,
    AlertIn,
    IncidentState,
    TimelineEntry,
    pagerduty_alerts,
    parse_alerts,
)
from supply_agent.intake import (
    PD_HUMAN,
    PD_TRIGGERS,
    EventLog,
    Intake,
    Reply,
    StoredEvent,
)
from supply_agent.metrics import Metrics
from supply_agent.models import Action
from supply_agent.planners.base import Planner
from supply_agent.prompts import Prompt, PromptStore
from supply_agent.settings import Settings
from supply_agent.signing import SignatureError, verify_slack
from supply_agent.slack_blocks import APPROVE, approval_blocks, decided_blocks, parse_click
from supply_agent.store import IncidentStore
from tools.catalogue import Clients
from tools.pagerduty import PagerDutyClient, PagerDutyError
from tools.slack import SlackClient, SlackError

log = structlog.get_logger("supply_agent.service")

# Timeline kinds that become PagerDuty notes: each finding and each action, and the human answers.
NOTE_KINDS = frozenset({"evidence", "action", "approval"})
GROUP_CACHE_S = 60.0
FOLLOW_S = 0.05  # how often a service following the event log looks for new events
RESCAN_S = 5.0  # and how often it looks again at every pending one (none may be passed over)

__all__ = ["Reply", "Service", "open_service"]


class Service:
    def __init__(
        self,
        settings: Settings,
        agent: Agent,
        env: Environment,
        events: EventLog,
        prompts: PromptStore,
        *,
        pagerduty: PagerDutyClient | None = None,
        slack: SlackClient | None = None,
        metrics: Metrics | None = None,
        wall: Callable[[], float] = time.time,
        follow_log: bool = False,
    ) -> None:
        self.settings = settings
        self.agent = agent
        self.env = env
        self.store: IncidentStore = agent.store
        self.events = events
        self.prompts = prompts
        self.pd = pagerduty
        self.slack = slack
        self.metrics = metrics or Metrics()
        self.wall = wall  # Slack's signing window is in real time, whatever the cluster's clock says
        self.clock = env.runtime.clock
        self.window = timedelta(seconds=settings.grouping_window_s)
        self._queue: queue.Queue[int] = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="graph")
        self._incident_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_lock = threading.Lock()
        self._notes: dict[str, list[TimelineEntry]] = defaultdict(list)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._futures: set[Future[None]] = set()
        self._static_approvers = frozenset(env.runtime.executor.approvers)
        self._groups_at = 0.0
        self._our_acks: set[str] = set()
        self._own_pd_user: str | None = settings.pagerduty_user_id or None
        self.follow_log = follow_log
        self._last_seen = 0  # following the log: the newest event id queued
        self._queued: set[int] = set()  # queued and not yet finished
        self.intake = Intake(
            settings, events, self.metrics, pending=lambda: self._pending, stored=self._enqueue
        )
        agent.on_entry = self._on_entry
        # Write-back is executor actions too (audited, keyed), over the clients configured here.
        runtime = env.runtime
        runtime.executor.runners.update(
            runners(
                Clients(
                    kube=env.writer,
                    ledger=runtime.ledger,
                    outbox=runtime.outbox,
                    pagerduty=pagerduty,
                    slack=slack,
                ),
                ("pagerduty.", "slack."),
            )
        )

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.pd is not None and self._own_pd_user is None:
            try:
                self._own_pd_user = self.pd.own_user_id()
            except PagerDutyError as exc:
                log.warning("cannot find the agent's own PagerDuty user", error=str(exc))
        self.refresh_approvers(force=True)
        self.recover()
        loops: list[tuple[str, Callable[[], None]]] = [
            ("dispatcher", self._dispatch_loop),
            ("sweeper", self._sweep_loop),
        ]
        if self.follow_log:
            loops.append(("follower", self._follow_loop))
        for name, target in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=False)

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every stored event is handled and no graph run is in flight (tests, benchmarks)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._pending_lock:
                idle = self._pending == 0 and not any(not f.done() for f in list(self._futures))
            if idle:
                return True
            time.sleep(0.02)
        return False

    def recover(self) -> None:
        """After a restart: handle stored events, finish claimed clicks, continue interrupted threads."""
        ids = self.events.pending()
        for i in ids:
            self._enqueue(i)
        for prompt in self.prompts.with_status("deciding"):
            self._submit(prompt.incident_id, self._resume, prompt)
        for row in self.store.incidents(limit=10_000, status="open"):
            iid = row.id
            snap = self.agent.graph.get_state(self.agent.config(iid))
            if not snap.values:
                alerts = self.store.alerts_for(iid)
                if alerts:
                    state = IncidentState(incident_id=iid, alerts=alerts, opened_at=row.opened_at)
                    self._submit(iid, self._run, state)
            elif self.agent.unfinished(iid):
                self._submit(iid, self._run, iid)
        for row in self.store.incidents(limit=10_000, status="paused"):
            pending = self.agent.pending(row.id)
            if pending is not None and self.prompts.get(row.id, pending.action_hash) is None:
                self._submit(row.id, self._prompt, row.id, pending)
        if ids:
            log.info("recovered stored events", events=len(ids))

    # -- intake (HTTP handlers call these; they must answer fast) ------------------------------------
    async def accept_pagerduty(self, body: bytes, signature: str | None) -> Reply:
        return await self.intake.pagerduty(body, signature)

    async def accept_alertmanager(self, body: bytes, authorization: str | None) -> Reply:
        return await self.intake.alertmanager(body, authorization)

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

    # -- the dispatcher ------------------------------------------------------------------------------
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
            pd_id = _pd_id(state)
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

    # -- graph runs ----------------------------------------------------------------------------------
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

    def _on_entry(self, iid: str, entry: TimelineEntry) -> None:
        if entry.kind in NOTE_KINDS:
            self._notes[iid].append(entry)

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

    def _after(self, result: RunResult) -> None:
        iid = result.incident_id
        state = result.state
        pd_id = _pd_id(state)
        notes = self._notes.pop(iid, [])
        owned = (row := self.store.get(iid)) is not None and bool(row.human_owner)
        pd = self.pd if pd_id else None
        if pd is not None:
            for entry in notes:
                note = f"[{entry.kind}] {entry.text}"
                self._send(iid, "pagerduty.note", {"incident": pd_id, "content": note}, entry.at)
        if result.pending is not None:
            self._prompt(iid, result.pending)
            return
        if result.status != "done" or state.outcome is None:
            return
        self.metrics.finished(state)
        if pd is None:
            return
        if owned:
            note = f"supply-agent stopped: {_ending(state)}"
            self._send(iid, "pagerduty.note", {"incident": pd_id, "content": note}, self.clock())
        elif state.outcome in ("mitigated", "no_action"):
            self._send(iid, "pagerduty.note", {"incident": pd_id, "content": _ending(state)}, self.clock())
            self._send(iid, "pagerduty.resolve", {"incident": pd_id}, self.clock())
        else:
            reason = state.escalation_reason or "the agent needs a human"
            escalation = {"incident": pd_id, "reason": f"supply-agent escalates: {reason}"}
            self._send(iid, "pagerduty.escalate", escalation, self.clock())

    def _send(self, iid: str, tool: str, params: dict[str, Any], at: object) -> ExecutionResult:
        """One write-back message through the guarded executor: audited on the incident, and keyed by what
        it says and when it was said, so a replay of the same message is sent once."""
        key = hashlib.sha256(
            json.dumps([iid, tool, params, str(at)], sort_keys=True, default=str).encode()
        ).hexdigest()
        action = Action(tool=tool, params=params, incident_id=iid, step=0, proposed_by="service")
        res = self.env.runtime.executor.control(action, by="supply-agent", key=key)
        if res.outcome not in ("executed", "duplicate"):
            service = tool.split(".", 1)[0]
            self.metrics.writeback_errors.labels(service).inc()
            log.error(
                f"{service} write-back failed",
                incident_id=iid,
                call=tool,
                error=res.error or "; ".join(res.reasons),
            )
        return res

    # -- approvals -----------------------------------------------------------------------------------
    def _prompt(self, iid: str, request: ApprovalRequest) -> None:
        """Ask in Slack, once per pending approval."""
        if not self.prompts.add(iid, request.action_hash, request.step, request.asked_at, request.expires_at):
            return
        if self.slack is None:
            log.warning("approval pending and no Slack configured", incident_id=iid, tool=request.tool)
            return
        row = self.store.get(iid)
        title = row.title if row else iid
        try:
            state = self.agent.state(iid)
            evidence = [e.summary for e in state.evidence[-5:]]
        except KeyError:
            evidence = []
        text, blocks = approval_blocks(request, title, evidence)
        res = self._send(iid, "slack.post", {"text": text, "blocks": blocks}, request.action_hash)
        if res.outcome not in ("executed", "duplicate") or not res.result:
            return
        self.prompts.set_message(iid, request.action_hash, res.result["channel"], res.result["ts"])

    def refresh_approvers(self, force: bool = False) -> frozenset[str]:
        """Approvers: the settings' and playbooks' ids, and the members of the Slack approver groups."""
        now = time.monotonic()
        if (
            self.slack is not None
            and self.settings.slack_approver_groups
            and (force or now - self._groups_at > GROUP_CACHE_S)
        ):
            members: set[str] = set()
            for group in self.settings.slack_approver_groups:
                try:
                    members |= self.slack.usergroup_members(group)
                except SlackError as exc:
                    log.error("cannot read a Slack approver group", group=group, error=str(exc))
            self.env.runtime.executor.approvers = self._static_approvers | frozenset(members)
            self._groups_at = now
        return frozenset(self.env.runtime.executor.approvers)

    def click(self, body: bytes, timestamp: str | None, signature: str | None) -> Reply:
        """A Slack interaction: verified, bound to one pending approval, claimed once, then resumed."""
        secret = self.settings.slack_signing_secret
        try:
            verify_slack(body, timestamp, signature, secret.get_secret_value() if secret else "", self.wall())
        except SignatureError as exc:
            self.metrics.events.labels("slack", "bad_signature").inc()
            return Reply(exc.status, {"error": exc.reason})
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=True)
            raw = form.get("payload")
            if not raw:
                raise ValueError("form field 'payload' is missing")
            c = parse_click(json.loads(raw[0]))
        except (ValueError, UnicodeDecodeError) as exc:
            self.metrics.events.labels("slack", "bad_request").inc()
            return Reply(400, {"error": f"not a block_actions interaction: {exc}"})
        self.metrics.events.labels("slack", "accepted").inc()
        now = self.clock()
        who = c.user_id
        prompt = self.prompts.get(c.incident_id, c.action_hash)
        if prompt is None:
            if self.store.get(c.incident_id) is not None:
                self.store.note(
                    c.incident_id,
                    now,
                    f"ignored a click by {who}: no such approval",
                    action_hash=c.action_hash,
                )
            return Reply(200, {"status": "ignored", "reason": "no such approval"})
        if prompt.status != "pending":
            text = f"ignored a click by {who}: the approval was already {prompt.status}"
            self.store.note(c.incident_id, now, text, action_hash=c.action_hash, action=c.action_id)
            return Reply(200, {"status": "ignored", "reason": text})
        if who not in self.refresh_approvers():
            text = f"ignored a click by {who} via slack: not an approver"
            self.store.note(c.incident_id, now, text, action_hash=c.action_hash, action=c.action_id)
            log.warning(text, incident_id=c.incident_id)
            return Reply(200, {"status": "refused", "reason": text})
        decision = "approve" if c.action_id == APPROVE else "reject"
        claimed = self.prompts.claim(c.incident_id, c.action_hash, decision, who, now)
        if claimed is None:  # a double click, or two people at once: the first one counts
            text = f"ignored a click by {who}: the approval was answered already"
            self.store.note(c.incident_id, now, text, action_hash=c.action_hash)
            return Reply(200, {"status": "ignored", "reason": text})
        self.metrics.approval_wait.labels(decision).observe(max(0.0, (now - prompt.asked_at).total_seconds()))
        self._submit(c.incident_id, self._resume, claimed)
        return Reply(200, {"status": "accepted", "decision": decision})

    def _resume(self, prompt: Prompt) -> None:
        """Resume a thread with a claimed answer; then say in Slack who decided and when."""
        iid = prompt.incident_id
        pending = self.agent.pending(iid)
        if pending is None or pending.action_hash != prompt.action_hash:
            self.prompts.finish(iid, prompt.action_hash, "expired")
            return
        answer = ApprovalAnswer(
            approved=prompt.decision == "approve",
            approver=prompt.decided_by or "unknown",
            decided_at=prompt.decided_at or self.clock(),
            channel="slack" if prompt.decision != "expire" else "expiry",
        )
        result = self._run(iid, resume=answer)
        if result is None:
            return
        step = next((s for s in result.state.steps if s.action.digest() == prompt.action_hash), None)
        status = step.approval_state if step is not None else "pending"
        if status not in (
            "approved",
            "rejected",
            "expired",
        ):  # not taken (e.g. not an approver after all): open again
            self.prompts.finish(iid, prompt.action_hash, "pending")
            return
        self.prompts.finish(iid, prompt.action_hash, status)
        if self.slack is not None and prompt.channel and prompt.ts:
            row = self.store.get(iid)
            text, blocks = decided_blocks(
                pending, row.title if row else iid, status, answer.approver, answer.decided_at
            )
            update = {"channel": prompt.channel, "ts": prompt.ts, "text": text, "blocks": blocks}
            self._send(iid, "slack.update", update, f"{prompt.action_hash}:{status}")

    def sweep(self) -> int:
        """Expire approvals nobody answered in time; the threads escalate. How many were expired."""
        now = self.clock()
        n = 0
        for prompt in self.prompts.with_status("pending"):
            if prompt.expires_at > now:
                continue
            claimed = self.prompts.claim(
                prompt.incident_id, prompt.action_hash, "expire", "supply-agent", now
            )
            if claimed is not None:
                n += 1
                self._submit(prompt.incident_id, self._resume, claimed)
        return n

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.approval_sweep_s):
            try:
                self.sweep()
            except Exception:
                log.exception("approval sweep failed")

    # -- reads for the API ---------------------------------------------------------------------------
    def ready(self) -> dict[str, str]:
        """What is not reachable (empty when ready)."""
        problems: dict[str, str] = {}
        try:
            self.store.incidents(limit=1)
        except Exception as exc:
            problems["store"] = f"{type(exc).__name__}: {exc}"
        try:
            self.env.runtime.kube.ping()
        except Exception as exc:
            problems["cluster"] = f"{type(exc).__name__}: {exc}"
        return problems


def _pd_id(state: IncidentState) -> str | None:
    a = state.alerts[0] if state.alerts else None
    return a.source_id if a is not None and a.source == "pagerduty" and a.source_id else None


def _ending(state: IncidentState) -> str:
    acted = [s for s in state.steps if s.outcome in ("executed", "duplicate")]
    head = f"supply-agent: {state.outcome}"
    if state.root_cause:
        head += f" (root cause: {state.root_cause})"
    lines = [head, *(f"- {s.action.tool} {json.dumps(s.action.params, sort_keys=True)}" for s in acted)]
    if state.handoff:
        lines.append(f"hand-off: {state.handoff}")
    return "\n".join(lines)


@contextmanager
def open_service(
    settings: Settings, kubeconfig: Path, *, planner: Planner | None = None, follow_log: bool = False
) -> Iterator[Service]:
    """A :class:`Service` on the cluster in ``kubeconfig`` with PagerDuty and Slack from settings."""
    pd = None
    if settings.pagerduty_api_key is not None:
        if not settings.pagerduty_from:
            raise ValueError(
                "SUPPLY_AGENT_PAGERDUTY_FROM: the email of the agent's PagerDuty user is required"
            )
        pd = PagerDutyClient(
            settings.pagerduty_api_key.get_secret_value(),
            settings.pagerduty_from,
            base_url=settings.pagerduty_api_url,
            escalation_policy_id=settings.pagerduty_escalation_policy,
            verify=(
                ssl.create_default_context(cafile=str(settings.pagerduty_ca_file))
                if settings.pagerduty_ca_file
                else True
            ),
        )
    slack = None
    if settings.slack_bot_token is not None:
        if not settings.slack_channel:
            raise ValueError("SUPPLY_AGENT_SLACK_CHANNEL: the channel for approval prompts is required")
        slack = SlackClient(
            settings.slack_bot_token.get_secret_value(),
            settings.slack_channel,
            base_url=settings.slack_api_url,
        )
    events = EventLog.from_url(settings.resolved_intake_url())
    try:
        with open_agent(settings, kubeconfig, planner=planner) as (agent, env):
            service = Service(
                settings,
                agent,
                env,
                events,
                PromptStore(agent.store.engine),
                pagerduty=pd,
                slack=slack,
                follow_log=follow_log,
            )
            yield service
    finally:
        events.close()
        if pd is not None:
            pd.close()
