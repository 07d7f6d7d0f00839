"""Approvals another agent asks for over MCP: the gate said ``ask``, so a named human must say yes.

The approval is a prompt in the same table as the agent's own (``approval_prompts``), bound to the
action's hash (tool, parameters, the caller's thread and the step its ``request_id`` names) and carrying
the request itself, since no graph thread waits on it. Where Slack is configured it is posted there with
the agent's own blocks; the signed click lands at ``serve`` like every other click (verified, stored,
claimed once) and finishes the prompt; the sweeper expires it. The caller reads it with
``approval_status`` and runs it with ``execute`` and the same ``request_id``: the gate decides again on
the world as it is then, and the guarded executor runs it only with an approval that admits exactly that
action, from an approver, before it expires.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import structlog

from supply_agent.hands.runtime import Runtime
from supply_agent.incidents.agent import ApprovalRequest
from supply_agent.models.actions import Action, Decision
from supply_agent.models.approvals import Approval, expires_at
from supply_agent.service.approvals import group_members
from supply_agent.service.prompts import Prompt, PromptStore
from supply_agent.service.slack_blocks import approval_blocks
from tools.slack import SlackClient, SlackError

log = structlog.get_logger("supply_agent.mcp")

CALLER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")  # also a Slack button's incident id
GROUPS_CACHE_S = 60.0


def caller_name(name: str) -> str:
    """A caller's name as the audit log and a Slack button carry it; a clear error when it cannot be."""
    if not CALLER.fullmatch(name):
        raise ValueError(
            f"caller name {name!r}: 1-48 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def thread_of(caller: str) -> str:
    """The caller's audit thread: its writes are one incident's, so writes-per-incident is per caller."""
    return f"mcp:{caller}"


class CallerApprovals:
    """Ask, post, read and admit the approvals of MCP callers."""

    def __init__(
        self,
        rt: Runtime,
        prompts: PromptStore,
        slack: SlackClient | None = None,
        approver_groups: Sequence[str] = (),
    ) -> None:
        self.rt = rt
        self.prompts = prompts
        self.slack = slack
        self.groups = tuple(approver_groups)
        self._static = frozenset(rt.executor.approvers)
        self._groups_at = float("-inf")

    def approvers(self) -> frozenset[str]:
        """The settings' and playbooks' approvers, and the members of the Slack approver groups (read
        again after a minute), as ``serve`` counts them when the click comes."""
        now = time.monotonic()
        if self.slack is not None and self.groups and now - self._groups_at > GROUPS_CACHE_S:
            self.rt.executor.approvers = self._static | group_members(self.slack, self.groups)
            self._groups_at = now
        return frozenset(self.rt.executor.approvers)

    def ask(self, action: Action, decision: Decision) -> Prompt:
        """The pending approval of ``action`` (asked once; asked again, the same one), posted to Slack
        if it is configured and the post has not gone out yet (a failed post is tried on the next ask)."""
        iid, digest = action.incident_id, action.digest()
        prompt = self.prompts.get(iid, digest)
        if prompt is None:
            asked = self.rt.clock()
            request = ApprovalRequest(
                interrupt_id=f"mcp-{digest[:16]}",
                incident_id=iid,
                step=action.step,
                action_hash=digest,
                tool=action.tool,
                params=action.params,
                why=action.reason,
                planner=action.proposed_by,
                blast_radius=decision.targets.model_dump(mode="json"),
                reasons=list(decision.reasons),
                asked_at=asked,
                expires_at=expires_at(asked, self.rt.playbooks.limits.approvals.ttl),
                approvers=sorted(self.approvers()),
            )
            self.prompts.add(
                iid, digest, action.step, asked, request.expires_at, request.model_dump(mode="json")
            )
            prompt = self.prompts.get(iid, digest)
            assert prompt is not None
            log.info("mcp approval asked", incident_id=iid, tool=action.tool, approval_id=prompt.id)
        if prompt.status == "pending" and not prompt.ts and self.slack is not None:
            self._post(prompt)
            prompt = self.prompts.get(iid, digest) or prompt
        return prompt

    def _post(self, prompt: Prompt) -> None:
        assert self.slack is not None and prompt.request is not None
        request = ApprovalRequest.model_validate(prompt.request)
        text, blocks = approval_blocks(request, f"{request.planner} asks to act on the cluster", [])
        try:
            message = self.slack.post(text, blocks)
        except SlackError as exc:  # the approval stands; the post is tried again on the next ask
            log.warning(
                "cannot post an MCP approval to Slack", incident_id=prompt.incident_id, error=str(exc)
            )
            return
        self.prompts.set_message(prompt.incident_id, prompt.action_hash, message.channel, message.ts)

    def of_caller(self, approval_id: str, caller: str) -> Prompt | None:
        """The approval ``approval_id`` if it is this caller's (another caller's is not shown)."""
        if not approval_id.isdigit() or len(approval_id) > 18:
            return None
        prompt = self.prompts.by_id(int(approval_id))
        if prompt is None or prompt.incident_id != thread_of(caller) or prompt.request is None:
            return None
        return prompt

    def approval(self, prompt: Prompt) -> Approval | None:
        """The human's yes, bound to the prompt's action hash; usable for one ttl after it was given."""
        if prompt.status != "approved" or prompt.decided_by is None or prompt.decided_at is None:
            return None
        return Approval(
            action_hash=prompt.action_hash,
            approver=prompt.decided_by,
            approved=True,
            decided_at=prompt.decided_at,
            expires_at=expires_at(prompt.decided_at, self.rt.playbooks.limits.approvals.ttl),
            channel="slack",
        )


def status_of(prompt: Prompt) -> dict[str, Any]:
    """What ``approval_status`` and an asked ``execute`` answer about one approval."""
    request = prompt.request or {}
    return {
        "approval_id": str(prompt.id),
        "status": "pending" if prompt.status == "deciding" else prompt.status,
        "tool": request.get("tool"),
        "params": request.get("params"),
        "asked_at": prompt.asked_at.isoformat(),
        "expires_at": prompt.expires_at.isoformat(),
        "decided_by": prompt.decided_by if prompt.status != "pending" else None,
        "decided_at": prompt.decided_at.isoformat()
        if prompt.decided_at and prompt.status != "pending"
        else None,
        "posted_to_slack": bool(prompt.ts),
    }
