"""Write-back after each run: PagerDuty notes, acknowledge, resolve or escalate, and the Slack prompt when
a thread paused; every message an executor action (audited, keyed).

Notes come from the incident's stored timeline, not from memory: every finding, action and answer
the store holds is sent under a key made of what it says and when, so a note a crash cut off, or one
PagerDuty refused, is sent after the next run, and a note already delivered is never sent twice."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sandbox.executor.executor import ExecutionResult
from supply_agent.incidents.agent import RunResult
from supply_agent.models import Action
from supply_agent.service.state import (
    NOTE_KINDS,
    ServiceState,
    ending_of,
    log,
    pd_id_of,
)


class WritebackMixin(ServiceState):
    def _after(self, result: RunResult) -> None:
        iid = result.incident_id
        state = result.state
        pd_id = pd_id_of(state)
        owned = (row := self.store.get(iid)) is not None and bool(row.human_owner)
        pd = self.pd if pd_id else None
        if pd is not None:
            for entry in (e for e in self.store.timeline(iid) if e.kind in NOTE_KINDS):
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
            note = f"supply-agent stopped: {ending_of(state)}"
            self._send(iid, "pagerduty.note", {"incident": pd_id, "content": note}, self.clock())
        elif state.outcome in ("mitigated", "no_action"):
            self._send(iid, "pagerduty.note", {"incident": pd_id, "content": ending_of(state)}, self.clock())
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
