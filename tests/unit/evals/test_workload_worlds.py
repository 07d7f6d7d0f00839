"""Incident files name gang jobs: ``world.fleet.jobsets`` sizes the JobSets the fleet starts with (pool,
nodes, checkpoint cadence, time since the checkpoint), ``jobset_node`` binds the node one of their pods
runs on, and the score counts the GPU-minutes of customer work the fleet's JobSets lost (its truth)
against what a careful human would have lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from evals.scoring import gpu_minutes_lost
from evals.world import ReplayError, build_fleet, resolve
from sandbox.fleet.world.jobsets import JOB_INDEX, JOBSET_NAME, LAST_CHECKPOINT
from tests.unit.evals.test_topology_bindings import error_of, incident, load

GANG = {
    "name": "llm",
    "nodes": 6,
    "pool": 1,
    "customer": 2,
    "checkpoint_every": "1h",
    "since_checkpoint": "50m",
}


def test_a_jobset_world_is_made_and_its_nodes_bound_by_job_index(tmp_path: Path) -> None:
    inc, path = load(
        tmp_path, incident({"n": {"jobset_node": {"jobset": "llm", "index": 4}}}, jobsets=[GANG])
    )
    fleet = build_fleet(inc, path)
    [js] = fleet.store.items("jobsets")
    assert js["metadata"]["name"] == "llm"
    # 50 minutes before the fleet's start, it checkpointed (and resumed from it).
    assert js["metadata"]["annotations"][LAST_CHECKPOINT] == "2025-12-31T23:10:00Z"
    pods = fleet.jobset_pods(js["metadata"]["namespace"], "llm")
    assert len(pods) == 6 and {p["status"]["phase"] for p in pods} == {"Running"}
    pools = {fleet.node(p["spec"]["nodeName"])["metadata"]["labels"]["supply-agent.io/pool"] for p in pods}
    assert pools == {"west-a100"}  # the second pool
    names = resolve(inc, fleet)
    [pod] = [p for p in pods if p["metadata"]["labels"][JOB_INDEX] == "4"]
    assert names["n"] == pod["spec"]["nodeName"] and pod["metadata"]["labels"][JOBSET_NAME] == "llm"
    [w] = fleet.truth()["workloads"]
    assert (w["gpus"], w["customer"], w["gpu_minutes_lost"]) == (
        48,
        js["metadata"]["labels"]["supply-agent.io/customer"],
        0.0,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"since_checkpoint": "1h"},
            "since_checkpoint (1:00:00) is not less than checkpoint_every (1:00:00)",
        ),
        ({"name": "Bad_Name"}, "world.fleet.jobsets.0.name"),
        ({"checkpoint_every": "often"}, "'often' is not a duration"),
    ],
)
def test_a_bad_jobset_world_says_what_is_wrong(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    assert message in error_of(tmp_path, incident({}, jobsets=[{**GANG, **change}]))


def test_jobsets_named_twice_are_refused(tmp_path: Path) -> None:
    assert "jobsets: names repeat (llm, llm)" in error_of(tmp_path, incident({}, jobsets=[GANG, GANG]))


def test_a_jobset_binding_that_finds_nothing_and_a_jobset_with_no_room_are_replay_errors(
    tmp_path: Path,
) -> None:
    inc, path = load(
        tmp_path, incident({"n": {"jobset_node": {"jobset": "other", "index": 0}}}, jobsets=[GANG])
    )
    with pytest.raises(ReplayError, match=r"world.bind.n: JobSet 'other' has no running pod of job index 0"):
        resolve(inc, build_fleet(inc, path))
    inc, path = load(tmp_path, incident({}, jobsets=[{**GANG, "nodes": 40}]))
    with pytest.raises(
        ReplayError, match=r"world.fleet.workloads: llm: pool west-a100 has 24 free node\(s\), not 40"
    ):
        build_fleet(inc, path)


def test_gpu_minutes_lost_adds_every_jobsets_loss_and_is_none_without_jobsets() -> None:
    assert gpu_minutes_lost({"workloads": []}) is None
    assert gpu_minutes_lost({}) is None
    truth = {"workloads": [{"gpu_minutes_lost": 6400.0}, {"gpu_minutes_lost": 12.25}]}
    assert gpu_minutes_lost(truth) == 6412.2


def test_a_gang_incident_is_scored_on_the_work_lost_and_the_report_shows_it(tmp_path: Path) -> None:
    from evals.report import render_markdown
    from evals.results import summarise
    from evals.runner import run_incident

    corpus = Path(__file__).resolve().parents[3] / "evals" / "incidents"
    # The drain would leave the job's pod nowhere to go: the gate asks, the human says no, nothing is lost.
    kept = run_incident(corpus / "gang-xid154-no-spare-capacity.yaml")
    assert kept.error is None and kept.passed, kept.limit_notes
    assert (kept.gpu_minutes_lost, kept.careful_gpu_minutes) == (0.0, 0.0)
    # The same incident with the human saying yes: the JobSet's 64 GPUs wait Pending from the drain on.
    data = yaml.safe_load((corpus / "gang-xid154-no-spare-capacity.yaml").read_text())
    data["id"] = "gang-approved"
    data["approvals"] = [{"tool": "k8s.drain_node", "answer": "approve", "after": "2m"}]
    path = tmp_path / "gang-approved.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    drained = run_incident(path)
    assert drained.error is None and not drained.passed
    assert drained.gpu_minutes_lost is not None and drained.gpu_minutes_lost >= 64  # a minute or more
    assert any(
        "GPU-minutes of customer work lost, limit 0 (a careful human: 0)" in n for n in drained.limit_notes
    )
    md = render_markdown([kept, drained], summarise([kept, drained], 1.0, 1))
    assert "## Customer work lost (gang jobs)" in md
    assert "| gang-xid154-no-spare-capacity | runbook | 0 | 0 | ✔ |" in md
    assert f"| gang-approved | runbook | 0 | {drained.gpu_minutes_lost:,.0f} | ✘ |" in md
    # --node-only: the same incident with the workload rules off drains (nobody asked) and loses work;
    # the report puts its loss beside the rules' and the summary counts it apart.
    bare = run_incident(corpus / "gang-xid154-no-spare-capacity.yaml", node_only=True)
    assert bare.error is None and bare.node_only and not bare.passed
    assert bare.gpu_minutes_lost is not None and bare.gpu_minutes_lost >= 64
    summary = summarise([kept, bare], 1.0, 1)
    assert set(summary.by_planner) == {"runbook", "runbook --node-only"}
    assert (
        summary.by_planner["runbook"]["passed"] == 1
        and summary.by_planner["runbook --node-only"]["passed"] == 0
    )
    md = render_markdown([kept, bare], summary)
    assert f"| gang-xid154-no-spare-capacity | runbook | 0 | {bare.gpu_minutes_lost:,.0f} | 0 | ✔ |" in md
    # Per class: the median and the worst of each column (two xid-recovery-action incidents here).
    md = render_markdown([kept, drained, bare], summarise([kept, drained, bare], 1.0, 1))
    worst = f"{max(drained.gpu_minutes_lost, 0.0):,.0f}"
    assert (
        f"| xid-recovery-action | 2 | median 0, worst 0 | median {bare.gpu_minutes_lost:,.0f}, "
        f"worst {bare.gpu_minutes_lost:,.0f} | median {worst}, worst {worst} |"
    ) in md
