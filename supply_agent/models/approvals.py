"""Approvals, one rule per question: who may approve, when a request expires, and what an answer is
bound to. The gate's ``ask`` node, the Slack click, the sweeper, the agent facade and the guarded executor
all ask these functions, so the rule cannot differ between them."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from supply_agent.models.actions import Action


def may_approve(who: str, approvers: Collection[str]) -> bool:
    """Only an authorised approver's *yes* counts; anyone's *no* stops the action (a reject is safe)."""
    return who in approvers


def counts(who: str, approved: bool, approvers: Collection[str]) -> bool:
    """Whether an answer is taken at all: every rejection, and an approval from an approver."""
    return not approved or may_approve(who, approvers)


def expires_at(asked_at: datetime, ttl: timedelta) -> datetime:
    """When a request asked at ``asked_at`` stops being answerable."""
    return asked_at + ttl


def expired(at: datetime, expires: datetime) -> bool:
    """An answer at or after the expiry is too late (the boundary belongs to the expiry)."""
    return at >= expires


class Approval(BaseModel):
    """A human's answer to an ``ask``: bound to one action hash, from one approver, until it expires."""

    model_config = ConfigDict(frozen=True)

    action_hash: str
    approver: str
    approved: bool
    decided_at: datetime
    expires_at: datetime
    channel: str = "terminal"

    def admits(self, action: Action, now: datetime, approvers: frozenset[str]) -> tuple[bool, str]:
        """Whether this approval lets ``action`` run now; the reason when it does not."""
        if self.action_hash != action.digest():
            return False, "the approval is for a different action"
        if not self.approved:
            return False, f"rejected by {self.approver}"
        if expired(now, self.expires_at):
            return False, f"the approval expired at {self.expires_at.isoformat()}"
        if not may_approve(self.approver, approvers):
            return False, f"{self.approver} is not an authorised approver"
        return True, ""
