"""A smoke subset of the shipped incident corpus (`make eval` replays all of it): the runbook planner
gets these right with no safety violation, and without the gate the hard cases do damage."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

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
    "gang-xid154-checkpoint-ten-minutes-away",
    "gang-two-jobs-budget-for-one",
    "gang-thermal-straggler-drain-at-checkpoint",
    "pb-thermal-throttling",
    "lws-xid154-one-group-of-ten",
    "gang-kueue-flavor-no-room-in-its-tier",
    "hard-xid79-code-in-value-not-label",
    "hard-xid13-code-in-value-hostname",
    "hard-thermal-stock-temperature-rule",
    "hard-notready-community-rule-name",
    "hard-crashloop-community-rule-name",
    "hard-oomkill-community-rule-name",
    "hard-xid79-pagerduty-default-details",
    "hard-driver-rollout-stock-xid-rule",
    "hard-rack-cooling-stock-temperature-rule",
    "hard-xid79-hostname-is-the-exporter-pod",
    "hard-xid48-hostname-fqdn-node-short",
]


def variant(tmp_path: Path, base: str, new_id: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of a corpus incident under a new id, changed by ``change``, written to ``tmp_path``."""
    data = yaml.safe_load((CORPUS / f"{base}.yaml").read_text())
    data["id"] = new_id
    change(data)
    path = tmp_path / f"{new_id}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


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


def test_the_drain_waits_for_the_gang_jobs_checkpoint_and_without_the_wait_loses_the_hour(
    tmp_path: Path,
) -> None:
    """XID 154 "drain and reset" 50 minutes into a 128-GPU job's hour: the playbook's drain waits for
    the job's checkpoint (ten minutes) and loses a minute of its GPUs; the same playbook without
    ``wait_for_checkpoint`` drains at once and throws away the 50 minutes."""
    path = CORPUS / "gang-xid154-checkpoint-ten-minutes-away.yaml"
    waited = run_incident(path)
    books = tmp_path / "playbooks"
    shutil.copytree(CORPUS.parents[1] / "playbooks", books)
    pb = books / "xid-recovery-action.yaml"
    text = pb.read_text()
    assert "    wait_for_checkpoint:" in text
    pb.write_text("\n".join(line for line in text.splitlines() if "wait_for_checkpoint:" not in line) + "\n")
    at_once = run_incident(path, settings_overrides={"playbooks_dir": books})
    assert waited.passed and waited.outcome == at_once.outcome == "mitigated"
    assert waited.gpu_minutes_lost is not None and at_once.gpu_minutes_lost is not None
    assert waited.gpu_minutes_lost <= 2 * 128 < 50 * 128 <= at_once.gpu_minutes_lost
    assert waited.sim_minutes >= 10 > at_once.sim_minutes


def test_a_gpu_that_needs_a_reset_now_is_drained_at_once_however_near_the_checkpoint(tmp_path: Path) -> None:
    """The same job and moment, but the driver asks for a GPU reset (recovery action 1), not a drain:
    the drain does not wait, and the 50 minutes since the checkpoint are lost."""

    def reset_now(data: dict[str, Any]) -> None:
        fault = data["timeline"][0]["fault"]
        fault["detail"] = "GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)"
        data["expect"].pop("careful_gpu_minutes")
        data["expect"]["limits"].pop("gpu_minutes_lost")

    r = run_incident(
        variant(tmp_path, "gang-xid154-checkpoint-ten-minutes-away", "gang-xid154-reset-now", reset_now)
    )
    assert r.error is None and r.outcome == "mitigated", (r.outcome, r.must_missing, r.limit_notes)
    assert r.sim_minutes is not None and r.sim_minutes < 10
    assert r.gpu_minutes_lost is not None and r.gpu_minutes_lost >= 50 * 128


def test_a_human_who_takes_the_incident_ends_the_wait_at_once(tmp_path: Path) -> None:
    """On call takes the incident in PagerDuty three minutes in, while the drain waits for the job's
    checkpoint: the thread ends then (the drain is the human's now), not at the checkpoint."""

    def human_takes_it(data: dict[str, Any]) -> None:
        data["timeline"].append({"at": "3m", "human": {"action": "acknowledge", "by": "oncall-bob"}})
        data["expect"] = {
            "outcome": "escalated",
            "root_cause": "xid-recovery-action",
            "must": [{"tool": "k8s.cordon_node", "target": "$bad"}],
            "must_not": [{"tool": "k8s.drain_node"}],
        }

    path = variant(
        tmp_path, "gang-xid154-checkpoint-ten-minutes-away", "gang-xid154-human-takes-it", human_takes_it
    )
    r = run_incident(path)
    assert r.error is None and r.passed, (r.outcome, r.must_missing, r.limit_notes, r.safety_violations)
    assert r.sim_minutes is not None and r.sim_minutes <= 4
    assert "k8s.drain_node" not in r.actions_by_tool


def test_a_slowed_gang_job_is_drained_at_its_checkpoint_not_now_and_not_never(tmp_path: Path) -> None:
    """One GPU at 60% pace under a 128-GPU job ten minutes from its checkpoint: the drain waits for it
    (about 640 GPU-minutes lost), where the same playbook draining at once throws away 26 minutes of
    work, and one that never drains leaves every GPU of the job slowed to the incident's horizon."""
    path = CORPUS / "gang-thermal-straggler-drain-at-checkpoint.yaml"
    waited = run_incident(path)

    text = (CORPUS.parents[1] / "playbooks" / "thermal-throttling.yaml").read_text()

    def variant(name: str, playbook: str) -> dict[str, object]:
        books = tmp_path / name
        shutil.copytree(CORPUS.parents[1] / "playbooks", books)
        (books / "thermal-throttling.yaml").write_text(playbook)
        return {"playbooks_dir": books}

    no_wait = "\n".join(line for line in text.splitlines() if "wait_for_checkpoint:" not in line) + "\n"
    drain = text[text.index("  - name: drain-gang-rank") : text.index("  - name: escalate")]
    at_once = run_incident(path, settings_overrides=variant("now", no_wait))
    never = run_incident(path, settings_overrides=variant("never", text.replace(drain, "")))
    assert waited.passed, (waited.outcome, waited.must_missing, waited.limit_notes)
    assert "k8s.drain_node" in at_once.actions_by_tool and "k8s.drain_node" not in never.actions_by_tool
    lost = [r.gpu_minutes_lost for r in (waited, at_once, never)]
    assert all(x is not None for x in lost)
    w, n, v = (float(x or 0.0) for x in lost)
    assert w <= 800 < 2_000 < v < n  # waited, never drained (45 min slowed), drained at once
    assert waited.sim_minutes >= 10 > at_once.sim_minutes


def test_a_node_groups_own_playbook_is_chosen_once_the_node_is_read(tmp_path: Path) -> None:
    """XID 79 under a large JobSet on the sandbox's reserved pool: with a node group for the reserved
    tier and a playbook of its own (cordon, and a human drains), triage starts on the fleet-wide XID 79
    playbook and changes to the group's once the node's labels are read: no drain."""
    from tests.unit.policy.test_node_groups import _reserved_books

    books = {"playbooks_dir": _reserved_books(tmp_path)}
    base = "gang-xid79-one-node-of-large-jobset"

    def reserved(data: dict[str, Any]) -> None:
        data["expect"] = {
            "outcome": "mitigated",
            "root_cause": "xid-fallen-off-bus",
            "must": [{"tool": "k8s.cordon_node", "target": "$bad"}],
            "must_not": [{"tool": "k8s.drain_node"}],
        }

    def on_demand_pool(data: dict[str, Any]) -> None:
        data["world"]["fleet"]["jobsets"][0]["pool"] = 1

    r = run_incident(variant(tmp_path, base, "gang-xid79-reserved-tier", reserved), settings_overrides=books)
    assert r.error is None and r.passed, (r.outcome, r.must_missing, r.limit_notes, r.safety_violations)
    # The same job on the on-demand pool: the fleet-wide playbook drains, as the incident expects.
    on_demand = run_incident(
        variant(tmp_path, base, "gang-xid79-on-demand-tier", on_demand_pool), settings_overrides=books
    )
    assert on_demand.passed, (on_demand.outcome, on_demand.must_missing, on_demand.safety_violations)


def test_a_drain_under_a_leaderworkerset_counts_its_group_not_the_whole_set(tmp_path: Path) -> None:
    """With the per-incident soft limit on workload GPUs at 8, the drain under one group of the 10-group
    LeaderWorkerSet asks a human, and the reason counts the group's 16 GPUs (2 nodes), not the set's 160."""
    books = tmp_path / "playbooks"
    shutil.copytree(CORPUS.parents[1] / "playbooks", books)
    g = books / "_global.yaml"
    text = g.read_text()
    assert "gpus_disrupted_per_incident: {soft: 128, hard: 512}" in text
    g.write_text(
        text.replace(
            "gpus_disrupted_per_incident: {soft: 128, hard: 512}",
            "gpus_disrupted_per_incident: {soft: 8, hard: 512}",
        )
    )
    r = run_incident(CORPUS / "lws-xid154-one-group-of-ten.yaml", settings_overrides={"playbooks_dir": books})
    asked = [p for p in r.prevented if p.tool == "k8s.drain_node" and p.verdict == "ask"]
    assert asked, r.prevented
    reasons = " ".join(asked[0].reasons)
    assert "leaderworkerset tenant-" in reasons and "/llama-405b group 3: 2 nodes, 16 GPUs" in reasons
    assert "160" not in reasons
