"""Approvals from Slack: who may approve (settings, playbooks, user groups), the signed click bound to one
pending approval and claimed once, the resume, and the sweeper that expires what nobody answered."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from supply_agent import failpoints
from supply_agent.incidents.agent import ApprovalAnswer, ApprovalRequest
from supply_agent.intake.accept import Reply
from supply_agent.intake.clicks import APPROVE, read_click
from supply_agent.models.approvals import expired, may_approve
from supply_agent.service.prompts import ANSWERED, Prompt, Status
from supply_agent.service.slack_blocks import approval_blocks, decided_blocks
from supply_agent.service.state import (
    GROUP_CACHE_S,
    ServiceState,
    log,
)
from tools.errors import describe
from tools.slack import SlackClient, SlackError


def group_members(slack: SlackClient, groups: Iterable[str]) -> frozenset[str]:
    """The members of the Slack approver groups; a group that cannot be read is logged and counts none."""
    members: set[str] = set()
    for group in groups:
        try:
            members |= slack.usergroup_members(group)
        except SlackError as exc:
            log.error("cannot read a Slack approver group", group=group, error=str(exc))
    return frozenset(members)


class ApprovalsMixin(ServiceState):
    def _prompt(self, iid: str, request: ApprovalRequest) -> None:
        """Ask in Slack, once per pending approval: the prompt recorded, its post stored in the outbox."""
        self.prompts.add(iid, request.action_hash, request.step, request.asked_at, request.expires_at)
        self._put("prompt", iid, f"prompt:{iid}:{request.action_hash}", {"action_hash": request.action_hash})

    def _post_prompt(self, iid: str, action_hash: str) -> None:
        """Post the prompt if the approval still waits and no message was posted for it yet."""
        prompt = self.prompts.get(iid, action_hash)
        if prompt is None or prompt.ts:
            return
        key = f"slack.post:{iid}:{action_hash}"
        if prompt.status != "pending":
            # Answered before its post was recorded (a crash came between): keep the message, if one
            # went out, so the update can say who decided.
            done = self.env.runtime.executor.audit.completed(key)
            posted = done.result if done is not None else None
            if posted and posted.get("channel") and posted.get("ts"):
                self.prompts.set_message(iid, action_hash, str(posted["channel"]), str(posted["ts"]))
            return
        request = self.agent.pending(iid)
        if request is None or request.action_hash != action_hash:
            return
        if self.slack is None:
            log.warning("approval pending and no Slack configured", incident_id=iid, tool=request.tool)
            return
        row = self.store.get(iid)
        title = row.title if row else iid
        try:
            evidence = [e.summary for e in self.agent.state(iid).evidence[-5:]]
        except KeyError:
            evidence = []
        text, blocks = approval_blocks(request, title, evidence)
        # Keyed by the approval alone: a retry after a lost reply returns the recorded post, never a second.
        posted = self._deliver(iid, "slack.post", {"text": text, "blocks": blocks}, key)
        failpoints.reached("prompt-posted")
        if posted and posted.get("channel") and posted.get("ts"):
            self.prompts.set_message(iid, action_hash, str(posted["channel"]), str(posted["ts"]))

    def _update_prompt(self, iid: str, action_hash: str, status: str) -> None:
        """Say in the prompt's message who decided and when (once the post is known; else nothing)."""
        prompt = self.prompts.get(iid, action_hash)
        if prompt is None or not prompt.channel or not prompt.ts:
            return
        request = self._request_of(iid, action_hash)
        if request is None:
            return
        row = self.store.get(iid)
        who = prompt.decided_by or "supply-agent"
        text, blocks = decided_blocks(
            request, row.title if row else iid, status, who, prompt.decided_at or self.clock()
        )
        update = {"channel": prompt.channel, "ts": prompt.ts, "text": text, "blocks": blocks}
        self._deliver(iid, "slack.update", update, f"slack.update:{iid}:{action_hash}:{status}")

    def _request_of(self, iid: str, action_hash: str) -> ApprovalRequest | None:
        """The approval request as it was asked (stored on a standalone prompt; else from the thread's
        interrupt history)."""
        prompt = self.prompts.get(iid, action_hash)
        if prompt is not None and prompt.request is not None:
            return ApprovalRequest.model_validate(prompt.request)
        pending = self.agent.pending(iid)
        if pending is not None and pending.action_hash == action_hash:
            return pending
        for snap in self.agent.graph.get_state_history(self.agent.config(iid)):
            for intr in snap.interrupts:
                value = intr.value
                if (
                    isinstance(value, dict)
                    and value.get("kind") == "approval"
                    and value.get("action_hash") == action_hash
                ):
                    return ApprovalRequest(
                        interrupt_id=intr.id, **{k: v for k, v in value.items() if k != "kind"}
                    )
        return None

    def refresh_approvers(self, force: bool = False) -> frozenset[str]:
        """Approvers: the settings' and playbooks' ids, and the members of the Slack approver groups."""
        now = time.monotonic()
        if (
            self.slack is not None
            and self.settings.slack_approver_groups
            and (force or now - self._groups_at > GROUP_CACHE_S)
        ):
            members = group_members(self.slack, self.settings.slack_approver_groups)
            self.env.runtime.executor.approvers = self._static_approvers | members
            self._groups_at = now
        return frozenset(self.env.runtime.executor.approvers)

    def click(self, body: bytes, timestamp: str | None, signature: str | None) -> Reply:
        """A Slack interaction: verified and stored (so it is never lost), then applied: bound to one
        pending approval, claimed once, and the thread resumed. If applying fails, the stored click is
        applied by the dispatcher when it can be, and Slack hears 200 either way."""
        checked = self.intake.check_click(body, timestamp, signature)
        if isinstance(checked, Reply):
            return checked
        event_id = self.events.add(checked, body)
        if event_id is None:
            return Reply(200, {"status": "ignored", "reason": "this click was received before"})
        # Held as queued while this request applies it: the dispatcher's rescan of pending events
        # would otherwise apply the same click at once, and this request would answer "already".
        with self._pending_lock:
            self._queued.add(event_id)
        try:
            try:
                status, note, reply = self._apply_click(body)
            except Exception as exc:
                log.warning(
                    "applying a click failed; it is stored and applied later",
                    error=describe(exc),
                )
                failed = True
            else:
                failed = False
                elsewhere = self._applied_elsewhere(event_id) if status == "ignored" else None
                if elsewhere is not None:
                    reply = elsewhere  # and the dispatcher's record of it stands
                else:
                    try:
                        self.events.finish(event_id, status, note)  # type: ignore[arg-type]
                    except Exception:
                        log.warning(
                            "cannot mark a click applied; the dispatcher will see it is", event_id=event_id
                        )
        finally:
            with self._pending_lock:
                self._queued.discard(event_id)
        if failed:
            self._enqueue(event_id)
            return Reply(200, {"status": "stored", "event_id": event_id})
        return Reply(200, reply)

    def _applied_elsewhere(self, event_id: int) -> dict[str, Any] | None:
        """What Slack hears for a click the dispatcher applied while this request was applying it too
        (its rescan took the event as soon as it was stored): that click's own answer, not "already"."""
        ev = self.events.get_many([event_id]).get(event_id)
        if ev is None or ev.status != "handled":
            return None
        c = read_click(ev.body)
        prompt = self.prompts.get(c.incident_id, c.action_hash)
        if prompt is None or prompt.decided_by != c.user_id or prompt.decision is None:
            return None
        return {"status": "accepted", "decision": prompt.decision}

    def _apply_click(self, body: bytes) -> tuple[str, str, dict[str, Any]]:
        """Apply a stored (verified) click: the event's status and note, and what Slack is answered."""
        c = read_click(body)
        now = self.clock()
        who = c.user_id
        decision = "approve" if c.action_id == APPROVE else "reject"
        prompt = self.prompts.get(c.incident_id, c.action_hash)
        if prompt is None:
            if self.store.get(c.incident_id) is not None:
                self.store.note(
                    c.incident_id,
                    now,
                    f"ignored a click by {who}: no such approval",
                    action_hash=c.action_hash,
                )
            return "ignored", "no such approval", {"status": "ignored", "reason": "no such approval"}
        if prompt.status != "pending":
            if prompt.decided_by == who and prompt.status == "deciding":  # this click, applied again
                self._put_resume(prompt)
                return "handled", "claimed before", {"status": "accepted", "decision": prompt.decision}
            text = f"ignored a click by {who}: the approval was already {prompt.status}"
            self.store.note(c.incident_id, now, text, action_hash=c.action_hash, action=c.action_id)
            return "ignored", text, {"status": "ignored", "reason": text}
        if not may_approve(who, self.refresh_approvers()):
            text = f"ignored a click by {who} via slack: not an approver"
            self.store.note(c.incident_id, now, text, action_hash=c.action_hash, action=c.action_id)
            log.warning(text, incident_id=c.incident_id)
            return "ignored", text, {"status": "refused", "reason": text}
        claimed = self.prompts.claim(c.incident_id, c.action_hash, decision, who, now)
        if claimed is None:  # a double click, or two people at once: the first one counts
            text = f"ignored a click by {who}: the approval was answered already"
            self.store.note(c.incident_id, now, text, action_hash=c.action_hash)
            return "ignored", text, {"status": "ignored", "reason": text}
        self.metrics.approval_wait.labels(decision).observe(max(0.0, (now - prompt.asked_at).total_seconds()))
        failpoints.reached("claim")
        self._put_resume(claimed)
        return "handled", f"{decision} by {who}", {"status": "accepted", "decision": decision}

    def _put_resume(self, prompt: Prompt) -> None:
        iid = prompt.incident_id
        self._put("resume", iid, f"resume:{iid}:{prompt.action_hash}", {"action_hash": prompt.action_hash})

    def _resume(self, prompt: Prompt) -> None:
        """Resume a thread with a claimed answer; then say in Slack who decided and when.

        Level-triggered: if the thread took the answer already (a kill after the approval was
        checkpointed and before the prompt was finished), it is continued from its checkpoint and the
        prompt finished with what the thread recorded; nothing is asked or done twice. The answer is
        bound to the incident and the action hash, not to the interrupt: a thread woken by alerts that
        joined asks the same request again under a new interrupt id, and a wake cut short by a crash is
        first brought back to that request."""
        iid = prompt.incident_id
        if prompt.standalone:  # no thread waits on it (an MCP caller's): the answer is its end
            self._finished(prompt, ANSWERED.get(prompt.decision or "", "expired"))
            return
        if self.agent.unfinished(iid):
            self._run(iid)
        pending = self.agent.pending(iid)
        if pending is not None and pending.action_hash == prompt.action_hash:
            answer = ApprovalAnswer(
                approved=prompt.decision == "approve",
                approver=prompt.decided_by or "unknown",
                decided_at=prompt.decided_at or self.clock(),
                channel="slack" if prompt.decision != "expire" else "expiry",
                action_hash=prompt.action_hash,
            )
            result = self._run(iid, resume=answer)
            state = result.state
        else:
            try:
                state = self.agent.state(iid)
            except KeyError:
                self.prompts.finish(iid, prompt.action_hash, "expired")
                return
            self._put_run(iid)  # whatever the thread reached is written back
        step = next((s for s in state.steps if s.action.digest() == prompt.action_hash), None)
        status = step.approval_state if step is not None else "pending"
        if status not in ("approved", "rejected", "expired"):
            still = self.agent.pending(iid)
            # Not taken (not an approver after all): open again; else the question is gone.
            waiting = still is not None and still.action_hash == prompt.action_hash
            self.prompts.finish(iid, prompt.action_hash, "pending" if waiting else "expired")
            return
        self._finished(prompt, status)

    def _finished(self, prompt: Prompt, status: Status) -> None:
        """The prompt answered for good; its Slack message is updated to say so (an outbox job)."""
        iid, digest = prompt.incident_id, prompt.action_hash
        self.prompts.finish(iid, digest, status)
        self._put(
            "prompt_update",
            iid,
            f"prompt_update:{iid}:{digest}:{status}",
            {"action_hash": digest, "status": status},
        )

    def sweep(self) -> int:
        """Expire approvals nobody answered in time; the threads escalate. How many were expired (0 on
        a replica that does not lead the sweep)."""
        lease = self.leases.lead("sweeper")
        if lease is None:
            return 0
        with self.fence.under(lease):
            return self._sweep()

    def _sweep(self) -> int:
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
                self._put_resume(claimed)
        return n

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.approval_sweep_s):
            try:
                self.sweep()
            except Exception:
                log.exception("approval sweep failed")
