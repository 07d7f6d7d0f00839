"""Budgets hold across replicas: replicas deciding at once against one PostgreSQL audit log, each with
its own executor (its own process's revision), never spend a budget twice. A decision records the audit
log's budget sequence; claiming it (the ``before`` row) is serialised in PostgreSQL, and a decision made
before another replica's write is refused as stale and made again on what that write spent."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sandbox.executor.audit import AuditLog
from sandbox.executor.executor import GuardedExecutor
from sandbox.fleet.world import FleetSpec
from supply_agent.hands.world import read_world
from supply_agent.models import Action, Verdict
from supply_agent.policy import GlobalLimits, PlaybookSet, load_playbooks
from supply_agent.policy.gate import decide, history_from_audit
from tests.support.pg_fixture import fresh_database
from tests.unit.sandbox.test_executor import kube_runners
from tools.kubernetes import KubeTools

# Hard limits only (no "ask" band): a quarter of the fleet's nodes out at most, whatever the pool.
PLAYBOOKS = PlaybookSet(
    limits=GlobalLimits.model_validate(
        {
            "blast_radius": {
                "fleet_cordoned": {"soft": 0.25, "hard": 0.25},
                "pool_cordoned": {"soft": 0.5, "hard": 0.5},
                "gpus_out": {"soft": 1000, "hard": 1000},
                "customers_disrupted_per_hour": {"soft": 100, "hard": 100},
            }
        }
    ),
    playbooks=load_playbooks(Path(__file__).resolve().parents[3] / "playbooks").playbooks,
)
NOW = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)


@pytest.fixture
def fleet_spec() -> FleetSpec:
    return FleetSpec(nodes=24, gpus_per_node=8, pools=2, seed=5)


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[KubeTools]:
    tools = KubeTools.from_kubeconfig(kubeconfig)
    yield tools
    tools.close()


def _cordon(node: str) -> Action:
    # Each its own incident: the fleet-wide budgets (nodes out, cordons per hour) are what is shared.
    return Action(
        tool="k8s.cordon_node",
        params={"node": node},
        incident_id=f"inc-{node}",
        step=1,
        playbook_id=None,
        proposed_by="human",
    )


def _replica(ex: GuardedExecutor, kube: KubeTools, node: str, outcomes: list[str]) -> None:
    """Decide and execute one cordon as a replica does: deciding again while its decision is stale."""
    for _ in range(20):
        seq = ex.audit.budget_seq()
        world = read_world(kube, NOW)
        action = _cordon(node)
        d = decide(action, world, history_from_audit(ex.audit.records(), world), PLAYBOOKS)
        if d.verdict != Verdict.ALLOW:
            outcomes.append(d.verdict.value)
            return
        time.sleep(0.05)  # between the gate's node and the execute node: where another replica writes
        res = ex.execute(action, d.model_copy(update={"world_revision": f"{ex.revision}@{seq}"}))
        if not res.stale:
            outcomes.append(res.outcome)
            return
    outcomes.append("gave up")


def test_replicas_racing_on_one_budget_spend_it_once(postgres_url: str, kube: KubeTools) -> None:
    url = fresh_database(postgres_url, "budget_race").replace("postgresql://", "postgresql+psycopg://")
    nodes = sorted(n.name for n in kube.list_nodes())
    # What the budget allows one write at a time, on a log of its own.
    alone = AuditLog.from_url(f"{url}")
    sequential: list[str] = []
    solo = GuardedExecutor(kube_runners(kube), alone, frozenset(), clock=lambda: NOW)
    for node in nodes:
        _replica(solo, kube, node, sequential)
    allowed = sequential.count("executed")
    assert 0 < allowed < len(nodes), sequential  # the budget binds: some cordons are not allowed
    for node in nodes:  # the fleet as it was, and the log emptied
        kube.uncordon_node(node)
    solo.close()
    alone.engine.dispose()

    url2 = fresh_database(postgres_url, "budget_race2").replace("postgresql://", "postgresql+psycopg://")
    executors = [
        GuardedExecutor(kube_runners(kube), AuditLog.from_url(url2), frozenset(), clock=lambda: NOW)
        for _ in nodes
    ]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(nodes))

    def run(i: int) -> None:
        barrier.wait()
        _replica(executors[i], kube, nodes[i], outcomes)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(outcomes) == len(nodes)
    assert outcomes.count("executed") == allowed, outcomes  # never more; and the budget is not lost either
    assert "gave up" not in outcomes
    audit = AuditLog.from_url(url2)
    executed = [r for r in audit.records() if r.phase == "after" and r.outcome == "executed"]
    assert len(executed) == allowed
    assert any("stale decision" in (r.error or "") for r in audit.records() if r.phase == "refused")
    for ex in executors:
        ex.close()
        ex.audit.engine.dispose()
    audit.engine.dispose()
