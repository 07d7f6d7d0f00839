"""Waiting for a better moment: a step that stops gang jobs may wait for their next checkpoint, up to
a deadline, where the fault allows it.

It exists apart from the gate because it decides *when*, not *whether*: the gate decides on the world
as it is when the step finally runs. A drain ten seconds before a job's hourly checkpoint throws away
an hour of every GPU of the job; the same drain a minute after it throws away a minute. NVIDIA says
which faults leave the GPU working until a convenient moment (the row-remap pending flag: "unaffected
applications can continue running"; the recovery actions "Drain P2P" and "Drain P2P and Reset Gpu",
which ask for the GPU's work to be drained, not that it has failed), and which do not (a GPU that fell
off the bus, an uncontained ECC error, a reset or a reboot required now): a playbook states it with
the step's ``wait_for_checkpoint``, limited to the recovery actions that allow it.

The arithmetic is pure (``plan_wait``): the workloads the step would stop (their checkpoint cadence
and the time since the checkpoint a restart resumes from), the time the step first came due, now, and
the pace of a GPU that still works but slowly (a thermal slowdown: every rank of a synchronous job waits
for it, so waiting costs too, and the moment is where the two costs together are least).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from supply_agent.models.actions import WorkloadHit
from supply_agent.policy.base import Strict
from supply_agent.policy.units import Duration, at_most

# NVML's recovery actions that drain work from a GPU that still runs it (tools.nvml.codes names).
DRAIN_ACTIONS = ("drain_p2p", "drain_and_reset")


class WaitForCheckpoint(Strict):
    """Run the step just after the next checkpoint of every gang job it stops, or at ``within`` after it
    first came due, whichever is first. ``after``: how long after the checkpoint (it is written); a
    checkpoint at most ``fresh`` old already is the moment. ``recovery_actions``: wait only when the
    alert's GPU reports one of these NVML recovery actions (empty: whatever it reports)."""

    within: Annotated[Duration, at_most(timedelta(hours=24))] = timedelta(hours=2)
    after: Annotated[Duration, at_most(timedelta(minutes=30))] = timedelta(minutes=1)
    fresh: Annotated[Duration, at_most(timedelta(hours=1))] = timedelta(minutes=5)
    recovery_actions: tuple[str, ...] = ()


class WaitPlan(BaseModel):
    """When a step runs: now (``until`` None), or at ``until`` (never past ``deadline``); and why."""

    model_config = ConfigDict(frozen=True)

    until: datetime | None = None
    deadline: datetime
    reason: str
    waits_for: tuple[str, ...] = Field(default=(), description="The workloads whose checkpoint it waits for.")


def _mins(seconds: float) -> str:
    return f"{max(0, round(seconds / 60))} min"


def plan_wait(
    option: WaitForCheckpoint,
    hits: Iterable[WorkloadHit],
    now: datetime,
    first_due: datetime,
    recovery_action: str | None = None,
    pace: float | None = None,
) -> WaitPlan:
    """When to run a step the option lets wait: now when the fault does not allow waiting, when it stops
    no gang job whose next checkpoint can be told, when each such job checkpointed at most ``fresh`` ago,
    or when the deadline (``first_due`` + ``within``) has come; else the moment that loses the least.

    ``pace``: the speed the alert's GPU runs at (its SM clock over its maximum; None or 1.0: full). The
    ranks of a synchronous job wait for the slowest, so every job the step stops runs at that pace while
    it waits, and each minute of waiting costs ``(1 - pace)`` of each of their GPUs: a slowed GPU makes
    an early moment worth more than a late checkpoint."""
    hits = list(hits)
    deadline = first_due + option.within
    if option.recovery_actions and recovery_action not in option.recovery_actions:
        said = recovery_action or "not known"
        return WaitPlan(
            deadline=deadline,
            reason=f"the GPU's recovery action is {said}, not one that lets work wait "
            f"({', '.join(option.recovery_actions)}): now",
        )
    if now >= deadline:
        return WaitPlan(deadline=deadline, reason=f"the deadline {deadline:%H:%M:%S} has come: now")
    known = [h for h in hits if h.checkpoint_every_s and h.since_checkpoint_s is not None]
    if not known:
        return WaitPlan(deadline=deadline, reason="it stops no gang job with a known checkpoint cadence: now")
    stale = [h for h in known if (h.since_checkpoint_s or 0.0) > option.fresh.total_seconds()]
    if not stale:
        return WaitPlan(
            deadline=deadline,
            reason="every gang job it stops checkpointed at most "
            f"{_mins(option.fresh.total_seconds())} ago: now",
        )
    # The moments worth running at: just after each job's next checkpoint (a late one is due now), and
    # the deadline. The one that throws away the least work of every job it stops wins (the earliest
    # of equals); now wins when no moment loses less than now does.
    left = (deadline - now).total_seconds()
    moments = sorted({min(_first(h) + option.after.total_seconds(), left) for h in stale} | {left})
    lag = 1.0 - min(1.0, max(0.0, pace)) if pace is not None else 0.0
    slowed = lag * sum(h.gpus for h in hits)  # GPU-minutes a minute the slowed jobs lose while they run

    def slow(d: float) -> float:
        """What the slowed GPU costs the jobs that keep their work: each one's slowed time up to its
        last checkpoint before ``d`` (the stretch after it is thrown away whole, in ``_lost``)."""
        return lag * sum(h.gpus * _saved(h, d) / 60.0 for h in known)

    def cost(d: float) -> float:  # work thrown away then, and the slowed time it keeps
        return _lost(known, d) + slow(d)

    lost_now = cost(0.0)
    best = min(moments, key=lambda d: (cost(d), d))
    if cost(best) >= lost_now:
        return WaitPlan(
            deadline=deadline,
            reason=f"no moment before the deadline loses less than now ({lost_now:,.0f} GPU-minutes"
            f"{_slow_note(slowed, pace)}): now",
        )
    until = now + timedelta(seconds=best)
    waited = tuple(h.key for h in stale if _first(h) < best)
    what = "; ".join(f"{h.describe()}, next in {_mins(_first(h))}" for h in stale)
    capped = " (the deadline)" if until == deadline else ""
    while_slow = f", {slow(best):,.0f} of them to the slowed GPU while it waits" if slowed else " of work"
    return WaitPlan(
        until=until,
        deadline=deadline,
        waits_for=waited,
        reason=f"waits for the next checkpoint: {what}; runs at {until:%H:%M:%S}{capped}, losing "
        f"{cost(best):,.0f} GPU-minutes{while_slow}, not {lost_now:,.0f} now; deadline {deadline:%H:%M:%S}",
    )


def _slow_note(slowed: float, pace: float | None) -> str:
    if not slowed or pace is None:
        return ""
    return f"; at {pace:.0%} pace the jobs lose {slowed:,.0f} GPU-minutes a minute while they wait"


def _first(h: WorkloadHit) -> float:
    """Seconds to a job's next checkpoint: its cadence past the one it resumes from (a late one: now)."""
    return max(0.0, float(h.checkpoint_every_s or 0) - float(h.since_checkpoint_s or 0.0))


def _saved(h: WorkloadHit, delta_s: float) -> float:
    """Seconds from now to the job's last checkpoint before ``delta_s`` from now (0: none comes)."""
    every, first = float(h.checkpoint_every_s or 0), _first(h)
    if delta_s < first or every <= 0:
        return 0.0
    return first + ((delta_s - first) // every) * every


def _lost(hits: Iterable[WorkloadHit], delta_s: float) -> float:
    """The GPU-minutes of work the jobs would throw away if stopped ``delta_s`` from now: each job's GPUs
    times the time since its last checkpoint then (the cadence goes on after the next one)."""
    total = 0.0
    for h in hits:
        every, first = float(h.checkpoint_every_s or 0), _first(h)
        since = float(h.since_checkpoint_s or 0.0) + delta_s if delta_s < first else (delta_s - first) % every
        total += h.gpus * since / 60.0
    return total
