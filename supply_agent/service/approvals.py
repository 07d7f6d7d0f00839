"""Approvals from Slack: who may approve (settings, playbooks, user groups), the signed click bound to one
pending approval and claimed once, the resume, and the sweeper that expires what nobody answered."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs

from supply_agent.incidents.agent import ApprovalAnswer, ApprovalRequest
from supply_agent.intake.events import (
    Reply,
)
from supply_agent.intake.signing import SignatureError, verify_slack
from supply_agent.models.approvals import expired, may_approve
from supply_agent.service.prompts import Prompt
from supply_agent.service.slack_blocks import APPROVE, approval_blocks, decided_blocks, parse_click
from supply_agent.service.state import (
    GROUP_CACHE_S,
    ServiceState,
    log,
)
from tools.slack import SlackError


class ApprovalsMixin(ServiceState):
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
        if not may_approve(who, self.refresh_approvers()):
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
            if not expired(now, prompt.expires_at):
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
