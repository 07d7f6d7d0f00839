"""A fault is confirmed from a second source before the first write: a pod's own status in the
cluster (its container waiting in CrashLoopBackOff, or last ended OOMKilled), and for an XID that leaves
the GPU healthy the node-agent's own NVML events, not only the alert."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supply_agent.models import Action, Verdict
from supply_agent.policy.gate import decide
from supply_agent.policy.world import History, NodeView, PodRef, WorldView
from tests.unit.policy.test_gate import NOW, PLAYBOOKS

POD = "tenant-acme/train-0"


def _world(waiting: str | None, last: str | None, pods: frozenset[str] = frozenset({POD})) -> WorldView:
    pod = PodRef(
        namespace="tenant-acme",
        name="train-0",
        customer="acme",
        gpus=1,
        waiting_reason=waiting,
        last_termination_reason=last,
    )
    nodes = {
        f"n{i}": NodeView(name=f"n{i}", pool="p", gpus=8, pods=(pod,) if i == 0 else ()) for i in range(6)
    }
    return WorldView(now=NOW, nodes=nodes, subject_pods=pods, observed_customers=frozenset())


def _notice(playbook: str) -> Action:
    return Action(
        tool="notify.customer",
        params={"customer": "acme", "subject": "your pod", "body": "it loops"},
        incident_id="inc-1",
        step=4,
        playbook_id=playbook,
    )


@pytest.mark.parametrize(
    ("playbook", "waiting", "last", "verdict"),
    [
        ("tenant-crashloop", "CrashLoopBackOff", "Error", Verdict.ALLOW),
        ("tenant-crashloop", None, None, Verdict.DENY),  # the pod runs: the alert is stale
        ("tenant-oomkilled", "CrashLoopBackOff", "OOMKilled", Verdict.ALLOW),
        ("tenant-oomkilled", "CrashLoopBackOff", "Error", Verdict.DENY),  # it loops, but not out of memory
    ],
)
def test_the_pods_status_confirms_its_fault(
    playbook: str, waiting: str | None, last: str | None, verdict: Verdict
) -> None:
    d = decide(_notice(playbook), _world(waiting, last), History(), PLAYBOOKS)
    assert d.verdict == verdict, d.reasons
    if verdict == Verdict.DENY:
        assert any("precondition" in r and "pod" in r for r in d.reasons), d.reasons


def test_a_pod_the_cluster_does_not_have_confirms_nothing() -> None:
    d = decide(
        _notice("tenant-crashloop"),
        _world("CrashLoopBackOff", None, frozenset({"tenant-acme/ghost"})),
        History(),
        PLAYBOOKS,
    )
    assert d.verdict == Verdict.DENY
    assert any("none of the incident's pods is in the cluster" in r for r in d.reasons), d.reasons


@pytest.mark.parametrize(
    ("reported", "verdict"), [(frozenset({13}), Verdict.ALLOW), (frozenset(), Verdict.DENY)]
)
def test_an_application_xid_is_told_only_when_the_node_agent_reports_it(
    reported: frozenset[int], verdict: Verdict
) -> None:
    world = _world(None, None).model_copy(
        update={"subject_nodes": frozenset({"n0"}), "reported_xids": {"n0": reported}}
    )
    d = decide(_notice("xid-application"), world, History(), PLAYBOOKS)
    assert d.verdict == verdict, d.reasons
    if verdict == Verdict.DENY:
        assert any("reports no XID event" in r for r in d.reasons), d.reasons


def _pause() -> Action:
    return Action(
        tool="billing.pause_metering",
        params={"namespace": "tenant-acme", "pod": "train-0", "reason": "double metering"},
        incident_id="inc-1",
        step=3,
        playbook_id="double-metering",
    )


@pytest.mark.parametrize(
    ("meters", "verdict", "why"),
    [
        ({POD: 2}, Verdict.ALLOW, None),
        ({POD: 1}, Verdict.DENY, "by 1 running meter(s): nothing is metered twice"),
        ({}, Verdict.DENY, "no meter counts tenant-acme/train-0"),
    ],
)
def test_a_metering_alert_is_confirmed_by_the_meters_before_a_billing_write(
    meters: dict[str, int], verdict: Verdict, why: str | None
) -> None:
    """The alert is a query over the meters (two Prometheus replicas summed double it): metering is
    paused only when the meter feed shows the pod counted by two running meters."""
    world = _world(None, None).model_copy(update={"running_meters": meters})
    d = decide(_pause(), world, History(), PLAYBOOKS)
    assert d.verdict == verdict, d.reasons
    if why is not None:
        assert any("precondition of double-metering unmet" in r and why in r for r in d.reasons), d.reasons


@given(counts=st.dictionaries(st.sampled_from([POD, "tenant-acme/train-1"]), st.integers(0, 4), max_size=2))
def test_no_billing_write_of_double_metering_unless_some_pod_has_two_running_meters(
    counts: dict[str, int],
) -> None:
    world = _world(None, None).model_copy(update={"running_meters": counts})
    for action in (
        _pause(),
        Action(
            tool="billing.issue_credit",
            params={"customer": "acme", "amount_usd": "3.00", "reason": "metered twice"},
            incident_id="inc-1",
            step=4,
            playbook_id="double-metering",
        ),
    ):
        d = decide(action, world, History(), PLAYBOOKS)
        if not any(n > 1 for n in counts.values()):
            assert d.verdict == Verdict.DENY, (action.tool, d.reasons)


def test_a_pods_incident_affects_the_pods_owner_not_the_other_tenants_of_its_node() -> None:
    """A crash-loop alert names the pod's node too: the other tenants there are not affected, so a notice
    to one of them (a customer an alert label or a model named) is denied; the pod's owner is told."""
    from supply_agent.mind.nodes.gate import customer_nodes
    from supply_agent.models.incident import AlertIn, IncidentState

    loop = AlertIn(
        alertname="KubePodCrashLooping", labels={"namespace": "tenant-acme", "pod": "train-0", "node": "n0"}
    )
    state = IncidentState(incident_id="inc-1", alerts=[loop], opened_at=NOW)
    assert customer_nodes(state) == frozenset() and customer_nodes(state, "n0") == frozenset()
    other = PodRef(namespace="tenant-borealis", name="infer-0", customer="borealis", gpus=1)
    world = _world("CrashLoopBackOff", "Error")
    n0 = world.nodes["n0"].model_copy(update={"pods": (*world.nodes["n0"].pods, other)})
    world = world.model_copy(
        update={
            "nodes": {**world.nodes, "n0": n0},
            "subject_nodes": frozenset({"n0"}),
            "customer_nodes": customer_nodes(state),
        }
    )
    told = decide(_notice("tenant-crashloop"), world, History(), PLAYBOOKS)
    assert told.verdict == Verdict.ALLOW, told.reasons
    wrong = _notice("tenant-crashloop").model_copy(
        update={"params": {**_notice("tenant-crashloop").params, "customer": "borealis"}}
    )
    d = decide(wrong, world, History(), PLAYBOOKS)
    assert d.verdict == Verdict.DENY and any("customer borealis has no pods" in r for r in d.reasons), (
        d.reasons
    )
    # Before: the pod alert's node made every tenant there "affected".
    loose = world.model_copy(update={"customer_nodes": None})
    assert decide(wrong, loose, History(), PLAYBOOKS).verdict == Verdict.ALLOW
