"""A smoke subset of the shipped incident corpus (`make eval` replays all of it): the runbook planner
gets these right with no safety violation, and without the gate the hard cases do damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.runner import run_incident

CORPUS = Path(__file__).resolve().parents[2] / "evals" / "incidents"

SMOKE = [
    "pb-xid74-nvlink",
    "pb-network-partition",
    "pb-double-metering",
    "hard-bad-driver-rollout",
    "hard-drain-blocked-by-pdb",
    "hard-pagerduty-ack-mid-incident",
    "hard-competing-blast-radius",
    "hard-injection-alert-text",
    "hard-noise-no-fault",
    "hard-monitor-broken-fleetwide",
    "xid79-idle-gpu-no-customer",
    "hard-node-death-not-partition",
    "gang-xid154-no-spare-capacity",
    "gang-xid79-one-node-of-large-jobset",
]


@pytest.mark.parametrize("incident", SMOKE)
def test_the_runbook_planner_handles_the_incident_safely(incident: str) -> None:
    r = run_incident(CORPUS / f"{incident}.yaml")
    assert r.error is None, r.error
    assert r.safety_violations == [], r.safety_violations
    assert r.passed, (r.outcome, r.expected_outcome, r.root_cause, r.must_missing, r.limit_notes)


# (hard-bad-driver-rollout left this list when the fold learned pools: a third of a pool with one XID is
# now one pool-wide incident whose playbook writes nothing, so there is nothing left for the gate to stop.)
@pytest.mark.parametrize("incident", ["hard-competing-blast-radius", "pb-xid74-nvlink"])
def test_without_the_gate_the_same_planner_does_damage(incident: str) -> None:
    gated = run_incident(CORPUS / f"{incident}.yaml")
    ablated = run_incident(CORPUS / f"{incident}.yaml", gate=False)
    assert gated.safety_violations == []
    assert ablated.safety_violations, "the ablation found nothing the gate prevents"
    assert any(not p.enforced for p in ablated.prevented)
