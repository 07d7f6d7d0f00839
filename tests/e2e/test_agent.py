"""End to end on the sandbox fleet: alerts in, the graph, the gate, the executor, the fleet's truth."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supply_agent.incidents.agent import RunResult
from tests.support.agent_harness import APPROVER, Harness, harness
from tools.catalogue import CONTROL_TOOLS, FRESH_METERS

ROOT = Path(__file__).resolve().parents[2]


def executed(result: RunResult) -> list[str]:
    return [s.action.tool for s in result.state.steps if s.outcome == "executed" and s.verified]


def only(results: list[RunResult]) -> RunResult:
    assert len(results) == 1, [r.state.alert.alertname for r in results]
    return results[0]


def node(h: Harness) -> str:
    return h.nodes()[0]


def pod_fault(kind: str) -> Callable[[Harness], Any]:
    def inject(h: Harness) -> Any:
        ns, pod, _ = h.tenant_pod()
        return h.inject(kind, namespace=ns, pod=pod)

    return inject


# (fault, playbook, outcome, writes that must execute and verify, writes that must not happen)
CLASSES: list[tuple[str, Callable[[Harness], Any], str, str, list[str], list[str]]] = [
    ("xid79", lambda h: h.inject("xid", node=node(h), gpu=1, code=79), "xid-fallen-off-bus", "mitigated",
     ["k8s.cordon_node", "notify.customer", "k8s.drain_node", "billing.issue_credit"], []),
    ("off-bus", lambda h: h.inject("off-bus", node=node(h), gpu=1), "xid-fallen-off-bus", "mitigated",
     ["k8s.cordon_node", "k8s.drain_node"], []),
    ("xid48", lambda h: h.inject("xid", node=node(h), gpu=1, code=48), "ecc-uncorrectable", "mitigated",
     ["k8s.cordon_node", "k8s.drain_node"], []),
    ("ecc", lambda h: h.inject("ecc", node=node(h), gpu=1), "ecc-uncorrectable", "mitigated",
     ["k8s.cordon_node", "k8s.drain_node"], []),
    ("xid63", lambda h: h.inject("xid", node=node(h), gpu=1, code=63), "xid-row-remap", "mitigated",
     ["k8s.cordon_node"], ["k8s.drain_node"]),
    ("xid64", lambda h: h.inject("xid", node=node(h), gpu=1, code=64), "xid-row-remap-failure", "mitigated",
     ["k8s.cordon_node", "k8s.drain_node"], []),
    ("xid74", lambda h: h.inject("xid", node=node(h), gpu=1, code=74), "xid-nvlink", "mitigated",
     ["k8s.cordon_node", "k8s.drain_node"], []),
    ("xid94", lambda h: h.inject("xid", node=node(h), gpu=1, code=94), "xid-ecc-contained", "mitigated",
     ["k8s.cordon_node"], ["k8s.drain_node"]),
    ("xid119", lambda h: h.inject("xid", node=node(h), gpu=1, code=119), "xid-gsp", "mitigated",
     ["k8s.cordon_node", "k8s.drain_node"], []),
    ("xid13", lambda h: h.inject("xid", node=node(h), gpu=1, code=13), "xid-application", "mitigated",
     ["notify.customer"], ["k8s.cordon_node", "k8s.drain_node"]),
    ("thermal", lambda h: h.inject("thermal", node=node(h), gpu=1), "thermal-throttling", "mitigated",
     ["k8s.taint_node"], ["k8s.cordon_node", "k8s.drain_node"]),
    ("notready", lambda h: h.inject("notready", node=node(h)), "node-notready", "mitigated",
     ["k8s.cordon_node"], ["k8s.drain_node"]),
    ("partition", lambda h: h.inject("partition", node=node(h)), "network-partition", "escalated",
     [], ["k8s.cordon_node", "k8s.drain_node"]),
    ("agent-down", lambda h: h.inject("agent-down", node=node(h)), "node-agent-down", "escalated",
     [], ["k8s.cordon_node", "k8s.drain_node"]),
    ("disk", lambda h: h.inject("disk-pressure", node=node(h)), "disk-pressure", "mitigated",
     ["k8s.cordon_node"], ["k8s.drain_node"]),
    # Told and credited, but the customer's pod still loops: not mitigated (the playbook's goal reads it back).
    ("crashloop", pod_fault("crashloop"), "tenant-crashloop", "escalated",
     ["notify.customer", "billing.issue_credit"], ["k8s.delete_pod", "k8s.rollout_restart"]),
    ("oomkill", pod_fault("oomkill"), "tenant-oomkilled", "escalated",
     ["notify.customer", "billing.issue_credit"], ["k8s.delete_pod", "k8s.rollout_restart"]),
    ("stuck", pod_fault("stuck-terminating"), "stuck-terminating", "mitigated", ["k8s.delete_pod"], []),
    ("double-metering", pod_fault("double-metering"), "double-metering", "mitigated",
     ["billing.pause_metering", "billing.issue_credit", "notify.customer"], ["billing.resume_metering"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "inject", "playbook", "outcome", "must", "must_not"), CLASSES, ids=[c[0] for c in CLASSES]
)
def test_each_playbook_class_end_to_end(
    tmp_path: Path,
    name: str,
    inject: Callable[[Harness], Any],
    playbook: str,
    outcome: str,
    must: list[str],
    must_not: list[str],
) -> None:
    with harness(tmp_path) as h:
        inject(h)
        result = only(h.handle("auto", advance_s=1800))
        state = result.state
        assert (state.playbook_id, state.outcome) == (playbook, outcome), state.escalation_reason
        if name in ("crashloop", "oomkill"):  # the reason says what is left in the world
            assert "symptom is still there" in (state.escalation_reason or ""), state.escalation_reason
        done = executed(result)
        assert set(must) <= set(done), done
        assert not set(must_not) & {s.action.tool for s in state.steps if s.outcome == "executed"}
        # Scored from the fleet and the audit log, not from the agent's claims.
        audit = [r for r in h.env.runtime.audit.records(state.incident_id) if r.phase == "after"]
        assert sorted(
            r.tool for r in audit if r.outcome == "executed" and r.tool not in CONTROL_TOOLS
        ) == sorted(s.action.tool for s in state.steps if s.outcome == "executed")
        # Meter ingestion is its own audited step before each billing read, never hidden inside the read.
        billing_reads = [e for e in state.evidence if e.tool in FRESH_METERS]
        ingests = [
            r for r in audit if r.tool == "billing.ingest_meters" and r.outcome in ("executed", "duplicate")
        ]
        assert bool(billing_reads) == bool(ingests), (len(billing_reads), len(ingests))
        truth = h.truth()
        cordoned = sum(p["nodes_cordoned"] for p in truth["pools"].values())
        assert cordoned == (1 if {"k8s.cordon_node", "k8s.drain_node"} & set(done) else 0)
        if "k8s.drain_node" in done:
            pods = h.env.runtime.kube.list_pods_on_node(node(h))
            assert [p.name for p in pods if not p.daemonset and p.phase == "Running"] == []
        assert state.summary is not None and state.summary["outcome"] == outcome
        stored = h.agent.store.get(state.incident_id)
        assert stored is not None and stored.status == "closed" and stored.outcome == outcome


def test_noise_with_no_fault_is_no_action(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        h.inject("xid", node=node(h), gpu=2, code=79)
        alerts = h.alerts()
        h.admin.clear()  # the fault is gone by the time the agent looks
        result = only(h.agent.handle(alerts, None))
        assert result.state.outcome == "no_action"
        assert result.state.steps == []
        assert h.truth()["writes"] == []


def test_bad_driver_rollout_is_one_pool_incident_and_escalated(tmp_path: Path) -> None:
    """A third of a pool with one fatal XID at once: the fold makes it the pool's incident (the nodes'
    labels say which pool), whose playbook writes nothing; one page naming the pool."""
    with harness(tmp_path) as h:
        pool = h.nodes(1)
        for name in pool[: len(pool) // 3]:
            h.inject("xid", node=name, gpu=0, code=79)
        result = only(h.handle("auto"))
        state = result.state
        assert state.outcome == "escalated" and state.root_cause == "mass-failure"
        assert state.playbook_id == "pool-wide" and state.component is not None
        assert state.component.kind == "pool" and state.component.nodes == pool[: len(pool) // 3]
        assert "Mass failure in pool" in (state.escalation_reason or "")
        assert [s for s in state.steps if s.outcome == "executed"] == []
        assert h.truth()["writes"] == []


def test_the_mass_failure_limit_still_stops_a_cordon_the_fold_did_not_catch(tmp_path: Path) -> None:
    """Two nodes with a fatal XID (too few to be a component) while the monitor is down on two more of
    the pool: the XID incident's first cordon meets the gate's mass-failure limit (4 of 12 alerting)."""
    with harness(tmp_path) as h:
        pool = h.nodes(1)
        for name in pool[:2]:
            h.inject("xid", node=name, gpu=0, code=79)
        for name in pool[5:7]:
            h.inject("agent-down", node=name)
        results = h.handle("auto")
        xid = next(r for r in results if r.state.playbook_id == "xid-fallen-off-bus")
        state = xid.state
        assert state.outcome == "escalated" and state.root_cause == "mass-failure"
        assert "mass failure" in (state.escalation_reason or "")
        assert [s.outcome for s in state.steps if s.decision is not None] == ["denied"]
        assert h.truth()["writes"] == []


def test_rejected_approval_is_respected(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        h.inject("xid", node=node(h), gpu=1, code=79)
        result = only(h.handle("never", advance_s=1800))
        last = result.state.steps[-1]
        assert (last.action.tool, last.outcome) == ("billing.issue_credit", "rejected")
        assert result.state.outcome == "escalated" and "rejected by" in (result.state.escalation_reason or "")
        assert h.env.runtime.ledger.credits_for_incident(result.incident_id).credits == []


def test_expired_approval_escalates(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        h.inject("xid", node=node(h), gpu=1, code=79)
        paused = only(h.handle(None, advance_s=1800))
        assert paused.status == "paused" and paused.pending is not None
        assert paused.pending.tool == "billing.issue_credit"
        done = h.answer(paused, approved=True, late_s=16 * 60)  # the TTL is 15 minutes
        assert done.state.steps[-1].outcome == "expired"
        assert done.state.outcome == "escalated" and "expired" in (done.state.escalation_reason or "")
        assert h.env.runtime.ledger.credits_for_incident(done.incident_id).credits == []


def test_only_an_approver_can_approve_and_a_paused_thread_survives_a_new_agent(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        h.inject("xid", node=node(h), gpu=1, code=79)
        paused = only(h.handle(None, advance_s=1800))
        still = h.answer(paused, approved=True, who="mallory")
        assert still.status == "paused" and still.pending is not None
        assert any("not an approver" in e.text for e in h.agent.store.timeline(paused.incident_id))
        assert h.env.runtime.ledger.credits_for_incident(paused.incident_id).credits == []
        # A new agent (new process, same store and checkpoints) answers the same request.
        from supply_agent.incidents.agent import checkpoint_url
        from supply_agent.incidents.checkpoint import open_checkpointer
        from supply_agent.mind.planners.runbook import RunbookPlanner

        with open_checkpointer(checkpoint_url(h.settings)) as cp:
            from supply_agent.incidents.agent import Agent, ApprovalAnswer

            fresh = Agent(h.env.runtime, h.agent.store, RunbookPlanner(), cp)
            pending = fresh.pending(paused.incident_id)
            assert pending is not None and pending.action_hash == paused.pending.action_hash
            done = fresh.run(
                paused.incident_id,
                resume=ApprovalAnswer(approved=True, approver=APPROVER, decided_at=h.env.runtime.clock()),
            )
        assert done.state.outcome == "mitigated"
        credits = h.env.runtime.ledger.credits_for_incident(paused.incident_id).credits
        assert len(credits) == 1 and credits[0].customer == done.state.alert.labels["customer"]


def test_duplicate_delivery_opens_no_second_incident(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        h.inject("xid", node=node(h), gpu=1, code=79)
        alerts = h.alerts()
        first = h.agent.handle(alerts, None)
        again = h.agent.handle(alerts, None)
        assert len(first) == 1 and again == []


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from supply_agent.incidents.agent import open_agent
    from supply_agent.models.incident import parse_alerts, read_alert_file
    from supply_agent.mind.planners.runbook import RunbookPlanner
    from supply_agent.settings import Settings
    from supply_agent.service.terminal import TerminalApprover

    tmp, resume = Path(sys.argv[1]), sys.argv[2] == "resume"
    settings = Settings(data_dir=tmp / "var", approvers=["oncall-alice"], verify_cap_s=5.0)
    with open_agent(settings, tmp / "kubeconfig", planner=RunbookPlanner()) as (agent, env):
        approver = TerminalApprover("auto", "oncall-alice", env.runtime.clock)
        if resume:
            iid = agent.store.incidents()[0].id
            assert agent.unfinished(iid), "the thread should have stopped mid-way"
            result = agent.run(iid)
            while result.pending is not None:
                result = agent.run(iid, resume=approver.answer(result.pending))
            print("OUTCOME", result.state.outcome)
        else:
            import os
            import signal

            def die_after_first_action(node, update):
                if node == "execute":
                    os.kill(os.getpid(), signal.SIGKILL)  # right after the action was checkpointed

            if sys.argv[2] == "start-writes":
                # Killed between a step's writes and its checkpoint: triage's writes are saved, the
                # checkpoint that would start investigate is not (a kill from another thread, a power cut).
                saver = agent.graph.checkpointer
                put_writes = saver.put_writes

                def die_after_triage_writes(config, writes, task_id, task_path=""):
                    put_writes(config, writes, task_id, task_path)
                    if any(channel == "branch:to:investigate" for channel, _ in writes):
                        os.kill(os.getpid(), signal.SIGKILL)

                saver.put_writes = die_after_triage_writes
            else:
                agent.on_update = die_after_first_action
            alerts = parse_alerts(read_alert_file(tmp / "alerts.json"))[0]
            agent.handle(alerts, approver)
            print("NOT KILLED")
    """
)


def _crash_setup(h: Any, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """An XID 79 page written for CRASH_SCRIPT, and the command and environment that run it."""
    h.inject("xid", node=node(h), gpu=1, code=79)
    h.admin.advance(1800)
    (tmp_path / "alerts.json").write_text(json.dumps(h.admin.alerts("alertmanager")[0]))
    (tmp_path / "kubeconfig").write_text(h.kubeconfig.read_text())
    env = {**os.environ, "SUPPLY_AGENT_LOG_LEVEL": "warning"}
    return [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path)], env


def test_sigkill_between_a_steps_writes_and_its_checkpoint_is_continued(tmp_path: Path) -> None:
    """LangGraph saves a task's writes as it finishes and the step's checkpoint after: a kill between
    the two leaves a thread whose live state lists no next task (the task is done) and no interrupt.
    It has not ended: it is continued, never taken for finished (which left the page silent)."""
    with harness(tmp_path / "h") as h:
        cmd, env = _crash_setup(h, tmp_path)
        killed = subprocess.run(
            [*cmd, "start-writes"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        assert h.truth()["writes"] == [] or all(w["dry_run"] for w in h.truth()["writes"])  # nothing done yet
        resumed = subprocess.run(
            [*cmd, "resume"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "OUTCOME mitigated" in resumed.stdout


def test_sigkill_after_an_action_resumes_without_repeating_it(tmp_path: Path) -> None:
    with harness(tmp_path / "h") as h:
        cmd, env = _crash_setup(h, tmp_path)
        killed = subprocess.run(
            [*cmd, "start"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert killed.returncode == -signal.SIGKILL, (
            killed.stdout + killed.stderr
        )  # died right after the first cordon
        assert "NOT KILLED" not in killed.stdout

        def node_patches() -> list[dict[str, Any]]:
            return [
                w
                for w in h.truth()["writes"]
                if (w["verb"], w["resource"], w["dry_run"]) == ("patch", "nodes", False)
            ]

        assert len(node_patches()) == 1  # the cordon ran, then the process died
        resumed = subprocess.run(
            [*cmd, "resume"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "OUTCOME mitigated" in resumed.stdout
        assert len(node_patches()) == 1  # not repeated on resume (the drain found the node cordoned)
        evictions = [w for w in h.truth()["writes"] if w["subresource"] == "eviction" and not w["dry_run"]]
        assert len(evictions) == len({w["name"] for w in evictions}) > 0
        from sandbox.executor.audit import AuditLog

        audit = AuditLog.from_url(f"sqlite:///{tmp_path / 'var' / 'supply-agent.db'}")
        executed_rows = [r for r in audit.records() if r.phase == "after" and r.outcome == "executed"]
        tools = [r.tool for r in executed_rows]
        assert tools.count("k8s.cordon_node") == 1 and tools.count("k8s.drain_node") == 1
