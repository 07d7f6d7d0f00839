"""Waiting for a gang job's checkpoint (supply_agent.policy.waiting): the moment a step runs is never past
its deadline, is now when the fault or the jobs give no reason to wait, and is after the checkpoint of
every job it stops otherwise; a playbook may ask for it only on a step that stops workloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from supply_agent.models.actions import WorkloadHit
from supply_agent.policy import load_playbooks
from supply_agent.policy.steps import Step
from supply_agent.policy.waiting import DRAIN_ACTIONS, WaitForCheckpoint, plan_wait

ROOT = Path(__file__).resolve().parents[3]
VERIFY = {"check": "pods_on_node", "max": 0}
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

hits = st.lists(
    st.builds(
        WorkloadHit,
        kind=st.just("JobSet"),
        key=st.sampled_from(["tenant-a/llm", "tenant-b/llm", "tenant-c/ft"]),
        nodes=st.integers(1, 64),
        gpus=st.integers(1, 512),
        since_checkpoint_s=st.one_of(st.none(), st.floats(0, 10_000, allow_nan=False)),
        checkpoint_every_s=st.one_of(st.none(), st.integers(0, 7_200)),
    ),
    max_size=4,
)
options = st.builds(
    WaitForCheckpoint,
    within=st.integers(1, 24 * 3600).map(lambda s: timedelta(seconds=s)),
    after=st.integers(1, 1800).map(lambda s: timedelta(seconds=s)),
    fresh=st.integers(1, 3600).map(lambda s: timedelta(seconds=s)),
    recovery_actions=st.sampled_from([(), DRAIN_ACTIONS]),
)


@settings(max_examples=300, deadline=None)
@given(
    option=options,
    hs=hits,
    waited_s=st.integers(0, 30 * 3600),
    action=st.sampled_from([None, "none", "reset", "node_reboot", "drain_p2p", "drain_and_reset"]),
)
def test_a_step_never_waits_past_its_deadline_nor_without_a_reason(
    option: WaitForCheckpoint, hs: list[WorkloadHit], waited_s: int, action: str | None
) -> None:
    now = T0 + timedelta(seconds=waited_s)
    plan = plan_wait(option, hs, now, T0, action)
    assert plan.deadline == T0 + option.within
    if plan.until is None:
        return
    assert now < plan.until <= plan.deadline
    assert not option.recovery_actions or action in option.recovery_actions
    stale = {
        h.key
        for h in hs
        if h.checkpoint_every_s
        and h.since_checkpoint_s is not None
        and h.since_checkpoint_s > option.fresh.total_seconds()
    }
    assert plan.waits_for and set(plan.waits_for) <= stale  # it waits for a checkpoint that comes before
    # And it loses less work than running now would.
    assert _loss(hs, (plan.until - now).total_seconds()) < _loss(hs, 0.0)


def _loss(hs: list[WorkloadHit], delta_s: float) -> float:
    """GPU-minutes thrown away if the jobs stop ``delta_s`` from now, simulated minute by minute."""
    total = 0.0
    for h in hs:
        if not h.checkpoint_every_s or h.since_checkpoint_s is None:
            continue
        since, t, nxt = h.since_checkpoint_s, 0.0, max(0.0, h.checkpoint_every_s - h.since_checkpoint_s)
        while t + 1e-9 < delta_s:
            step = min(delta_s - t, nxt - t) if nxt > t else min(delta_s - t, h.checkpoint_every_s)
            t += step
            since += step
            if abs(t - nxt) < 1e-9 or (nxt <= t and since >= h.checkpoint_every_s):
                since, nxt = 0.0, t + h.checkpoint_every_s
        total += h.gpus * since / 60.0
    return total


def _job(key: str, gpus: int, since_min: int) -> WorkloadHit:
    """A job on hourly checkpoints, ``since_min`` minutes past its last."""
    return WorkloadHit(
        kind="JobSet",
        key=key,
        nodes=gpus // 8,
        gpus=gpus,
        since_checkpoint_s=since_min * 60,
        checkpoint_every_s=3600,
    )


def _hit(since_s: float | None, every_s: int | None) -> WorkloadHit:
    return WorkloadHit(
        kind="JobSet",
        key="tenant-acme/llm",
        nodes=16,
        gpus=128,
        since_checkpoint_s=since_s,
        checkpoint_every_s=every_s,
    )


@pytest.mark.parametrize(
    ("hit", "action", "why"),
    [
        (_hit(3000, 3600), "reset", "recovery action is reset"),
        (_hit(3000, 3600), None, "recovery action is not known"),
        (_hit(120, 3600), "drain_and_reset", "at most 5 min ago"),
        (_hit(None, 3600), "drain_p2p", "no gang job with a known checkpoint cadence"),
        (_hit(3000, None), "drain_p2p", "no gang job with a known checkpoint cadence"),
    ],
)
def test_it_runs_now_and_says_why(hit: WorkloadHit, action: str | None, why: str) -> None:
    plan = plan_wait(WaitForCheckpoint(recovery_actions=DRAIN_ACTIONS), [hit], T0, T0, action)
    assert plan.until is None and why in plan.reason


def test_a_job_fifty_minutes_from_its_hourly_checkpoint_waits_ten_and_one_and_the_deadline_holds() -> None:
    option = WaitForCheckpoint(recovery_actions=DRAIN_ACTIONS)
    plan = plan_wait(option, [_hit(50 * 60, 3600)], T0, T0, "drain_and_reset")
    assert plan.until == T0 + timedelta(minutes=11) and plan.waits_for == ("tenant-acme/llm",)
    # First due 1h55m ago: the two hours end in five minutes, before the job's checkpoint. Waiting would
    # only lose more: now.
    late = plan_wait(option, [_hit(50 * 60, 3600)], T0, T0 - timedelta(minutes=115), "drain_and_reset")
    assert late.until is None and "no moment before the deadline loses less than now" in late.reason
    assert late.deadline == T0 + timedelta(minutes=5)
    gone = plan_wait(option, [_hit(50 * 60, 3600)], T0, T0 - timedelta(hours=3), "drain_and_reset")
    assert gone.until is None and "deadline" in gone.reason


def test_with_two_jobs_it_picks_the_checkpoint_that_loses_least() -> None:
    """A 256-GPU job checkpoints in 5 minutes, a 16-GPU one in 50: waiting for the big one's checkpoint
    loses least (a minute of the big one, 16 minutes of the small one), not waiting for the latest."""
    big = _job("JobSet/t/big", gpus=256, since_min=55)
    small = _job("JobSet/t/small", gpus=16, since_min=10)
    plan = plan_wait(WaitForCheckpoint(), [big, small], T0, T0, None)
    assert plan.until == T0 + timedelta(minutes=6) and plan.waits_for == ("JobSet/t/big",)
    assert "losing 512 GPU-minutes of work, not 14,240 now" in plan.reason


def test_only_a_step_that_stops_workloads_may_wait_and_the_shipped_playbook_does() -> None:
    wait = {"within": "2h", "recovery_actions": list(DRAIN_ACTIONS)}
    Step.model_validate(
        {
            "name": "drain",
            "tool": "k8s.drain_node",
            "params": {"node": "n"},
            "verify": VERIFY,
            "wait_for_checkpoint": wait,
        }
    )
    with pytest.raises(ValidationError, match=r"k8s\.cordon_node stops no workload"):
        Step.model_validate(
            {
                "name": "cordon",
                "tool": "k8s.cordon_node",
                "params": {"node": "n"},
                "verify": "node_unschedulable",
                "wait_for_checkpoint": wait,
            }
        )
    with pytest.raises(ValidationError, match="within"):
        Step.model_validate(
            {
                "name": "d",
                "tool": "k8s.drain_node",
                "params": {"node": "n"},
                "verify": VERIFY,
                "wait_for_checkpoint": {"within": "25h"},
            }
        )
    pbs = load_playbooks(ROOT / "playbooks")
    drain = next(s for s in pbs.get("xid-recovery-action").runbook if s.name == "drain")  # type: ignore[union-attr]
    assert drain.wait_for_checkpoint is not None
    assert set(drain.wait_for_checkpoint.recovery_actions) == set(DRAIN_ACTIONS)
    raw = yaml.safe_load((ROOT / "playbooks" / "xid-recovery-action.yaml").read_text())
    assert any("wait_for_checkpoint" in s for s in raw["runbook"])


# -- a GPU that still works, slowly: waiting costs too -------------------------------------------------


def test_a_slowed_gpu_waits_for_a_near_checkpoint_and_not_for_a_far_one() -> None:
    """At 60% pace, a 128-GPU job loses 51 GPU-minutes each minute it runs. Ten minutes from its
    half-hourly checkpoint, waiting (10 slowed minutes kept by the checkpoint, then the minute after it
    thrown away: 512 + 128) beats a drain now (20 minutes of work: 2,560). Six minutes past an hourly
    one, waiting 55 minutes (54 slowed, then one: 2,893) loses more than draining now (768): now, and
    the reason says the pace. The sandbox's truth counts the same way."""
    option = WaitForCheckpoint()
    near = WorkloadHit(
        kind="JobSet",
        key="tenant-acme/llm",
        nodes=16,
        gpus=128,
        since_checkpoint_s=1200,
        checkpoint_every_s=1800,
    )
    plan = plan_wait(option, [near], T0, T0, None, pace=0.6)
    assert plan.until == T0 + timedelta(minutes=11)
    assert (
        "losing 640 GPU-minutes, 512 of them to the slowed GPU while it waits, not 2,560 now" in plan.reason
    )
    far = _hit(6 * 60, 3600)
    assert plan_wait(option, [far], T0, T0).until == T0 + timedelta(minutes=55)  # at full pace it waits
    now = plan_wait(option, [far], T0, T0, None, pace=0.6)
    assert now.until is None
    assert "at 60% pace the jobs lose 51 GPU-minutes a minute while they wait" in now.reason


@settings(max_examples=300, deadline=None)
@given(
    option=options,
    hs=hits,
    waited_s=st.integers(0, 30 * 3600),
    paces=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_a_slower_gpu_never_waits_longer_and_full_pace_is_no_pace(
    option: WaitForCheckpoint, hs: list[WorkloadHit], waited_s: int, paces: tuple[float, float]
) -> None:
    now = T0 + timedelta(seconds=waited_s)
    action = "drain_p2p"
    assert plan_wait(option, hs, now, T0, action, pace=1.0) == plan_wait(option, hs, now, T0, action)
    slow, fast = sorted(paces)
    at_slow = plan_wait(option, hs, now, T0, action, pace=slow).until
    at_fast = plan_wait(option, hs, now, T0, action, pace=fast).until
    assert (at_slow or now) <= (at_fast or now)
