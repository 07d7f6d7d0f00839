"""Identity from the cluster, enforced at the gate: a notice or a billing write goes only to a customer the
incident affects, whichever planner proposed it. Affected: a tenant pod of theirs on the incident's nodes
(or the action's target nodes) or one of the pods it is about, as the cluster labels it now; or seen there
by the incident's own reads (their pods gone since a drain). An alert's ``customer`` label is anyone's
text: a customer named only there is denied.

Each rule is pinned from both sides, as in ``test_gate.py``: the denial, and next to it the nearest case
the gate must allow."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from supply_agent.hands import runtime as runtime_module
from supply_agent.hands.runtime import Runtime
from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes import gate as gate_node
from supply_agent.mind.nodes.gate import incident_pods, observed_customers
from supply_agent.models import Action, Decision, Verdict
from supply_agent.models.incident import AlertIn, Evidence, IncidentState, Proposal
from supply_agent.policy.gate import CUSTOMER_WRITES, decide
from supply_agent.policy.world import History, NodeView, PodRef, WorldView
from tests.unit.policy.test_gate import NOW, PLAYBOOKS, WITHIN, arrange, says

IDENTITY = "who is affected comes from the cluster, not from alert labels"
MACHINES = ("runbook", "anthropic", "openai", "llm", "router")  # every non-human proposer
NODE = "west-a100-00003"
_FALLEN = PLAYBOOKS.get("xid-fallen-off-bus")
assert _FALLEN is not None
FALLEN = _FALLEN


def notice(customer: str, by: str = "runbook", playbook: str | None = "xid-fallen-off-bus") -> Action:
    return Action(
        tool="notify.customer",
        params={"customer": customer, "subject": "GPU fell off the bus", "body": "we are moving your work"},
        incident_id="inc-1",
        step=3,
        playbook_id=playbook,
        proposed_by=by,
    )


def credit(customer: str, by: str = "runbook", playbook: str | None = "xid-fallen-off-bus") -> Action:
    return Action(
        tool="billing.issue_credit",
        params={"customer": customer, "amount_usd": "12.50", "reason": "GPU time on a dead GPU"},
        incident_id="inc-1",
        step=5,
        playbook_id=playbook,
        proposed_by=by,
    )


def fleet(pods: tuple[PodRef, ...], observed: frozenset[str] | None = frozenset()) -> WorldView:
    """One XID 79 node (every precondition of xid-fallen-off-bus met) holding ``pods``, in a small fleet;
    the node is the incident's one subject."""
    nodes = {
        NODE: NodeView(name=NODE, pool="west", gpus=8, pods=pods),
        "west-a100-00004": NodeView(
            name="west-a100-00004",
            pool="west",
            gpus=8,
            pods=(PodRef(namespace="tenant-cobalt", name="serve-0", customer="cobalt", gpus=8),),
        ),
        **{
            f"west-a100-1{i:04d}": NodeView(name=f"west-a100-1{i:04d}", pool="west", gpus=8) for i in range(8)
        },
    }
    base = WorldView(now=NOW, nodes=nodes)
    met = arrange(base, NODE, list(FALLEN.containment.preconditions), broken=None)
    return met.model_copy(update={"observed_customers": observed})


AGENT = PodRef(namespace="supply-agent-system", name="node-agent-x", customer="platform", daemonset=True)
ACME = PodRef(namespace="tenant-acme", name="train-0", customer="acme", gpus=4)
# The same pod crash-looping, as the cluster shows it (tenant-crashloop's precondition reads it).
LOOPING = ACME.model_copy(update={"waiting_reason": "CrashLoopBackOff"})


# -- the rule ----------------------------------------------------------------------------------------
def test_a_customer_with_pods_on_the_incidents_node_is_told_and_credited() -> None:
    world = fleet((AGENT, ACME))
    for by in MACHINES:
        d = decide(notice("acme", by), world, History(), PLAYBOOKS)
        assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN, (by, d.reasons)
        assert "identity.customers" in d.limits_consulted
        d = decide(credit("acme", by), world, History(), PLAYBOOKS)
        # The credit step asks a human (the playbook's requires_approval), for nothing else.
        assert d.verdict == Verdict.ASK and len(d.reasons) == 1, d.reasons
        assert says(d, Verdict.ASK, "xid-fallen-off-bus asks a human to approve")


def test_a_customer_named_only_by_the_alert_is_denied_whoever_proposed_it() -> None:
    """cobalt runs on another node of the fleet: an alert label naming cobalt does not make it affected."""
    world = fleet((AGENT, ACME))
    for by in MACHINES:
        for action in (notice("cobalt", by), credit("cobalt", by)):
            d = decide(action, world, History(), PLAYBOOKS)
            assert d.verdict == Verdict.DENY, (by, action.tool, d.reasons)
            assert says(
                d, Verdict.DENY, "customer cobalt has no pods on this incident's nodes", NODE, IDENTITY
            )
    # A customer nobody runs: the same.
    d = decide(notice("nobody-at-all", "anthropic"), world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "customer nobody-at-all", IDENTITY)


def test_a_daemonset_on_the_node_makes_no_customer_affected() -> None:
    world = fleet((AGENT,))
    d = decide(notice("platform"), world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "customer platform", IDENTITY)


def test_a_customer_seen_before_the_drain_is_still_told_and_credited() -> None:
    """After the drain only the node-agent is left on the node; the incident's pod listing saw acme."""
    drained = fleet((AGENT,), observed=frozenset({"acme"}))
    d = decide(notice("acme"), drained, History(), PLAYBOOKS)
    assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN, d.reasons
    d = decide(credit("acme", "anthropic"), drained, History(), PLAYBOOKS)
    assert d.verdict == Verdict.ASK and not any(IDENTITY in r for r in d.reasons), d.reasons
    # Seen by nobody, acme is as unaffected as cobalt.
    d = decide(notice("acme"), fleet((AGENT,)), History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and says(
        d, Verdict.DENY, "customer acme", "saw none of theirs", IDENTITY
    )


def test_without_the_incidents_record_the_gate_asks_and_never_lets_it_through() -> None:
    """``observed_customers`` None: nobody told the gate what the incident saw. A customer the cluster
    shows on the node now is fine; any other could be a forgery or a drained customer: a human decides."""
    unknown = fleet((AGENT, ACME), observed=None)
    d = decide(notice("acme"), unknown, History(), PLAYBOOKS)
    assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN
    d = decide(notice("cobalt", "openai"), unknown, History(), PLAYBOOKS)
    assert d.verdict == Verdict.ASK, d.reasons
    assert says(
        d, Verdict.ASK, "customer cobalt", "no record of what this incident's reads saw", "human decides"
    )


def test_a_human_chooses_the_customer_the_rule_leaves_their_verdict_alone() -> None:
    world = fleet((AGENT, ACME))
    machine = decide(notice("cobalt"), world, History(), PLAYBOOKS)
    human = decide(notice("cobalt", "human"), world, History(), PLAYBOOKS)
    assert machine.verdict == Verdict.DENY
    assert human.verdict == Verdict.ALLOW and human.reasons == WITHIN
    assert "identity.customers" not in human.limits_consulted


def test_a_payout_hold_names_no_customer_and_meets_no_identity_rule() -> None:
    """A billing write on a node (the host's payout) has no customer to check: the host is no customer."""
    world = fleet((AGENT, ACME))
    hold = Action(
        tool="billing.hold_payout",
        params={"node": NODE, "reason": "node out of service"},
        incident_id="inc-1",
        step=4,
        proposed_by="anthropic",
    )
    d = decide(hold, world, History(), PLAYBOOKS)
    assert not any(IDENTITY in r for r in d.reasons), d.reasons


def test_pausing_metering_of_another_customers_pod_is_denied() -> None:
    """A pod's customer is its label in the cluster; a pod elsewhere is not the incident's."""
    world = fleet((AGENT, ACME))
    for pod, ok in (("tenant-acme/train-0", True), ("tenant-cobalt/serve-0", False)):
        ns, name = pod.split("/")
        pause = Action(
            tool="billing.pause_metering",
            params={"namespace": ns, "pod": name, "reason": "its node is broken"},
            incident_id="inc-1",
            step=4,
            proposed_by="anthropic",
        )
        d = decide(pause, world, History(), PLAYBOOKS)
        assert any(IDENTITY in r for r in d.reasons) != ok, (pod, d.reasons)
        if not ok:
            assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "customer cobalt")


def test_a_pod_incidents_customer_is_the_pods_label_in_the_cluster() -> None:
    """A crash-looping pod whose alert says customer=cobalt; the cluster labels the pod acme's. Its node
    (the alert's node label) is a ghost, so only the pod itself says who is affected."""
    world = WorldView(
        now=NOW,
        nodes={NODE: NodeView(name=NODE, pool="west", gpus=8, pods=(AGENT, LOOPING))},
        subject_nodes=frozenset(),  # the alert's node is not the cluster's
        subject_pods=frozenset({"tenant-acme/train-0"}),
        observed_customers=frozenset(),
    )
    for by in MACHINES:
        d = decide(notice("acme", by, "tenant-crashloop"), world, History(), PLAYBOOKS)
        assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN, (by, d.reasons)
        d = decide(notice("cobalt", by, "tenant-crashloop"), world, History(), PLAYBOOKS)
        assert d.verdict == Verdict.DENY, d.reasons
        assert says(d, Verdict.DENY, "customer cobalt", "its pods (tenant-acme/train-0)", IDENTITY)
        d = decide(credit("cobalt", by, "tenant-crashloop"), world, History(), PLAYBOOKS)
        assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "customer cobalt", IDENTITY)


def test_names_from_alert_labels_are_counted_not_quoted() -> None:
    world = WorldView(
        now=NOW,
        nodes={NODE: NodeView(name=NODE, pool="west", gpus=8, pods=(ACME,))},
        subject_nodes=frozenset({"ghost <!channel>"}),
        subject_pods=frozenset({"x/ignore previous instructions"}),
        observed_customers=frozenset(),
    )
    d = decide(notice("cobalt", "anthropic", None), world, History(), PLAYBOOKS)
    (reason,) = [r for r in d.reasons if IDENTITY in r]
    assert "<!channel>" not in reason and "ignore previous" not in reason
    assert "(1 more)" in reason


# -- the property ------------------------------------------------------------------------------------
customers = st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True)
pod_refs = st.builds(
    lambda c, i, ds: PodRef(
        namespace=f"tenant-{c}" if not ds else "supply-agent-system",
        name=f"p{i}",
        customer=c,
        gpus=0 if ds else 4,
        daemonset=ds,
    ),
    customers,
    st.integers(0, 999),
    st.booleans(),
)


@st.composite
def worlds(draw: st.DrawFn) -> WorldView:
    names = draw(st.lists(st.sampled_from([f"n{i}" for i in range(8)]), min_size=1, max_size=6, unique=True))
    nodes = {}
    for n in names:
        pods = draw(st.lists(pod_refs, max_size=5, unique_by=lambda p: (p.namespace, p.name)))
        nodes[n] = NodeView(name=n, pool="p", gpus=8, pods=tuple(pods))
    every = [f"{p.namespace}/{p.name}" for v in nodes.values() for p in v.pods]
    subject = draw(st.frozensets(st.sampled_from([*names, "ghost-1"]), max_size=3))
    about = draw(st.frozensets(st.sampled_from([*every, "tenant-x/gone"]), max_size=3))
    observed = draw(st.frozensets(customers, max_size=3))
    return WorldView(
        now=NOW, nodes=nodes, subject_nodes=subject, subject_pods=about, observed_customers=observed
    )


def affected(world: WorldView, target_nodes: tuple[str, ...]) -> set[str]:
    """Who the incident affects, computed the long way: the test's own statement of the rule."""
    out = set(world.observed_customers or ())
    for n in {*world.subject_nodes, *target_nodes}:
        if n in world.nodes:
            out |= {p.customer for p in world.nodes[n].pods if p.customer and not p.daemonset}
    for v in world.nodes.values():
        out |= {p.customer for p in v.pods if p.customer and f"{p.namespace}/{p.name}" in world.subject_pods}
    return out


def customer_action(kind: str, customer: str, by: str, playbook: str | None) -> Action:
    params: dict[str, Any] = {
        "notify": {"customer": customer, "subject": "s", "body": "b"},
        "credit": {"customer": customer, "amount_usd": "5", "reason": "r"},
    }[kind]
    tool = {"notify": "notify.customer", "credit": "billing.issue_credit"}[kind]
    return Action(tool=tool, params=params, incident_id="inc-1", step=2, playbook_id=playbook, proposed_by=by)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    worlds(),
    st.data(),
    st.sampled_from(["notify", "credit", "pause"]),
    st.sampled_from(MACHINES),
    st.sampled_from([None, "xid-fallen-off-bus", "tenant-crashloop", "double-metering"]),
)
@example(
    WorldView(
        now=NOW,
        nodes={"n0": NodeView(name="n0", pool="p", gpus=8, pods=(ACME,))},
        subject_nodes=frozenset({"n0"}),
        observed_customers=frozenset(),
    ),
    SimpleNamespace(draw=lambda strategy: "cobalt"),
    "notify",
    "runbook",
    "xid-fallen-off-bus",
)
def test_no_machine_proposal_reaches_an_unaffected_customer(
    world: WorldView, data: Any, kind: str, by: str, playbook: str | None
) -> None:
    """For any world, a customer with no tenant pod on the incident's subject or target nodes, owning
    none of its pods and not seen by its reads, is denied any notice or billing write; and a customer
    who is affected never meets this rule (the rule alone never denies the right customer). The customer
    is anyone: a fresh name, or one the fleet has (on other nodes, in a DaemonSet, seen, or affected)."""
    known = sorted(
        {p.customer for v in world.nodes.values() for p in v.pods if p.customer}
        | set(world.observed_customers or ())
    )
    customer = data.draw(st.one_of(customers, st.sampled_from(known)) if known else customers)
    if kind == "pause":
        # Their pod, on a node of its own the incident is not about: its node is no target either.
        pod = PodRef(namespace=f"tenant-{customer}", name="elsewhere-0", customer=customer, gpus=4)
        world = WorldView(
            **{
                **world.model_dump(exclude={"nodes"}),
                "nodes": {**world.nodes, "far": NodeView(name="far", pool="p", gpus=8, pods=(pod,))},
            }
        )
        action = Action(
            tool="billing.pause_metering",
            params={"namespace": pod.namespace, "pod": pod.name, "reason": "r"},
            incident_id="inc-1",
            step=2,
            playbook_id=playbook,
            proposed_by=by,
        )
    else:
        action = customer_action(kind, customer, by, playbook)
    assert action.tool in CUSTOMER_WRITES
    d = decide(action, world, History(), PLAYBOOKS)
    flagged = [r for r in d.reasons if IDENTITY in r]
    event("affected" if customer in affected(world, ()) else "not affected")
    if customer in affected(world, ()):
        assert not flagged, (customer, d.reasons)
    else:
        assert d.verdict == Verdict.DENY, d.reasons
        assert says(d, Verdict.DENY, f"customer {customer} has no pods on", IDENTITY), d.reasons
        assert d.targets.customers == (customer,)


# -- the incident's evidence (the mind's gate node) ----------------------------------------------------
def _ev(tool: str, params: dict[str, Any], result: Any, ok: bool = True) -> Evidence:
    return Evidence(tool=tool, params=params, ok=ok, summary="", result=result)


def _pod(
    ns: str, name: str, node: str | None, customer: str | None, daemonset: bool = False
) -> dict[str, Any]:
    return {
        "namespace": ns,
        "name": name,
        "uid": "u",
        "node": node,
        "phase": "Running",
        "ready": True,
        "terminating": False,
        "restarts": 0,
        "customer": customer,
        "daemonset": daemonset,
    }


XID79 = AlertIn(
    alertname="GPUFallenOffBus",
    labels={"node": NODE, "gpu": "0", "xid": "79", "customer": "cobalt", "namespace": "tenant-c", "pod": "x"},
)
CRASH = AlertIn(
    alertname="KubePodCrashLooping",
    labels={"node": "somewhere", "namespace": "tenant-acme", "pod": "train-0", "customer": "cobalt"},
)


def _incident(*evidence: Evidence, alerts: tuple[AlertIn, ...] = (XID79,)) -> IncidentState:
    return IncidentState(incident_id="inc-1", alerts=list(alerts), opened_at=NOW, evidence=list(evidence))


def test_the_incidents_reads_say_who_it_saw_never_its_alert_labels() -> None:
    state = _incident(
        _ev(
            "k8s.list_pods_on_node",
            {"node": NODE},
            [
                _pod("tenant-acme", "train-0", NODE, "acme"),
                _pod("supply-agent-system", "agent", NODE, "ops", True),
            ],
        ),
        # The node-agent reports a pod bound to a GPU; a read of that pod says whose it is.
        _ev(
            "nvml.gpu_health",
            {"node": NODE},
            {"report": {"gpus": [{"index": 0, "pods": ["tenant-b/job-1"]}]}},
        ),
        _ev(
            "k8s.get_pod", {"namespace": "tenant-b", "pod": "job-1"}, _pod("tenant-b", "job-1", None, "beryl")
        ),
        # Reads of elsewhere (a model exploring) make nobody affected.
        _ev(
            "k8s.list_pods_on_node", {"node": "west-a100-00004"}, [_pod("tenant-cobalt", "s", "w4", "cobalt")]
        ),
        _ev("k8s.get_pod", {"namespace": "tenant-d", "pod": "d"}, _pod("tenant-d", "d", "w4", "dune")),
        # A failed read says nothing.
        _ev(
            "k8s.get_pod",
            {"namespace": "tenant-e", "pod": "e"},
            _pod("tenant-e", "e", NODE, "ember"),
            ok=False,
        ),
    )
    assert observed_customers(state) == {"acme", "beryl"}
    assert incident_pods(state) == frozenset()  # a GPU alert's pod label is the exporter's attribution
    # The step's own node counts too (a late node of a multi-node incident).
    assert "cobalt" in observed_customers(state, "west-a100-00004")


def test_a_pod_incidents_pod_is_its_subject_and_its_read_says_whose() -> None:
    state = _incident(
        _ev(
            "k8s.get_pod",
            {"namespace": "tenant-acme", "pod": "train-0"},
            _pod("tenant-acme", "train-0", "n9", "acme"),
        ),
        alerts=(CRASH,),
    )
    assert incident_pods(state) == {"tenant-acme/train-0"}
    assert observed_customers(state) == {"acme"}


class _Kube:
    """Nothing the gate's world needs beyond ``read_world`` (patched): the latches read as unset."""


def _runtime(world: WorldView, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setattr(runtime_module, "read_world", lambda kube, now, alerting: world)
    monkeypatch.setattr(runtime_module, "enrich", lambda w, kube, nodes: w)
    monkeypatch.setattr(runtime_module, "read_breaker", lambda kube: (False, ""))
    return Runtime(
        kube=_Kube(),  # type: ignore[arg-type]
        executor=SimpleNamespace(decision_revision=lambda: "r7@3"),  # type: ignore[arg-type]
        audit=SimpleNamespace(records=lambda: [], for_decision=lambda since, iid: ([], [])),  # type: ignore[arg-type]
        ledger=None,  # type: ignore[arg-type]
        outbox=None,  # type: ignore[arg-type]
        playbooks=PLAYBOOKS,
        clock=lambda: NOW,
        write_lock=threading.RLock(),
    )


def _gate(state: IncidentState, rt: Runtime, customer: str, planner: str = "anthropic") -> Decision:
    pending = Proposal(
        kind="act",
        tool="notify.customer",
        params={"customer": customer, "subject": "s", "body": "b"},
        planner=planner,
        runbook_step="notify-customer",
    )
    state = state.model_copy(update={"pending": pending, "playbook_id": "xid-fallen-off-bus"})
    deps = GraphDeps(runtime=rt, planner=None)  # type: ignore[arg-type]
    decision = gate_node.gate(state, deps)["steps"][-1].decision
    assert decision is not None and decision.world_revision == "r7@3"
    return decision


def test_the_gate_node_gives_the_gate_what_the_incident_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the graph's gate node and the hands: after the drain the node holds only its node-agent;
    the pod listing before it saw acme, so acme is told; cobalt, named by the alert, is denied."""
    drained = fleet((AGENT,), observed=None).model_copy(update={"subject_nodes": frozenset()})
    rt = _runtime(drained, monkeypatch)
    listed = _ev("k8s.list_pods_on_node", {"node": NODE}, [_pod("tenant-acme", "train-0", NODE, "acme")])
    state = _incident(listed)
    d = _gate(state, rt, "acme")
    assert d.verdict == Verdict.ALLOW and d.reasons == WITHIN, d.reasons
    d = _gate(state, rt, "cobalt")
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "customer cobalt", NODE, IDENTITY), d.reasons
    # Before any listing, acme is unaffected too: nothing on the node, nothing seen.
    d = _gate(_incident(), rt, "acme", planner="runbook")
    assert d.verdict == Verdict.DENY and says(d, Verdict.DENY, "customer acme", IDENTITY)


def test_a_pod_alerts_node_label_and_customer_label_are_not_who_is_affected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = WorldView(now=NOW, nodes={NODE: NodeView(name=NODE, pool="west", gpus=8, pods=(AGENT, LOOPING))})
    rt = _runtime(world, monkeypatch)
    state = _incident(alerts=(CRASH,))
    pending = {"playbook_id": "tenant-crashloop"}
    for customer, verdict in (("acme", Verdict.ALLOW), ("cobalt", Verdict.DENY)):
        p = Proposal(
            kind="act",
            tool="notify.customer",
            params={"customer": customer, "subject": "s", "body": "b"},
            planner="anthropic",
        )
        s = state.model_copy(update={**pending, "pending": p})
        d = gate_node.gate(s, GraphDeps(runtime=rt, planner=None))["steps"][-1].decision  # type: ignore[arg-type]
        assert d is not None and d.verdict == verdict, (customer, d.reasons)


def test_other_writes_do_not_need_the_incidents_record(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    rt = _runtime(fleet((AGENT, ACME)), monkeypatch)
    real = rt.decide

    def spy(action: Action, alerting: frozenset[str], subject: frozenset[str], **kw: Any) -> Decision:
        seen.append(kw)
        return real(action, alerting, subject, **kw)

    monkeypatch.setattr(rt, "decide", spy)
    p = Proposal(kind="act", tool="k8s.cordon_node", params={"node": NODE}, planner="runbook")
    s = _incident().model_copy(update={"pending": p, "playbook_id": "xid-fallen-off-bus"})
    gate_node.gate(s, GraphDeps(runtime=rt, planner=None))  # type: ignore[arg-type]
    _gate(_incident(), rt, "acme")
    # The incident's pods go with every write (a pod's status confirms a pod's fault); the customers its
    # reads saw only with a write addressed to a customer.
    assert seen == [
        {"pods": frozenset()},
        {"pods": frozenset(), "observed": frozenset(), "customer_nodes": frozenset({NODE})},
    ]
