"""The containment gate: every rule on its own, and the safety properties as properties.

Every test here pins both sides of a rule: something the gate must deny (or ask about) and, next to it,
the nearest thing it must allow, so that neither a gate that denies everything nor one that allows
everything passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from supply_agent.models import Action, Approval, Decision, Verdict
from supply_agent.policy import GlobalLimits, PlaybookSet, load_playbooks
from supply_agent.policy.gate import agent_out_nodes, decide
from supply_agent.policy.world import History, NodeView, PastAction, PodRef, WorldView

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PLAYBOOKS = load_playbooks(Path(__file__).resolve().parents[3] / "playbooks")
WITHIN = ("within every limit consulted",)  # the reasons of a decision nothing objected to
NODE_OUT = ("k8s.cordon_node", "k8s.drain_node", "k8s.taint_node")
_STRICTNESS = {Verdict.ALLOW: 0, Verdict.ASK: 1, Verdict.DENY: 2}


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


def says(d: Decision, verdict: Verdict, *fragments: str) -> bool:
    """Whether one of the decision's reasons is a ``verdict`` reason containing every fragment."""
    return any(r.startswith(f"{verdict.value}: ") and all(f in r for f in fragments) for r in d.reasons)


def test_reads_are_allowed_even_when_frozen() -> None:
    world = make_world(frozen=True)
    d = decide(act("k8s.get_node", node="pool0-000"), world, History(breaker_tripped=True), PLAYBOOKS)
    assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN
    assert decide(act("escalate.human", reason="x"), world, History(), PLAYBOOKS).verdict == Verdict.ALLOW
    # ... while a write to the same node, in the same world, is not.
    d = decide(act("k8s.cordon_node", node="pool0-000"), world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "kill switch")


def test_kill_switch_denies_every_write() -> None:
    cordon = act("k8s.cordon_node", node="pool0-000")
    # The control: unfrozen, the very same write is within every limit.
    d = decide(cordon, make_world(), History(), PLAYBOOKS)
    assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN
    frozen = make_world(frozen=True, frozen_reason="change freeze")
    d = decide(cordon, frozen, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "kill switch", "change freeze")
    d = decide(cordon, make_world(), History(), limits_only(kill_switch=True))
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "kill switch")
    assert "kill_switch" in d.limits_consulted


def test_unknown_tools_bad_params_and_unbounded_targets() -> None:
    world = make_world()
    d = decide(act("k8s.cordon_node", node="pool0-000"), world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.ALLOW and d.targets.nodes == ("pool0-000",)
    d = decide(act("k8s.delete_node", node="pool0-000"), world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "unknown tool", "k8s.delete_node")
    d = decide(act("k8s.cordon_node"), world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "node")
    for bad in ("*", "pool0-*", "a,b", "", "app=web"):
        d = decide(act("k8s.cordon_node", node=bad), world, History(), PLAYBOOKS)
        assert d.verdict == Verdict.DENY, bad
        assert d.reasons and all(r.startswith("deny: ") for r in d.reasons), (bad, d.reasons)
        assert d.targets.nodes == () and d.targets.gpus == 0, bad
    d = decide(act("k8s.cordon_node", node="ghost"), world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and "not in the fleet" in d.reasons[0]


def test_deny_lists() -> None:
    world = make_world()
    tenant_pod = act("k8s.delete_pod", namespace="tenant-c0", pod="train-pool0-000")
    # The control: deleting a tenant's pod is not on the shipped deny list.
    d = decide(tenant_pod, world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN
    d = decide(
        act("k8s.delete_pod", namespace="supply-agent-system", pod="agent-pool0-000"),
        world,
        History(),
        PLAYBOOKS,
    )
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "supply-agent-system", "deny list")
    custom = limits_only(
        deny={
            "namespaces": ["kube-system", "supply-agent-system"],
            "actions": ["delete nodes", "delete namespaces", "delete pvcs", "delete secrets", "delete pods"],
        }
    )
    d = decide(tenant_pod, world, History(), custom)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "delete pods is on the deny list")


def test_a_drain_never_evicts_pods_in_a_denied_namespace() -> None:
    world = make_world()
    node = world.nodes["pool0-000"]
    coredns = PodRef(namespace="kube-system", name="coredns-1", deployment="coredns")
    nodes = {**world.nodes, node.name: node.model_copy(update={"pods": (*node.pods, coredns)})}
    d = decide(act("k8s.drain_node", node="pool0-000"), WorldView(now=NOW, nodes=nodes), History(), PLAYBOOKS)
    assert "kube-system/coredns-1" in d.targets.pods
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "kube-system", "deny list")


def test_without_a_playbook_a_human_decides_and_playbooks_bound_tools() -> None:
    world = make_world()
    bot = Action(
        tool="k8s.cordon_node", params={"node": "pool0-000"}, incident_id="i", step=1, proposed_by="anthropic"
    )
    d = decide(bot, world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.ASK and says(d, Verdict.ASK, "no playbook")
    # The same cordon proposed by a human is within every limit: only the missing playbook asked.
    assert decide(act("k8s.cordon_node", node="pool0-000"), world, History(), PLAYBOOKS).reasons == WITHIN
    d = decide(
        act("k8s.drain_node", playbook="node-agent-down", node="pool0-000"), world, History(), PLAYBOOKS
    )
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "does not permit k8s.drain_node")
    d = decide(
        act("k8s.cordon_node", playbook="no-such-playbook", node="pool0-000"), world, History(), PLAYBOOKS
    )
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "unknown playbook", "no-such-playbook")


def test_preconditions_come_from_the_world() -> None:
    base = make_world()
    node = base.nodes["pool0-000"]
    cordon = act("k8s.cordon_node", playbook="xid-fallen-off-bus", node="pool0-000")
    d = decide(cordon, base, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "precondition", "not confirmed")
    sick = {**base.nodes, "pool0-000": node.model_copy(update={"gpu_healthy": "False"})}
    confirmed = WorldView(now=NOW, nodes=sick, confirmed_gpu_faults=frozenset({"pool0-000"}))
    d = decide(cordon, confirmed, History(), PLAYBOOKS)
    assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN
    partitioned = WorldView(
        now=NOW,
        nodes=sick,
        confirmed_gpu_faults=frozenset({"pool0-000"}),
        node_events={"pool0-000": ("ControlPlanePathDown",)},
    )
    d = decide(cordon, partitioned, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "precondition", "ControlPlanePathDown")


def test_a_thermal_taint_needs_the_node_agent_to_see_the_throttling() -> None:
    """A heat alert alone never takes a node's GPUs out: the node-agent's NVML clock-event reasons must
    say thermal slowdown (a second source)."""
    base = make_world()
    taint = act(
        "k8s.taint_node",
        playbook="thermal-throttling",
        node="pool0-000",
        key="gpu-thermal",
        value="throttling",
        effect="PreferNoSchedule",
    )
    d = decide(taint, base, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "no GPU throttled")
    cool = base.model_copy(update={"throttle_reasons": {"pool0-000": frozenset({"GpuIdle"})}})
    assert says(decide(taint, cool, History(), PLAYBOOKS), Verdict.DENY, "reasons now: GpuIdle")
    hot = base.model_copy(update={"throttle_reasons": {"pool0-000": frozenset({"HwThermalSlowdown"})}})
    d = decide(taint, hot, History(), PLAYBOOKS)
    assert not any("throttled" in r for r in d.reasons), d.reasons


def test_playbook_limits_per_incident_and_approval_steps() -> None:
    base = make_world()
    pressured = {
        n: v.model_copy(update={"conditions": {"DiskPressure": "True"}}) for n, v in base.nodes.items()
    }
    world = WorldView(now=NOW, nodes=pressured)
    first = act("k8s.cordon_node", playbook="disk-pressure", node="pool0-000")
    d = decide(first, world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN
    h = History(actions=(past(first, world),))
    second = act("k8s.cordon_node", step=2, playbook="disk-pressure", node="pool0-001")
    d = decide(second, world, h, PLAYBOOKS)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "disk-pressure allows 1")
    # max_nodes is per incident: the same cordon for another incident is the playbook's first node.
    other = act("k8s.cordon_node", incident="inc-2", playbook="disk-pressure", node="pool0-001")
    assert not any("allows 1" in r for r in decide(other, world, h, PLAYBOOKS).reasons)
    # A runbook step that requires approval makes the gate ask, even when every limit holds.
    nvlink = PLAYBOOKS.get("xid-nvlink")
    assert nvlink is not None and any(s.requires_approval for s in nvlink.runbook)
    sick = {
        **base.nodes,
        "pool0-000": base.nodes["pool0-000"].model_copy(update={"gpu_healthy": "False"}),
    }
    faulty = WorldView(now=NOW, nodes=sick, confirmed_gpu_faults=frozenset({"pool0-000"}))
    d = decide(act("k8s.drain_node", playbook="xid-nvlink", node="pool0-000"), faulty, History(), PLAYBOOKS)
    assert d.verdict == Verdict.ASK and says(d, Verdict.ASK, "xid-nvlink", "approve")
    d = decide(act("k8s.cordon_node", playbook="xid-nvlink", node="pool0-000"), faulty, History(), PLAYBOOKS)
    assert d.verdict == Verdict.ALLOW


def test_blast_radius_soft_then_hard() -> None:
    world = make_world(pools=1, per_pool=20)  # soft 10% = 2 nodes, hard 25% = 5 nodes of the pool
    history: list[PastAction] = []
    decisions = []
    for i in range(8):
        a = act("k8s.cordon_node", step=i, incident=f"inc-{i}", node=f"pool0-{i:03d}")
        d = decide(a, world, History(actions=tuple(history)), limits_only())
        decisions.append(d)
        history.append(past(a, world))
    verdicts = [d.verdict for d in decisions]
    assert verdicts[0] == Verdict.ALLOW and Verdict.ASK in verdicts and verdicts[-1] == Verdict.DENY
    assert verdicts.index(Verdict.ASK) < verdicts.index(Verdict.DENY)
    assert says(decisions[verdicts.index(Verdict.ASK)], Verdict.ASK, "blast_radius.")
    assert says(decisions[-1], Verdict.DENY, "blast_radius.pool_cordoned")


def test_mass_failure_short_circuit() -> None:
    alerting = frozenset(f"pool0-{i:03d}" for i in range(9))  # 9 of 20 > 40%
    world = make_world(alerting_nodes=alerting)
    d = decide(act("k8s.cordon_node", node="pool0-000"), world, History(), limits_only())
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "mass failure", "pool0")
    few = make_world(alerting_nodes=frozenset({"pool0-000"}))
    d = decide(act("k8s.cordon_node", node="pool0-000"), few, History(), limits_only())
    assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN


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
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "k8s.delete_pod", "in the last hour")
    old = tuple(a.model_copy(update={"at": NOW - timedelta(hours=2)}) for a in history)
    d = decide(
        act("k8s.delete_pod", namespace="tenant-c2", pod="train-pool0-100"),
        world,
        History(actions=old),
        limits_only(blast_radius={"customers_disrupted_per_hour": {"soft": 100, "hard": 100}}),
    )
    assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN


def test_credits_are_bounded_per_incident_customer_and_hour() -> None:
    world = make_world()
    limits = limits_only()

    def credit(amount: str, customer: str = "c1", incident: str = "inc-1") -> Action:
        return act(
            "billing.issue_credit", incident=incident, customer=customer, amount_usd=amount, reason="x"
        )

    d = decide(credit("50.00"), world, History(), limits)
    assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN and d.targets.dollars == Decimal("50.00")
    d = decide(credit("150"), world, History(), limits)
    assert d.verdict == Verdict.ASK and says(d, Verdict.ASK, "blast_radius.credit_usd_per_incident")
    d = decide(credit("1500"), world, History(), limits)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "blast_radius.credit_usd_per_incident")
    # Per customer per day: five earlier incidents credited c1 $100 each; a sixth $100 is over $500.
    day = tuple(
        past(credit("100", incident=f"old-{i}"), world, NOW - timedelta(hours=3 + i)) for i in range(5)
    )
    d = decide(credit("100"), world, History(actions=day), limits)
    assert d.verdict == Verdict.ASK and says(d, Verdict.ASK, "blast_radius.credit_usd_per_customer_per_day")
    d = decide(credit("100", customer="c2"), world, History(actions=day), limits)
    assert d.verdict == Verdict.ALLOW
    # Per hour, whoever the customer: nine incidents credited $110 each in the last hour.
    hour = tuple(
        past(credit("110", customer=f"c{i % 7}", incident=f"h-{i}"), world, NOW - timedelta(minutes=30))
        for i in range(9)
    )
    d = decide(credit("10", customer="c9"), world, History(actions=hour), limits)
    assert d.verdict == Verdict.ALLOW  # $1000 in the hour: at the soft limit
    d = decide(credit("10.01", customer="c9"), world, History(actions=hour), limits)
    assert d.verdict == Verdict.ASK and says(d, Verdict.ASK, "blast_radius.credit_usd_per_hour")
    assert not any("credit_usd_per_incident" in r or "per_customer" in r for r in d.reasons)


def test_circuit_breaker_trips_on_failed_verifications_and_latches() -> None:
    world = make_world()
    failed = tuple(
        past(act("k8s.cordon_node", step=i, incident=f"i{i}", node=f"pool1-{i:03d}"), world, verified=False)
        for i in range(2)
    )
    handed_back = ("pool1-000", "pool1-001")  # so that only the failures count, not the nodes out
    cordon = act("k8s.cordon_node", incident="i9", node="pool0-005")
    one = decide(cordon, world, History(actions=failed[:1], uncordoned=handed_back), limits_only())
    assert one.verdict == Verdict.ALLOW and not one.trips_breaker
    d = decide(cordon, world, History(actions=failed, uncordoned=handed_back), limits_only())
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "circuit breaker trips", "2 failed")
    assert d.trips_breaker  # the caller latches it
    latched = History(breaker_tripped=True, breaker_reason="2 failed verifications")
    d = decide(cordon, world, latched, limits_only())
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "tripped", "2 failed verifications")


def test_decisions_are_deterministic_and_explain_themselves() -> None:
    world = make_world()
    a = act("k8s.cordon_node", node="pool0-003")
    d1, d2 = decide(a, world, History(), PLAYBOOKS), decide(a, world, History(), PLAYBOOKS)
    assert d1 == d2 and d1.action_hash == a.digest()
    assert d1.verdict == Verdict.ALLOW and d1.reasons == WITHIN and d1.decided_at == NOW
    assert "kill_switch" in d1.limits_consulted and "blast_radius.gpus_out" in d1.limits_consulted
    ghost = act("k8s.cordon_node", node="ghost")
    g1, g2 = decide(ghost, world, History(), PLAYBOOKS), decide(ghost, world, History(), PLAYBOOKS)
    assert g1 == g2 and g1.action_hash == ghost.digest() != d1.action_hash
    assert g1.verdict == Verdict.DENY and g1.reasons and all(r.startswith("deny: ") for r in g1.reasons)


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

_NO_GPU_LIMIT = {"soft": 1000, "hard": 1000}
_NO_FRACTION_LIMIT = {"soft": 1, "hard": 1}
# Limit sets for the sequence property: the defaults (the GPU count binds first), then with the GPU
# count out of the way (the pool and fleet fractions bind), with only a tight circuit breaker, and with
# few writes allowed per incident.
LIMIT_SETS = {
    "defaults": limits_only(),
    "fractions": limits_only(blast_radius={"gpus_out": _NO_GPU_LIMIT}),
    "breaker": limits_only(
        blast_radius={
            "gpus_out": _NO_GPU_LIMIT,
            "pool_cordoned": _NO_FRACTION_LIMIT,
            "fleet_cordoned": _NO_FRACTION_LIMIT,
        },
        circuit_breaker={"percentage": 5},
    ),
    "incident": limits_only(blast_radius={"gpus_out": _NO_GPU_LIMIT}, rate_limits={"writes_per_incident": 4}),
}


@dataclass(frozen=True)
class Crossing:
    """A limit an action would cross: the verdict it earns and fragments its reason must name."""

    name: str  # as in Decision.limits_consulted
    verdict: Verdict
    fragments: tuple[str, ...]


def _over(value: float | Decimal, soft: float | Decimal, hard: float | Decimal) -> Verdict | None:
    if value > hard:
        return Verdict.DENY
    if value > soft:
        return Verdict.ASK
    return None


def expected_crossings(
    tool: str,
    params: dict[str, Any],
    incident: str,
    world: WorldView,
    done: list[PastAction],
    pset: PlaybookSet,
) -> list[Crossing]:
    """An independent model of the gate, for the generated space only (cordons and drains of make_world()
    nodes and credits, proposed by a human under no playbook, nobody alerting, everything done now)."""
    limits = pset.limits
    br, cb, rates = limits.blast_radius, limits.circuit_breaker, limits.rate_limits
    found: list[Crossing] = []

    def limit(name: str, value: float | Decimal, soft: float | Decimal, hard: float | Decimal) -> None:
        v = _over(value, soft, hard)
        if v is not None:
            found.append(Crossing(f"blast_radius.{name}", v, (f"blast_radius.{name}",)))

    if tool in NODE_OUT:
        node = world.nodes[params["node"]]
        out = {n for a in done if a.tool in NODE_OUT for n in a.nodes} | {node.name}
        in_pool = sum(1 for n in out if world.nodes[n].pool == node.pool)
        if in_pool > br.always_allow_nodes:
            size = world.pool_size(node.pool)
            limit("pool_cordoned", in_pool / size, br.pool_cordoned.soft, br.pool_cordoned.hard)
        if len(out) > br.always_allow_nodes:
            limit(
                "fleet_cordoned", len(out) / len(world.nodes), br.fleet_cordoned.soft, br.fleet_cordoned.hard
            )
        limit("gpus_out", sum(world.nodes[n].gpus for n in out), br.gpus_out.soft, br.gpus_out.hard)
        if tool == "k8s.drain_node":
            disrupted = {c for a in done if a.tool == "k8s.drain_node" for c in a.customers}
            bound = br.customers_disrupted_per_hour
            limit(
                "customers_disrupted_per_hour", len(disrupted | set(node.customers())), bound.soft, bound.hard
            )
        if cb.enabled and len(out) * 100 > cb.percentage * len(world.nodes):
            found.append(Crossing("circuit_breaker", Verdict.DENY, ("circuit breaker",)))
    else:
        amount, customer = Decimal(params["amount_usd"]), params["customer"]
        for name, spent in (
            (
                "credit_usd_per_incident",
                sum((a.dollars for a in done if a.incident_id == incident), Decimal(0)),
            ),
            (
                "credit_usd_per_customer_per_day",
                sum((a.dollars for a in done if customer in a.customers), Decimal(0)),
            ),
            ("credit_usd_per_hour", sum((a.dollars for a in done), Decimal(0))),
        ):
            bound = getattr(br, name)
            limit(name, spent + amount, Decimal(str(bound.soft)), Decimal(str(bound.hard)))
    per_hour = rates.per_hour_for(tool)
    if sum(1 for a in done if a.tool == tool) + 1 > per_hour:
        found.append(Crossing(f"rate_limits.{tool}", Verdict.DENY, (tool, "last hour", str(per_hour))))
    if sum(1 for a in done if a.incident_id == incident) + 1 > rates.writes_per_incident:
        found.append(Crossing("rate_limits.writes_per_incident", Verdict.DENY, (incident, "writes")))
    return found


def assert_within(done: list[PastAction], world: WorldView, pset: PlaybookSet, bound: str) -> None:
    """What the executed actions add up to is within every ``bound`` ("soft" or "hard") limit."""
    br, cb = pset.limits.blast_radius, pset.limits.circuit_breaker

    def at(limit: Any) -> float:
        return float(getattr(limit, bound))

    out = agent_out_nodes(History(actions=tuple(done)))
    for pool in ("pool0", "pool1"):
        n = sum(1 for x in out if world.nodes[x].pool == pool)
        assert n <= br.always_allow_nodes or n / world.pool_size(pool) <= at(br.pool_cordoned), (pool, n)
    assert len(out) <= br.always_allow_nodes or len(out) / len(world.nodes) <= at(br.fleet_cordoned)
    assert sum(world.nodes[x].gpus for x in out) <= at(br.gpus_out)
    assert len(out) * 100 <= cb.percentage * len(world.nodes)  # the breaker never had to trip
    drained = {c for a in done if a.tool == "k8s.drain_node" for c in a.customers}
    assert len(drained) <= at(br.customers_disrupted_per_hour)
    for i in range(4):
        credited = sum((a.dollars for a in done if a.incident_id == f"inc-{i}"), Decimal("0"))
        assert credited <= Decimal(str(at(br.credit_usd_per_incident)))
    for c in range(7):
        credited = sum((a.dollars for a in done if f"c{c}" in a.customers and a.dollars), Decimal("0"))
        assert credited <= Decimal(str(at(br.credit_usd_per_customer_per_day)))
    assert sum((a.dollars for a in done), Decimal("0")) <= Decimal(str(at(br.credit_usd_per_hour)))


_SIX_CORDONS = [(("k8s.cordon_node", {"node": f"pool0-{i:03d}"}), 0) for i in range(6)]
_CREDITS = [(("billing.issue_credit", {"customer": "c1", "amount_usd": "60", "reason": "r"}), 0)] * 3
_SPREAD = [
    (("billing.issue_credit", {"customer": f"c{i % 7}", "amount_usd": "150", "reason": "r"}), i % 4)
    for i in range(12)
]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.sampled_from(sorted(LIMIT_SETS)),
    st.booleans(),
    st.lists(st.tuples(write_actions, st.integers(0, 3)), min_size=1, max_size=40),
)
@example("defaults", False, _SIX_CORDONS + _CREDITS)
@example("defaults", True, _SIX_CORDONS)
@example("fractions", True, _SIX_CORDONS)
@example("breaker", True, _SIX_CORDONS)
@example("defaults", True, _CREDITS * 7)
@example("incident", True, _CREDITS * 2)
@example("defaults", True, _SPREAD)
@example("defaults", False, [(("k8s.cordon_node", {"node": "pool1-007"}), 1)] * 7)  # the rate limit
@example(
    "defaults",
    True,
    [
        (("billing.issue_credit", {"customer": f"c{i}", "amount_usd": "900", "reason": "r"}), 2)
        for i in (1, 2)
    ],
)
def test_no_sequence_of_allowed_actions_exceeds_a_limit(
    limit_set: str, approve_asks: bool, seq: list[tuple[tuple[str, dict], int]]
) -> None:
    """Every decision is exactly what the limits say: allowed when no limit is crossed (liveness), else
    the strictest verdict with a reason naming each limit crossed. And whatever the sequence, what the
    gate let through stays within the soft limits; with a human approving every ask, within the hard."""
    world = make_world()
    pset = LIMIT_SETS[limit_set]
    done: list[PastAction] = []
    for step, ((tool, params), inc) in enumerate(seq):
        action = act(tool, step=step, incident=f"inc-{inc}", **params)
        d = decide(action, world, History(actions=tuple(done)), pset)
        crossed = expected_crossings(tool, params, action.incident_id, world, done, pset)
        want = max((c.verdict for c in crossed), key=_STRICTNESS.__getitem__, default=Verdict.ALLOW)
        assert d.verdict == want, (step, action.params, crossed, d.reasons)
        if want == Verdict.ALLOW:
            assert d.reasons == WITHIN, (step, d.reasons)
        else:
            assert len(d.reasons) == len(crossed), (step, crossed, d.reasons)
        for c in crossed:
            assert c.name in d.limits_consulted, (step, c, d.limits_consulted)
            assert says(d, c.verdict, *c.fragments), (step, c, d.reasons)
        if d.verdict == Verdict.DENY or (d.verdict == Verdict.ASK and not approve_asks):
            continue
        t = d.targets
        if tool in NODE_OUT:
            assert t.nodes == (params["node"],) and t.gpus == world.nodes[params["node"]].gpus
        else:
            assert t.customers == (params["customer"],) and t.dollars == Decimal(params["amount_usd"])
        done.append(
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
        assert_within(done, world, pset, "hard" if approve_asks else "soft")


# Playbooks that may take one node out, and the out-of-service tools each permits.
NODE_PLAYBOOKS = sorted(
    (p.id, t)
    for p in PLAYBOOKS
    for t in NODE_OUT
    if p.containment.permits(t) and p.containment.max_nodes >= 1
)


def test_node_playbooks_are_the_ones_expected() -> None:
    ids = {pid for pid, _ in NODE_PLAYBOOKS}
    assert {"disk-pressure", "node-notready", "xid-fallen-off-bus", "xid-ecc", "thermal-throttling"} <= ids
    assert {"node-agent-down", "network-partition", "xid-application"}.isdisjoint(ids)
    # Each of them checks the world before it acts.
    assert all(p.containment.preconditions for p in PLAYBOOKS if p.id in ids)


def arrange(world: WorldView, node: str, conds: list[Any], broken: int | None) -> WorldView:
    """``world`` with each precondition in ``conds`` holding on ``node``, except the one at ``broken``;
    ``node`` alerts and is the incident's subject."""
    view = world.nodes[node]
    update: dict[str, Any] = {"conditions": dict(view.conditions)}
    events: list[str] = []
    confirmed: set[str] = set()
    throttled: frozenset[str] = frozenset()
    for i, cond in enumerate(conds):
        holds = i != broken
        check = cond.check
        if check == "node_condition":
            status = cond.status if holds else {"True": "False"}.get(cond.status, "True")
            if cond.condition == "GpuHealthy":
                update["gpu_healthy"] = status
            elif cond.condition == "Ready":
                update["ready"] = status
            else:
                update["conditions"][cond.condition] = status
        elif check == "gpu_fault_confirmed":
            if holds:
                confirmed.add(node)
        elif check == "gpu_throttle_confirmed":
            throttled = frozenset(cond.reasons[:1]) if holds else frozenset({"GpuIdle"})
        elif check == "node_event":
            if holds == cond.present:
                events.append(cond.reason)
        elif check == "node_agent_reachable":
            update["agent_ready"] = cond.value if holds else not cond.value
        elif check == "node_unschedulable":
            update["unschedulable"] = cond.value if holds else not cond.value
        elif check == "pods_on_node":
            count = 0 if holds else cond.max + 1
            update["pods"] = tuple(
                PodRef(namespace="tenant-c0", name=f"p{j}-{node}", customer="c0") for j in range(count)
            )
        else:
            pytest.fail(f"no way to arrange precondition {check} in this test")
    return WorldView(
        now=world.now,
        nodes={**world.nodes, node: view.model_copy(update=update)},
        node_events={node: tuple(events)},
        confirmed_gpu_faults=frozenset(confirmed),
        throttle_reasons={node: throttled},
        alerting_nodes=frozenset({node}),
        subject_nodes=frozenset({node}),
    )


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.sampled_from(NODE_PLAYBOOKS),
    st.integers(1, 3),
    st.integers(8, 40),
    st.integers(0, 39),
    st.integers(0, 5),
)
@example(("disk-pressure", "k8s.cordon_node"), 2, 20, 7, 0)
@example(("xid-nvlink", "k8s.drain_node"), 1, 40, 39, 1)  # its runbook has a human approve the drain
def test_a_playbook_may_take_its_first_node_out(
    playbook_and_tool: tuple[str, str], pools: int, per_pool: int, index: int, which: int
) -> None:
    """Liveness: the first cordon (drain, taint) of one node in a fresh fleet, under a playbook that
    permits it, with its preconditions met and no limit near, is allowed (or asked about, where the
    runbook says a human approves that step). Unmet, any one precondition denies it, by name."""
    pid, tool = playbook_and_tool
    playbook = PLAYBOOKS.get(pid)
    assert playbook is not None and playbook.containment.permits(tool)
    base = make_world(pools=pools, per_pool=per_pool)
    node = f"pool{index % pools}-{index % per_pool:03d}"
    conds = list(playbook.containment.preconditions)
    assert conds, f"{pid} may take a node out without checking the world first"
    world = arrange(base, node, conds, broken=None)
    params: dict[str, object] = {"node": node}
    if tool == "k8s.taint_node":
        params["key"] = "quarantine"
    action = Action(
        tool=tool, params=params, incident_id="inc-1", step=1, playbook_id=pid, proposed_by="anthropic"
    )
    d = decide(action, world, History(), PLAYBOOKS)
    if any(s.tool == tool and s.requires_approval for s in playbook.runbook):
        assert d.verdict == Verdict.ASK and len(d.reasons) == 1 and says(d, Verdict.ASK, pid, "approve")
    else:
        assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN, d.reasons
    assert d.targets.nodes == (node,) and f"playbook:{pid}" in d.limits_consulted
    broken = which % len(conds)
    unmet = arrange(base, node, conds, broken=broken)
    d = decide(action, unmet, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY, (pid, conds[broken], d.reasons)
    assert says(d, Verdict.DENY, f"precondition of {pid} unmet"), d.reasons
    # The playbook's own node limit: one node more than it allows, in the same incident, is denied.
    others = [n for n in sorted(base.nodes) if n != node][: playbook.containment.max_nodes]
    done = tuple(PastAction(tool=tool, incident_id="inc-1", at=NOW, nodes=(n,), gpus=8) for n in others)
    d = decide(action, world, History(actions=done), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and says(
        d, Verdict.DENY, f"{pid} allows {playbook.containment.max_nodes}"
    )


@settings(max_examples=100, deadline=None, derandomize=True)
@given(write_actions, write_actions, st.integers(0, 5), st.integers(0, 5))
@example(("k8s.cordon_node", {"node": "pool0-001"}), ("k8s.cordon_node", {"node": "pool0-001"}), 2, 2)
@example(("k8s.cordon_node", {"node": "pool0-001"}), ("k8s.cordon_node", {"node": "pool0-001"}), 2, 3)
@example(("k8s.cordon_node", {"node": "pool0-001"}), ("k8s.drain_node", {"node": "pool0-001"}), 2, 2)
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
    ok_second, why = approval.admits(second, NOW, frozenset({"U1"}))
    assert ok_first
    assert ok_second == (first.tool == second.tool and first.params == second.params and sa == sb)
    assert ok_second or why
    # Nor does it admit the very same action once expired, or from someone who may not approve.
    assert not approval.admits(first, NOW + timedelta(minutes=5), frozenset({"U1"}))[0]
    assert not approval.admits(first, NOW, frozenset({"U2"}))[0]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(write_actions, st.integers(0, 50))
def test_a_tripped_breaker_blocks_every_write_until_reset(a: tuple, step: int) -> None:
    world = make_world()
    action = act(a[0], step=step, **a[1])
    tripped = History(breaker_tripped=True, breaker_reason="3 failed verifications")
    d = decide(action, world, tripped, limits_only())
    assert d.verdict == Verdict.DENY
    assert says(d, Verdict.DENY, "circuit breaker", "3 failed verifications", "human")
    # Reset, the same write in a fresh fleet is within every limit, but a credit over the per-incident
    # soft limit ($100 by default), which a human approves.
    reset = decide(action, world, History(breaker_tripped=False), limits_only())
    over = a[0] == "billing.issue_credit" and Decimal(a[1]["amount_usd"]) > 100
    assert reset.verdict == (Verdict.ASK if over else Verdict.ALLOW), reset.reasons
    assert not any("circuit breaker" in r for r in reset.reasons)


@pytest.mark.parametrize("tool", NODE_OUT)
def test_taking_a_node_out_counts_its_gpus(tool: str) -> None:
    world = make_world()
    params: dict[str, object] = {"node": "pool0-000"}
    if tool == "k8s.taint_node":
        params["key"] = "quarantine"
    d = decide(act(tool, **params), world, History(), PLAYBOOKS)
    assert d.targets.gpus == 8
    assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN  # 8 GPUs: at the soft limit, not over
    # The count is what the limit sees: under a hard limit of 7 GPUs the same action is denied.
    tight = limits_only(blast_radius={"gpus_out": {"soft": 4, "hard": 7}})
    d = decide(act(tool, **params), world, History(), tight)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "would be 8", "blast_radius.gpus_out")
