"""The agent's past writes count what they touched when they ran, not what the world shows now: a drained
node has no tenant pods left, yet the customers its drain disrupted count toward the hourly limit."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sandbox.executor.executor import ExecutionResult
from supply_agent.hands.world import read_world
from supply_agent.models import Action, Approval, Decision, Verdict
from tests.support.agent_harness import APPROVER, Harness, harness


def _drain(h: Harness, node: str, step: int) -> tuple[Decision, ExecutionResult]:
    runtime = h.env.runtime
    action = Action(
        tool="k8s.drain_node", params={"node": node}, incident_id="inc-hist", step=step, proposed_by="human"
    )
    decision = runtime.decide(action, frozenset())
    approval = None
    if decision.verdict == Verdict.ASK:
        now = runtime.clock()
        approval = Approval(
            action_hash=action.digest(),
            approver=APPROVER,
            approved=True,
            decided_at=now,
            expires_at=now + timedelta(minutes=10),
        )
    return decision, runtime.execute(action, decision, approval)


def test_a_drains_customers_count_after_the_drain_emptied_the_node(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        node = next(
            n for n in h.nodes() if read_world(h.env.runtime.kube, h.env.runtime.clock()).nodes[n].customers()
        )
        before = read_world(h.env.runtime.kube, h.env.runtime.clock()).nodes[node].customers()
        decision, result = _drain(h, node, 1)
        assert decision.verdict != Verdict.DENY, decision.reasons
        assert result.outcome == "executed", result
        world = read_world(h.env.runtime.kube, h.env.runtime.clock())
        assert not world.nodes[node].customers()  # the world has no tenant of it left
        [drain] = [a for a in h.env.runtime.history(world).actions if a.tool == "k8s.drain_node"]
        assert drain.customers == before and drain.nodes == (node,)
        # The next drain's decision counts them: the customers disrupted in the last hour include them.
        other = next(n for n in h.nodes() if n != node and set(world.nodes[n].customers()) - set(before))
        decision = h.env.runtime.decide(
            Action(
                tool="k8s.drain_node",
                params={"node": other},
                incident_id="inc-hist",
                step=2,
                proposed_by="human",
            ),
            frozenset(),
        )
        expected = len(set(before) | set(world.nodes[other].customers()))
        assert "blast_radius.customers_disrupted_per_hour" in decision.limits_consulted
        if expected > 4:  # the corpus' soft limit: the reason names the count
            assert any(f"would be {expected}" in r for r in decision.reasons), decision.reasons
