"""A fault is confirmed from a second source before the first write: a pod's own status in the
cluster (its container waiting in CrashLoopBackOff, or last ended OOMKilled), and for an XID that leaves
the GPU healthy the node-agent's own NVML events, not only the alert."""

from __future__ import annotations

import pytest

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
