"""What one replay of one incident scored, and the summary over a run: the contract between the runner,
the report and ``results.json``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Violation(BaseModel):
    """A safety violation: what happened in the world (or the audit log), and why it is one."""

    what: str
    why: str


class Prevented(BaseModel):
    """A gate decision (deny or ask) on an action: enforced, or only logged under ``--no-gate``."""

    tool: str
    target: str
    verdict: str
    reasons: list[str]
    enforced: bool


class EvalResult(BaseModel):
    """One incident, one planner, gate on or off."""

    id: str
    title: str = ""
    incident_class: str = ""
    planner: str
    gate: bool = True
    node_only: bool = Field(
        False,
        description="Replayed with the gate's workload rules off (workloads.enabled false): the node-only "
        "gate, which counts a drain as its node's GPUs and never waits for a checkpoint (--node-only).",
    )
    outcome: str = Field(description="The outcome the evidence supports (the primary incident).")
    claimed_outcome: str = ""
    expected_outcome: str
    outcome_correct: bool
    outcomes: list[str] = Field(default_factory=list, description="Every opened incident, in order.")
    expected_outcomes: list[str] = Field(default_factory=list)
    incidents_opened: int = 0
    incidents_expected: int = 1
    incidents_note: str = Field(
        "", description="When the count is wrong: what differs (the count, and each incident opened)."
    )
    symptoms_left: list[str] = Field(
        default_factory=list,
        description="Why a claimed mitigation is not supported by the world: each fault the incident is "
        "about whose symptom persists, uncontained (the fleet's truth).",
    )
    root_cause: str | None = None
    expected_root_cause: str = ""
    root_cause_correct: bool = False
    suspected: str | None = Field(
        None, description='The component the first incident named as its suspected cause ("rack r1").'
    )
    expected_suspected: str | None = None
    suspected_note: str = Field(
        "", description="Why the named component is wrong (empty when right, or when the file expects none)."
    )
    must_missing: list[str] = Field(default_factory=list)
    within_limits: bool = True
    limit_notes: list[str] = Field(default_factory=list)
    safety_violations: list[Violation] = Field(default_factory=list)
    prevented: list[Prevented] = Field(default_factory=list)
    actions: int = 0
    actions_by_tool: dict[str, int] = Field(default_factory=dict)
    sim_minutes: float | None = None
    gpu_minutes_lost: float | None = Field(
        None, description="GPU-minutes of customer work the fleet's JobSets lost (its truth); None: none ran."
    )
    careful_gpu_minutes: float | None = Field(None, description="What a careful human would have lost.")
    time_to_mitigate_min: float | None = None
    wall_s: float = 0.0
    llm_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    cassette: str | None = Field(None, description="recorded, replayed, stale, missing, or None")
    error: str | None = None
    passed: bool = False

    @property
    def key(self) -> tuple[str, str, bool, bool]:
        return (self.id, self.planner, self.gate, self.node_only)

    @property
    def run_name(self) -> str:
        """The planner and how it ran: ``runbook``, ``runbook --no-gate``, ``runbook --node-only``."""
        return self.planner + ("" if self.gate else " --no-gate") + (" --node-only" if self.node_only else "")


class Summary(BaseModel):
    runs: int
    incidents: int
    planners: list[str]
    by_planner: dict[str, dict[str, Any]]
    wall_s: float
    jobs: int


def summarise(results: list[EvalResult], wall_s: float, jobs: int) -> Summary:
    by: dict[str, dict[str, Any]] = {}
    for key in sorted({(r.planner, r.gate, r.node_only) for r in results}):
        planner, gate, node_only = key
        rows = [r for r in results if (r.planner, r.gate, r.node_only) == key]
        n = len(rows)
        ttm = sorted(r.time_to_mitigate_min for r in rows if r.time_to_mitigate_min is not None)
        by[rows[0].run_name] = {
            "planner": planner,
            "gate": gate,
            "node_only": node_only,
            "runs": n,
            "errors": sum(1 for r in rows if r.error),
            "outcome_correct": sum(r.outcome_correct for r in rows),
            "outcome_correct_pct": round(100 * sum(r.outcome_correct for r in rows) / n, 1) if n else 0.0,
            "root_cause_correct": sum(r.root_cause_correct for r in rows),
            "passed": sum(r.passed for r in rows),
            "safety_violations": sum(len(r.safety_violations) for r in rows),
            "incidents_with_violations": sum(1 for r in rows if r.safety_violations),
            "gate_decisions_not_enforced": sum(1 for r in rows for p in r.prevented if not p.enforced),
            "gate_decisions_enforced": sum(1 for r in rows for p in r.prevented if p.enforced),
            "actions": sum(r.actions for r in rows),
            "median_time_to_mitigate_min": ttm[len(ttm) // 2] if ttm else None,
            "llm_calls": sum(r.llm_calls for r in rows),
            "tokens": sum(r.tokens for r in rows),
            "cost_usd": round(sum(r.cost_usd for r in rows), 4),
            "wall_s": round(sum(r.wall_s for r in rows), 2),
        }
    return Summary(
        runs=len(results),
        incidents=len({r.id for r in results}),
        planners=sorted({r.planner for r in results}),
        by_planner=by,
        wall_s=round(wall_s, 2),
        jobs=jobs,
    )
