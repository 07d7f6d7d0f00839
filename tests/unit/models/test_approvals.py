"""The one approvals rule: who may approve, expiry, and binding to one action."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from supply_agent.models import Action, Approval
from supply_agent.models.approvals import counts, expired, expires_at, may_approve

T0 = datetime(2026, 1, 1, tzinfo=UTC)
APPROVERS = frozenset({"U1", "U2"})


def test_only_an_approvers_yes_counts_and_anyones_no_does() -> None:
    assert may_approve("U1", APPROVERS) and not may_approve("U9", APPROVERS)
    assert counts("U1", True, APPROVERS) and not counts("U9", True, APPROVERS)
    assert counts("U9", False, APPROVERS)  # a stranger's rejection stops the action: safe


@settings(max_examples=100, deadline=None, derandomize=True)
@given(ttl_s=st.integers(1, 86_400), answered_s=st.integers(0, 2 * 86_400))
def test_an_answer_is_too_late_exactly_from_the_expiry_on(ttl_s: int, answered_s: int) -> None:
    expires = expires_at(T0, timedelta(seconds=ttl_s))
    assert expires == T0 + timedelta(seconds=ttl_s)
    assert expired(T0 + timedelta(seconds=answered_s), expires) == (answered_s >= ttl_s)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    approver=st.sampled_from(["U1", "U2", "U9"]),
    approved=st.booleans(),
    step=st.integers(0, 3),
    now_s=st.integers(0, 1200),
)
def test_an_approval_admits_its_own_action_only_while_valid(
    approver: str, approved: bool, step: int, now_s: int
) -> None:
    action = Action(tool="k8s.drain_node", params={"node": "n1"}, incident_id="i1", step=1)
    other = action.model_copy(update={"step": step})
    approval = Approval(
        action_hash=action.digest(),
        approver=approver,
        approved=approved,
        decided_at=T0,
        expires_at=expires_at(T0, timedelta(minutes=15)),
    )
    now = T0 + timedelta(seconds=now_s)
    ok, why = approval.admits(other, now, APPROVERS)
    should = step == 1 and approved and now_s < 900 and approver in APPROVERS
    assert ok == should
    assert bool(why) == (not ok)
