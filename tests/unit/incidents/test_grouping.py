"""The one folding rule: which alerts are one incident, when an alert joins an old one, and ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from supply_agent.incidents.grouping import (
    group_alerts,
    grouping_key,
    incident_id_for,
    join_window,
    next_incident_id,
)
from supply_agent.models.incident import AlertIn

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _a(name: str, status: str = "firing", **labels: str) -> AlertIn:
    return AlertIn(alertname=name, status=status, labels=labels)  # type: ignore[arg-type]


def test_classes_fold_by_their_own_key() -> None:
    xid_a, xid_b = _a("GPUXidError", node="n1", xid="79"), _a("GPUXidError", node="n2", xid="79")
    other_xid = _a("GPUXidError", node="n1", xid="48")
    agents = [_a("NodeAgentDown", node=f"n{i}") for i in range(5)]
    pods = [_a("KubePodCrashLooping", namespace="t", pod=p, node="n1") for p in ("p1", "p2")]
    node_down = [_a("KubeNodeNotReady", node="n3"), _a("NodeDown", node="n3")]
    groups = group_alerts([xid_a, xid_b, other_xid, *agents, *pods, *node_down])
    assert [len(g) for g in groups] == [2, 1, 5, 1, 1, 2]
    assert grouping_key(xid_a) == grouping_key(xid_b) != grouping_key(other_xid)


def test_ids_are_stable_and_step_past_closed_incidents() -> None:
    group = [_a("KubeNodeNotReady", node="n3")]
    assert incident_id_for(group) == incident_id_for([_a("NodeDown", node="n3")])
    pd = [AlertIn(alertname="X", source="pagerduty", source_id="P123")]
    assert incident_id_for(pd) == "pd-P123"
    closed = {"inc-1", "inc-1-2"}
    assert next_incident_id("inc-1", closed.__contains__) == "inc-1-3"
    assert next_incident_id("inc-9", closed.__contains__) == "inc-9"


def test_who_looks_for_an_old_incident_and_since_when() -> None:
    window = timedelta(minutes=15)
    assert join_window(_a("X", "resolved"), NOW, None) == (True, None)
    assert join_window(_a("X", "resolved"), NOW, window) == (True, None)
    assert join_window(_a("X"), NOW, None) == (False, None)
    assert join_window(_a("X"), NOW, window) == (True, NOW - window)


def test_an_xid_that_follows_another_joins_it_on_the_same_gpu() -> None:
    """NVIDIA's catalogue: 45 is the cleanup after an earlier error and 154 announces the recovery another
    XID needs; on the same GPU they are that fault's incident. Alone, or on another GPU, they are not."""
    off_bus = _a("GPUXidError", node="n1", gpu="3", xid="79")
    cleanup = _a("GPUXidError", node="n1", gpu="3", xid="45")
    recovery = _a("GPUXidError", node="n1", gpu="3", xid="154")
    elsewhere = _a("GPUXidError", node="n1", gpu="5", xid="45")
    groups = group_alerts([off_bus, cleanup, recovery, elsewhere])
    assert groups == [[off_bus, cleanup, recovery], [elsewhere]]
    assert group_alerts([cleanup]) == [[cleanup]]
