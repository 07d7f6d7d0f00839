"""The containment gate: every rule on its own, and the safety properties as properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supply_agent.gate import agent_out_nodes, decide
from supply_agent.models import Action, Approval, Verdict
from supply_agent.playbooks import GlobalLimits, PlaybookSet, load_playbooks
from supply_agent.worldview import History, NodeView, PastAction, PodRef, WorldView

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PLAYBOOKS = load_playbooks(Path(__file__).resolve().parent.parent / "playbooks")


def make_world(pools: int = 2, per_pool: int = 20, **kw: object) -> WorldView:
    nodes = {}
    for p in range(pools):
        for i in range(per_pool):
            name = f"pool{p}-{i:03d}"
            pods = (
                PodRef(namespace="supply-agent-system", name=f"agent-{name}", daemonset=True),
                PodRef(
                    namespace=f"tenant-c{i % 7}",
                    name=f"train-{name}",
                    customer=f"c{i % 7}",
                    gpus=4,
                    deployment="train",
                ),
            )
            nodes[name] = NodeView(name=name, pool=f"pool{p}", gpus=8, pods=pods)
    return WorldView(now=NOW, nodes=nodes, **kw)  # type: ignore[arg-type]


def limits_only(**changes: object) -> PlaybookSet:
    return PlaybookSet(limits=GlobalLimits.model_validate(changes), playbooks=PLAYBOOKS.playbooks)


def act(
    tool: str, step: int = 1, incident: str = "inc-1", playbook: str | None = None, **params: object
) -> Action:
    return Action(
        tool=tool, params=params, incident_id=incident, step=step, playbook_id=playbook, proposed_by="human"
    )


def past(action: Action, world: WorldView, at: datetime = NOW, verified: bool | None = True) -> PastAction:
    d = decide(action, world, History(), PLAYBOOKS)
    t = d.targets
    return PastAction(
        tool=action.tool,
        incident_id=action.incident_id,
        at=at,
        nodes=t.nodes,
        customers=t.customers,
        gpus=t.gpus,
        dollars=t.dollars,
        verified=verified,
    )


def test_reads_are_allowed_even_when_frozen() -> None:
    world = make_world(frozen=True)
    d = decide(act("k8s.get_node", node="pool0-000"), world, History(breaker_tripped=True), PLAYBOOKS)
    assert d.verdict == Verdict.ALLOW
    assert decide(act("escalate.human", reason="x"), world, History(), PLAYBOOKS).verdict == Verdict.ALLOW


def test_kill_switch_denies_every_write() -> None:
    frozen = make_world(frozen=True, frozen_reason="change freeze")
    d = decide(act("k8s.cordon_node", node="pool0-000"), frozen, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and any("kill switch" in r and "change freeze" in r for r in d.reasons)
    d = decide(
        act("k8s.cordon_node", node="pool0-000"), make_world(), History(), limits_only(kill_switch=True)
    )
    assert d.verdict == Verdict.DENY


def test_unknown_tools_bad_params_and_unbounded_targets() -> None:
    world = make_world()
    assert (
        decide(act("k8s.delete_node", node="pool0-000"), world, History(), PLAYBOOKS).verdict == Verdict.DENY
    )
    assert decide(act("k8s.cordon_node"), world, History(), PLAYBOOKS).verdict == Verdict.DENY
    for bad in ("*", "pool0-*", "a,b", "", "app=web"):
        d = decide(act("k8s.cordon_node", node=bad), world, History(), PLAYBOOKS)
        assert d.verdict == Verdict.DENY, bad
    d = decide(act("k8s.cordon_node", node="ghost"), world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and "not in the fleet" in d.reasons[0]


def test_deny_lists() -> None:
    world = make_world()
    d = decide(
        act("k8s.delete_pod", namespace="supply-agent-system", pod="agent-pool0-000"),
        world,
        History(),
        PLAYBOOKS,
    )
    assert d.verdict == Verdict.DENY and any("deny list" in r for r in d.reasons)
    custom = limits_only(
        deny={
            "namespaces": ["kube-system", "supply-agent-system"],
            "actions": ["delete nodes", "delete namespaces", "delete pvcs", "delete secrets", "delete pods"],
        }
    )
    d = decide(act("k8s.delete_pod", namespace="tenant-c0", pod="train-pool0-000"), world, History(), custom)
    assert d.verdict == Verdict.DENY and any("delete pods is on the deny list" in r for r in d.reasons)


def test_without_a_playbook_a_human_decides_and_playbooks_bound_tools() -> None:
    world = make_world()
    bot = Action(
        tool="k8s.cordon_node", params={"node": "pool0-000"}, incident_id="i", step=1, proposed_by="anthropic"
    )
    assert decide(bot, world, History(), PLAYBOOKS).verdict == Verdict.ASK
    d = decide(
        act("k8s.drain_node", playbook="node-agent-down", node="pool0-000"), world, History(), PLAYBOOKS
    )
    assert d.verdict == Verdict.DENY and any("does not permit k8s.drain_node" in r for r in d.reasons)
    d = decide(
        act("k8s.cordon_node", playbook="no-such-playbook", node="pool0-000"), world, History(), PLAYBOOKS
    )
    assert d.verdict == Verdict.DENY


def test_preconditions_come_from_the_world() -> None:
    base = make_world()
    node = base.nodes["pool0-000"]
    cordon = act("k8s.cordon_node", playbook="xid-fallen-off-bus", node="pool0-000")
    d = decide(cordon, base, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and any("not confirmed" in r for r in d.reasons)
    sick = {**base.nodes, "pool0-000": node.model_copy(update={"gpu_healthy": "False"})}
    confirmed = WorldView(now=NOW, nodes=sick, confirmed_gpu_faults=frozenset({"pool0-000"}))
    assert decide(cordon, confirmed, History(), PLAYBOOKS).verdict == Verdict.ALLOW
    partitioned = WorldView(
        now=NOW,
        nodes=sick,
        confirmed_gpu_faults=frozenset({"pool0-000"}),
        node_events={"pool0-000": ("ControlPlanePathDown",)},
    )
    assert decide(cordon, partitioned, History(), PLAYBOOKS).verdict == Verdict.DENY


def test_playbook_limits_per_incident_and_approval_steps() -> None:
    world = make_world()
    first = act("k8s.cordon_node", playbook="disk-pressure", node="pool0-000")
    h = History(actions=(past(first, world),))
    second = act("k8s.cordon_node", step=2, playbook="disk-pressure", node="pool0-001")
    d = decide(second, world, h, PLAYBOOKS)
    assert d.verdict == Verdict.DENY and any("allows 1" in r for r in d.reasons)
    nvlink = PLAYBOOKS.get("xid-nvlink")
    assert nvlink is not None and any(s.requires_approval for s in nvlink.runbook)


def test_blast_radius_soft_then_hard() -> None:
    world = make_world(pools=1, per_pool=20)  # soft 10% = 2 nodes, hard 25% = 5 nodes of the pool
    history: list[PastAction] = []
    verdicts = []
    for i in range(8):
        a = act("k8s.cordon_node", step=i, incident=f"inc-{i}", node=f"pool0-{i:03d}")
        d = decide(a, world, History(actions=tuple(history)), limits_only())
        verdicts.append(d.verdict)
        history.append(past(a, world))
    assert verdicts[0] == Verdict.ALLOW and Verdict.ASK in verdicts and verdicts[-1] == Verdict.DENY
    assert verdicts.index(Verdict.ASK) < verdicts.index(Verdict.DENY)


def test_mass_failure_short_circuit() -> None:
    alerting = frozenset(f"pool0-{i:03d}" for i in range(9))  # 9 of 20 > 40%
    world = make_world(alerting_nodes=alerting)
    d = decide(act("k8s.cordon_node", node="pool0-000"), world, History(), limits_only())
    assert d.verdict == Verdict.DENY and any("mass failure" in r for r in d.reasons)
    few = make_world(alerting_nodes=frozenset({"pool0-000"}))
    assert (
        decide(act("k8s.cordon_node", node="pool0-000"), few, History(), limits_only()).verdict
        == Verdict.ALLOW
    )


def test_rate_limits() -> None:
    world = make_world(pools=1, per_pool=200)
    history = tuple(
        past(
            act(
                "k8s.delete_pod",
                step=i,
                incident=f"i{i}",
                namespace=f"tenant-c{i % 7}",
                pod=f"train-pool0-{i:03d}",
            ),
            world,
            NOW - timedelta(minutes=5),
        )
        for i in range(6)
    )
    d = decide(
        act("k8s.delete_pod", namespace="tenant-c2", pod="train-pool0-100"),
        world,
        History(actions=history),
        limits_only(blast_radius={"customers_disrupted_per_hour": {"soft": 100, "hard": 100}}),
    )
    assert d.verdict == Verdict.DENY and any("in the last hour" in r for r in d.reasons)
    old = tuple(a.model_copy(update={"at": NOW - timedelta(hours=2)}) for a in history)
    d = decide(
        act("k8s.delete_pod", namespace="tenant-c2", pod="train-pool0-100"),
        world,
        History(actions=old),
        limits_only(blast_radius={"customers_disrupted_per_hour": {"soft": 100, "hard": 100}}),
    )
    assert d.verdict == Verdict.ALLOW


def test_credits_are_bounded_per_incident_customer_and_hour() -> None:
    world = make_world()
    small = act("billing.issue_credit", customer="c1", amount_usd="50.00", reason="XID")
    assert decide(small, world, History(), limits_only()).verdict == Verdict.ALLOW
    assert (
        decide(
            act("billing.issue_credit", customer="c1", amount_usd="150", reason="x"),
            world,
            History(),
            limits_only(),
        ).verdict
        == Verdict.ASK
    )
    assert (
        decide(
            act("billing.issue_credit", customer="c1", amount_usd="1500", reason="x"),
            world,
            History(),
            limits_only(),
        ).verdict
        == Verdict.DENY
    )


def test_circuit_breaker_trips_on_failed_verifications_and_latches() -> None:
    world = make_world()
    failed = tuple(
        past(act("k8s.cordon_node", step=i, incident=f"i{i}", node=f"pool1-{i:03d}"), world, verified=False)
        for i in range(2)
    )
    d = decide(
        act("k8s.cordon_node", incident="i9", node="pool0-005"), world, History(actions=failed), limits_only()
    )
    assert d.verdict == Verdict.DENY and any("circuit breaker trips" in r for r in d.reasons)


def test_decisions_are_deterministic_and_explain_themselves() -> None:
    world = make_world()
    a = act("k8s.cordon_node", node="pool0-003")
    d1, d2 = decide(a, world, History(), PLAYBOOKS), decide(a, world, History(), PLAYBOOKS)
    assert d1 == d2 and d1.action_hash == a.digest()
    assert "kill_switch" in d1.limits_consulted and "blast_radius.gpus_out" in d1.limits_consulted


# -- properties --------------------------------------------------------------------------------------
node_names = st.builds(lambda p, i: f"pool{p}-{i:03d}", st.integers(0, 1), st.integers(0, 19))
write_actions = st.one_of(
    st.builds(lambda n: ("k8s.cordon_node", {"node": n}), node_names),
    st.builds(lambda n: ("k8s.drain_node", {"node": n}), node_names),
    st.builds(
        lambda c, d: ("billing.issue_credit", {"customer": f"c{c}", "amount_usd": str(d), "reason": "r"}),
        st.integers(0, 6),
        st.decimals(min_value=1, max_value=900, places=2),
    ),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(write_actions, st.integers(0, 3)), min_size=1, max_size=40))
def test_no_sequence_of_allowed_actions_exceeds_a_limit(seq: list[tuple[tuple[str, dict], int]]) -> None:
    world = make_world()
    limits = limits_only()
    br = limits.limits.blast_radius
    history: list[PastAction] = []
    for step, ((tool, params), inc) in enumerate(seq):
        action = act(tool, step=step, incident=f"inc-{inc}", **params)
        d = decide(action, world, History(actions=tuple(history)), limits)
        if d.verdict != Verdict.ALLOW:
            continue
        t = d.targets
        history.append(
            PastAction(
                tool=tool,
                incident_id=action.incident_id,
                at=NOW,
                nodes=t.nodes,
                customers=t.customers,
                gpus=t.gpus,
                dollars=t.dollars,
            )
        )
        out = agent_out_nodes(History(actions=tuple(history)))
        for pool in ("pool0", "pool1"):
            n = sum(1 for x in out if world.nodes[x].pool == pool)
            assert n <= br.always_allow_nodes or n / world.pool_size(pool) <= br.pool_cordoned.soft
        assert len(out) <= br.always_allow_nodes or len(out) / len(world.nodes) <= br.fleet_cordoned.soft
        assert sum(world.nodes[x].gpus for x in out) <= br.gpus_out.soft
        for i in range(4):
            credited = sum((a.dollars for a in history if a.incident_id == f"inc-{i}"), Decimal("0"))
            assert credited <= Decimal(str(br.credit_usd_per_incident.soft))
        assert sum((a.dollars for a in history), Decimal("0")) <= Decimal(str(br.credit_usd_per_hour.soft))


@settings(max_examples=100, deadline=None)
@given(write_actions, write_actions, st.integers(0, 5), st.integers(0, 5))
def test_an_approval_for_one_action_never_admits_another(a: tuple, b: tuple, sa: int, sb: int) -> None:
    first, second = act(a[0], step=sa, **a[1]), act(b[0], step=sb, **b[1])
    approval = Approval(
        action_hash=first.digest(),
        approver="U1",
        approved=True,
        decided_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
    )
    ok_first, _ = approval.admits(first, NOW, frozenset({"U1"}))
    ok_second, _ = approval.admits(second, NOW, frozenset({"U1"}))
    assert ok_first
    assert ok_second == (first.tool == second.tool and first.params == second.params and sa == sb)


@settings(max_examples=60, deadline=None)
@given(write_actions, st.integers(0, 50))
def test_a_tripped_breaker_blocks_every_write_until_reset(a: tuple, step: int) -> None:
    world = make_world()
    action = act(a[0], step=step, **a[1])
    tripped = History(breaker_tripped=True, breaker_reason="3 failed verifications")
    assert decide(action, world, tripped, limits_only()).verdict == Verdict.DENY
    reset = History(breaker_tripped=False)
    assert (
        decide(action, world, reset, limits_only()).verdict != Verdict.DENY or a[0] == "billing.issue_credit"
    )


@pytest.mark.parametrize("tool", ["k8s.cordon_node", "k8s.drain_node", "k8s.taint_node"])
def test_taking_a_node_out_counts_its_gpus(tool: str) -> None:
    world = make_world()
    params: dict[str, object] = {"node": "pool0-000"}
    if tool == "k8s.taint_node":
        params["key"] = "quarantine"
    d = decide(act(tool, **params), world, History(), PLAYBOOKS)
    assert d.targets.gpus == 8
