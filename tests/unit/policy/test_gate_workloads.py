"""The gate counts workload damage: a drain of one node of a gang job stops every GPU of it (the reasons
name the job), counted against the hour, the incident and the customer; a drain whose evicted pods would
find no room in their pool is asked about. Each rule with its nearest allowed case, and as properties:
the workload rules only ever add to the node-only gate, and room is what first fit says."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from supply_agent.models import Verdict, WorkloadHit
from supply_agent.policy import GlobalLimits, PlaybookSet
from supply_agent.policy.gate import decide
from supply_agent.policy.world import History, NodeView, PastAction, PodRef, PoolRoom, WorkloadView, WorldView
from tests.unit.policy.test_gate import _STRICTNESS, NOW, PLAYBOOKS, act, says


def gang_world(
    jobs: dict[str, int], room: tuple[int, ...] | None = (8, 8), customers: dict[str, str] | None = None
) -> WorldView:
    """Pool p0 of 40 nodes; JobSet ``name`` runs one 8-GPU pod on each of its first ``jobs[name]`` nodes
    (jobs in order, consecutive nodes); ``room``: the free GPUs read for a drain's pool (None: not read)."""
    nodes, workloads, i = {}, {}, 0
    for name, size in jobs.items():
        customer = (customers or {}).get(name, f"cust-{name}")
        key = f"JobSet/tenant-{customer}/{name}"
        members = []
        for _ in range(size):
            node = f"n{i:03d}"
            pod = PodRef(
                namespace=f"tenant-{customer}", name=f"{name}-{i}", customer=customer, gpus=8, workload=key
            )
            nodes[node] = NodeView(name=node, pool="p0", gpus=8, pods=(pod,))
            members.append(node)
            i += 1
        workloads[key] = WorkloadView(
            kind="JobSet",
            namespace=f"tenant-{customer}",
            name=name,
            customer=customer,
            nodes=tuple(members),
            gpus=8 * size,
            pods=size,
            checkpoint_every_s=3600,
            resumes_from=NOW - timedelta(minutes=41),
        )
    while i < 40:
        node = f"n{i:03d}"
        nodes[node] = NodeView(name=node, pool="p0", gpus=8, pods=())
        i += 1
    rooms = {} if room is None else {"p0": PoolRoom(pool="p0", needs=(8,), free=room)}
    return WorldView(now=NOW, nodes=nodes, workloads=workloads, room=rooms)


# The node-count limits out of the way, so that the workload rules are what a verdict shows.
LOOSE = {
    "gpus_out": {"soft": 1000, "hard": 2000},
    "pool_cordoned": {"soft": 0.9, "hard": 1.0},
    "fleet_cordoned": {"soft": 0.9, "hard": 1.0},
}


def with_limits(loose: bool = True, **workloads: object) -> PlaybookSet:
    limits = GlobalLimits.model_validate({"workloads": workloads, "blast_radius": LOOSE if loose else {}})
    return PlaybookSet(limits=limits, playbooks=PLAYBOOKS.playbooks)


def drained(world: WorldView, node: str, at_minutes_ago: int = 10, incident: str = "inc-0") -> PastAction:
    d = decide(act("k8s.drain_node", node=node, incident=incident), world, History(), PLAYBOOKS)
    t = d.targets
    return PastAction(
        tool="k8s.drain_node",
        incident_id=incident,
        at=NOW - timedelta(minutes=at_minutes_ago),
        nodes=t.nodes,
        customers=t.customers,
        gpus=t.gpus,
        workloads=t.workloads,
    )


def test_a_drain_of_one_node_of_a_gang_job_counts_every_gpu_of_it_and_names_it() -> None:
    world = gang_world({"llm-pretrain": 16})
    d = decide(act("k8s.drain_node", node="n003"), world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.ALLOW  # 128 GPUs: within the soft limit of 128
    assert d.targets.workloads == (
        WorkloadHit(
            key="JobSet/tenant-cust-llm-pretrain/llm-pretrain",
            customer="cust-llm-pretrain",
            nodes=16,
            gpus=128,
            since_checkpoint_s=41 * 60,
            checkpoint_every_s=3600,
        ),
    )
    assert (
        "note: drains 1 node; stops jobset tenant-cust-llm-pretrain/llm-pretrain: 16 nodes, 128 GPUs, "
        "checkpointed 41 min ago" in d.reasons
    )
    assert "workloads.gpus_disrupted_per_hour" in d.limits_consulted
    # A job twice the size stops 256 GPUs with one node's drain: a human decides.
    big = decide(act("k8s.drain_node", node="n003"), gang_world({"llm-pretrain": 32}), History(), PLAYBOOKS)
    assert big.verdict == Verdict.ASK
    assert says(big, Verdict.ASK, "GPUs of gang workloads the agent stopped in the last hour would be 256")
    # A cordon stops nothing: no workload is counted.
    cordon = decide(act("k8s.cordon_node", node="n003"), world, History(), PLAYBOOKS)
    assert cordon.targets.workloads == () and not any("stops jobset" in r for r in cordon.reasons)


def test_the_hour_the_incident_and_the_customer_each_bound_what_the_agent_stops() -> None:
    world = gang_world({"a": 8, "b": 8, "c": 8}, customers={"a": "acme", "b": "acme", "c": "zeta"})
    first = drained(world, "n000", incident="inc-0")  # job a: 64 GPUs, acme
    hour = History(actions=(first,))
    # Job c (zeta's) in another incident: 128 GPUs stopped in the hour, at the soft limit.
    assert decide(
        act("k8s.drain_node", node="n016", incident="inc-1"), world, hour, with_limits()
    ).verdict == (Verdict.ALLOW)
    tight = with_limits(gpus_disrupted_per_customer_per_hour={"soft": 64, "hard": 512})
    # Job b is acme's too: acme's second 64 GPUs in the hour are over a customer limit of 64.
    acme = decide(act("k8s.drain_node", node="n008", incident="inc-1"), world, hour, tight)
    assert says(acme, Verdict.ASK, "GPUs of acme's gang workloads stopped in the last hour would be 128")
    zeta = decide(act("k8s.drain_node", node="n016", incident="inc-1"), world, hour, tight)
    assert zeta.verdict == Verdict.ALLOW  # zeta's first
    # The same two in one incident: over a per-incident limit of 64; an hour and more ago, it counts
    # for the incident but not for the hour.
    per_incident = with_limits(gpus_disrupted_per_incident={"soft": 64, "hard": 512})
    old = History(actions=(drained(world, "n000", at_minutes_ago=90, incident="inc-0"),))
    same = decide(act("k8s.drain_node", node="n016", incident="inc-0"), world, old, per_incident)
    assert says(same, Verdict.ASK, "GPUs of gang workloads this incident stopped would be 128")
    other = decide(act("k8s.drain_node", node="n016", incident="inc-1"), world, old, per_incident)
    assert other.verdict == Verdict.ALLOW


def test_a_drain_whose_evicted_pods_find_no_room_is_asked() -> None:
    full = gang_world({"llm": 8}, room=(0, 4, 0))
    d = decide(act("k8s.drain_node", node="n002"), full, History(), PLAYBOOKS)
    assert says(
        d,
        Verdict.ASK,
        "the drain leaves pool p0 without room for what it evicts: 1 pod(s) asking 8 GPUs",
        "the freest with 4 GPUs free",
        "tenant-cust-llm/llm (64 GPUs)",
    )
    roomy = decide(
        act("k8s.drain_node", node="n002"), gang_world({"llm": 8}, room=(0, 8)), History(), PLAYBOOKS
    )
    assert roomy.verdict == Verdict.ALLOW
    off = with_limits(require_room=False)
    assert decide(act("k8s.drain_node", node="n002"), full, History(), off).verdict == Verdict.ALLOW


def test_the_node_only_gate_counts_no_workload() -> None:
    world = gang_world({"llm": 32}, room=(0,))
    node_only = with_limits(loose=False, enabled=False)
    d = decide(act("k8s.drain_node", node="n002"), world, History(), node_only)
    assert d.verdict == Verdict.ALLOW and not any(c.startswith("workloads.") for c in d.limits_consulted)
    assert decide(act("k8s.drain_node", node="n002"), world, History(), PLAYBOOKS).verdict == Verdict.ASK


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    room=st.one_of(st.none(), st.lists(st.integers(0, 8), max_size=6).map(tuple)),
    past_drains=st.lists(st.tuples(st.integers(0, 35), st.integers(0, 120)), max_size=4),
    target=st.integers(0, 39),
)
def test_workload_rules_only_ever_add_to_the_node_only_gate(
    sizes: list[int], room: tuple[int, ...] | None, past_drains: list[tuple[int, int]], target: int
) -> None:
    jobs = {f"j{i}": s for i, s in enumerate(sizes)}
    world = gang_world(jobs, room=room)
    history = History(actions=tuple(drained(world, f"n{n:03d}", ago) for n, ago in past_drains))
    action = act("k8s.drain_node", node=f"n{target:03d}")
    with_rules = decide(action, world, history, PLAYBOOKS)
    node_only = decide(action, world, history, with_limits(loose=False, enabled=False))
    assert _STRICTNESS[with_rules.verdict] >= _STRICTNESS[node_only.verdict]
    assert set(node_only.limits_consulted) <= set(with_rules.limits_consulted)
    # What it stops is every GPU of each job with a pod on the node, and nothing else.
    stopped = sum(w.gpus for w in with_rules.targets.workloads)
    on_node = {p.workload for p in world.nodes[f"n{target:03d}"].pods if p.workload}
    assert stopped == sum(world.workloads[k].gpus for k in on_node)


@settings(max_examples=300, deadline=None)
@given(needs=st.lists(st.integers(1, 8), max_size=6), free=st.lists(st.integers(0, 8), max_size=6))
def test_room_is_a_first_fit_placement(needs: list[int], free: list[int]) -> None:
    room = PoolRoom(pool="p", needs=tuple(needs), free=tuple(free))
    left = room.unplaced()
    placed = sorted(needs, reverse=True)
    for g in left:
        placed.remove(g)
    assert sum(placed) <= sum(free)  # what it says fits, fits in what is free
    if sum(needs) > sum(free):
        assert left  # more asked than free: something is left out
    if needs and free and max(needs) <= min(free) and len(needs) <= len(free):
        assert not left  # one per node, each node big enough: everything fits


@settings(max_examples=300, deadline=None)
@given(
    needs=st.lists(
        st.tuples(st.integers(1, 8), st.sampled_from([(), (("tenant_tier", "reserved"),)])), max_size=6
    ),
    free=st.lists(st.tuples(st.integers(0, 8), st.sampled_from(["reserved", "on-demand"])), max_size=6),
)
def test_a_pod_that_selects_nodes_is_placed_only_on_them(
    needs: list[tuple[int, tuple[tuple[str, str], ...]]], free: list[tuple[int, str]]
) -> None:
    """A nodeSelector holds a pod to the nodes it selects: with none selecting, the placement is the one
    it always was; with no reserved node, every pod that selects one is left out; and more GPUs asked of
    the reserved tier than its nodes have free leaves a pod out."""
    room = PoolRoom(
        pool="p",
        needs=tuple(g for g, _ in needs),
        free=tuple(f for f, _ in free),
        need_selectors=tuple(s for _, s in needs),
        free_labels=tuple((("tenant_tier", t),) for _, t in free),
    )
    unheld = PoolRoom(pool="p", needs=room.needs, free=room.free)
    if not any(s for _, s in needs):
        assert room.unplaced() == unheld.unplaced()  # no pod selects: the placement it always was
    if not any(t == "reserved" for _, t in free):
        assert sum(1 for _, s in needs if s) <= len(room.unplaced())  # nowhere they may go
    reserved_free = sum(f for f, t in free if t == "reserved")
    if sum(g for g, s in needs if s) > reserved_free:
        assert room.unplaced()  # what must go to reserved nodes does not fit there


def test_a_drain_whose_pod_selects_a_tier_with_no_room_left_asks_and_says_so() -> None:
    """The pool has free nodes, but on demand; the evicted pod selects the reserved tier (as Kueue
    writes a ResourceFlavor's nodeLabels into the pods it admits), and no other reserved node is free."""
    reserved = (("pool", "p0"), ("tenant_tier", "reserved"))
    pod = PodRef(
        namespace="tenant-a",
        name="infer-0",
        customer="a",
        gpus=8,
        node_selector=(("tenant_tier", "reserved"),),
    )
    nodes = {
        "n0": NodeView(name="n0", pool="p0", gpus=8, pods=(pod,), group_labels=dict(reserved)),
        "n1": NodeView(
            name="n1",
            pool="p0",
            gpus=8,
            pods=(PodRef(namespace="tenant-b", name="x", gpus=8),),
            group_labels=dict(reserved),
        ),
        "n2": NodeView(name="n2", pool="p0", gpus=8, group_labels={"pool": "p0", "tenant_tier": "on-demand"}),
    }
    from supply_agent.hands.workloads import read_room

    world = WorldView(now=NOW, nodes=nodes)
    world = world.model_copy(update={"room": read_room(world, ("n0",), None)})
    d = decide(act("k8s.drain_node", node="n0"), world, History(), with_limits())
    assert says(d, Verdict.ASK, "their nodeSelector allows (tenant_tier=reserved)")
    # The same pod selecting nothing fits on the free on-demand node.
    free_pod = pod.model_copy(update={"node_selector": ()})
    nodes["n0"] = nodes["n0"].model_copy(update={"pods": (free_pod,)})
    world = WorldView(now=NOW, nodes=nodes)
    world = world.model_copy(update={"room": read_room(world, ("n0",), None)})
    assert not says(
        decide(act("k8s.drain_node", node="n0"), world, History(), with_limits()), Verdict.ASK, "room"
    )


def test_of_two_equal_pods_the_one_held_to_a_tier_is_placed_first() -> None:
    """An 8-GPU pod that may go anywhere and one held to the reserved tier, one free reserved node and
    one free on-demand node: both fit, whichever order the pods come in."""
    reserved, anywhere = (("tenant_tier", "reserved"),), ()
    for sels in ((anywhere, reserved), (reserved, anywhere)):
        room = PoolRoom(
            pool="p",
            needs=(8, 8),
            free=(8, 8),
            need_selectors=sels,
            free_labels=((("tenant_tier", "reserved"),), (("tenant_tier", "on-demand"),)),
        )
        assert room.unplaced() == ()
