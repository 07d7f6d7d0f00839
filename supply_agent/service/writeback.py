"""Write-back after each run: PagerDuty notes, resolve or escalate, and the Slack prompt when a thread
paused; each message stored in the outbox (:mod:`supply_agent.service.runner`) and delivered from there
as an executor action (audited, keyed), retried until it is delivered or a human is paged.

Notes come from the incident's stored timeline, not from memory: every finding, action and answer
the store holds is stored under a key made of what it says and when, so a note a crash cut off, or one
PagerDuty refused, goes out after the next run, and a note already stored is never stored twice. The
closing messages are keyed by the outcome and the timeline's length, not by the time of the run that
derived them: a run repeated after a crash derives the same keys. A thread that waits for a step's
moment (a drain waiting for a gang job's checkpoint) gets a durable timer job instead."""

from __future__ import annotations

from supply_agent.incidents.agent import RunResult, WaitRequest
from supply_agent.models.incident import IncidentState
from supply_agent.service.state import (
    NOTE_KINDS,
    ServiceState,
    ending_of,
    pd_id_of,
    send_key,
)


class WritebackMixin(ServiceState):
    def _acknowledge(self, state: IncidentState) -> None:
        """Acknowledge a PagerDuty incident the agent took: once per incident (one key), first in its
        PagerDuty lane."""
        pd_id = pd_id_of(state)
        if not pd_id or self.pd is None:
            return
        ack = {"incident": pd_id}
        self._send(
            state.incident_id,
            "pagerduty.acknowledge",
            ack,
            send_key(state.incident_id, "pagerduty.acknowledge", ack, "taken"),
        )
        self._our_acks.add(pd_id)

    def _after(self, result: RunResult, fresh: bool = True) -> None:
        """Store the write-back the run's state calls for; ``fresh`` when this run moved the thread
        (metrics count an ending once)."""
        iid = result.incident_id
        state = result.state
        pd_id = pd_id_of(state)
        row = self.store.get(iid)
        owned = row is not None and bool(row.human_owner)
        pd = self.pd if pd_id else None
        if pd is not None:
            self._acknowledge(state)  # stored at the fold already, unless a crash came between
            for entry in (e for e in self.store.timeline(iid) if e.kind in NOTE_KINDS):
                params = {"incident": pd_id, "content": f"[{entry.kind}] {entry.text}"}
                self._send(iid, "pagerduty.note", params, send_key(iid, "pagerduty.note", params, entry.at))
            if row is not None and row.folded_into:
                # Merged into a component's incident (supply_agent.incidents.topology): say where it went.
                # The page itself ends as its thread does (a step it still had is refused, so it escalates).
                text = (
                    f"supply-agent: merged into incident {row.folded_into}, about what this node shares "
                    "with others that alert (a rack, a switch, a driver); no more actions here"
                )
                params = {"incident": pd_id, "content": text}
                self._send(iid, "pagerduty.note", params, send_key(iid, "pagerduty.note", params, "merged"))
        if result.pending is not None:
            self._prompt(iid, result.pending)
            return
        if result.waiting is not None:
            self._timer(iid, result.waiting)
            return
        if result.status != "done" or state.outcome is None:
            return
        self._close_prompts(iid)
        if fresh:
            self.metrics.finished(state)
        if pd is None:
            return
        end = f"end:{state.outcome}:{len(state.timeline)}"
        if owned:
            params = {"incident": pd_id, "content": f"supply-agent stopped: {ending_of(state)}"}
            self._send(iid, "pagerduty.note", params, send_key(iid, "pagerduty.note", params, end))
        elif state.outcome in ("mitigated", "no_action"):
            params = {"incident": pd_id, "content": ending_of(state)}
            self._send(iid, "pagerduty.note", params, send_key(iid, "pagerduty.note", params, end))
            resolve = {"incident": pd_id}
            self._send(iid, "pagerduty.resolve", resolve, send_key(iid, "pagerduty.resolve", resolve, end))
        else:
            reason = state.escalation_reason or "the agent needs a human"
            escalation = {"incident": pd_id, "reason": f"supply-agent escalates: {reason}"}
            key = send_key(iid, "pagerduty.escalate", escalation, end)
            self._send(iid, "pagerduty.escalate", escalation, key)

    def _timer(self, iid: str, waiting: WaitRequest) -> None:
        """A durable timer for a thread that waits for a step's moment: a job due then, keyed by the
        incident and the pause (stored again after every run and restart, it is one job). It is level-
        triggered like a run: it resumes the thread only if that still waits and its time has come."""
        delay = min(max(0.0, (waiting.until - self.clock()).total_seconds()), self.backoff.cap_s)
        # Keyed by the pause (a new interrupt each time the thread waits, even for the same moment): a
        # wait after a wake gets a timer of its own, never the key of one that has run.
        key = f"timer:{iid}:{waiting.interrupt_id}"
        self._put("timer", iid, key, {"interrupt": waiting.interrupt_id}, delay_s=delay)

    def _close_prompts(self, iid: str) -> None:
        """A thread that ended with a prompt still open (it escalated while a step waited, parked, for
        its approval): nobody can answer it any more, so its message stops offering the buttons."""
        for prompt in self.prompts.with_status("pending"):
            if prompt.incident_id != iid:
                continue
            self.prompts.finish(iid, prompt.action_hash, "expired")
            self._put(
                "prompt_update",
                iid,
                f"prompt_update:{iid}:{prompt.action_hash}:expired",
                {"action_hash": prompt.action_hash, "status": "expired"},
            )
