"""Alerts of nodes that share a component fold into one incident about it: which component the cluster's
labels put each node in, how many nodes it has, and which playbook answers for that symptom there."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supply_agent.incidents.topology import fold_by_component, incident_id_of
from supply_agent.models.incident import AlertIn
from supply_agent.policy import load_playbooks

PLAYBOOKS = load_playbooks(Path(__file__).resolve().parents[3] / "playbooks")
RACK, SWITCH, DRIVER = "supply-agent.io/rack", "supply-agent.io/switch", "nvidia.com/cuda.driver-version.full"
POOL = "supply-agent.io/pool"


def _fleet(n: int = 32, new_driver: frozenset[int] = frozenset()) -> dict[str, dict[str, str]]:
    """Two racks of 16; a leaf switch per 8 nodes straddling half racks (4..11, 12..19, ...)."""
    return {
        f"n{i:02d}": {
            RACK: f"rack-{i // 16}",
            SWITCH: f"leaf-{(i + 4) // 8}",
            DRIVER: "560.35.03" if i in new_driver else "550.127.05",
            POOL: "east" if i < 32 else "west",
        }
        for i in range(n)
    }


def _fold(alerts: list[AlertIn], fleet: Mapping[str, Mapping[str, str]]):  # type: ignore[no-untyped-def]
    reads: list[str] = []

    def labels_of(node: str) -> Mapping[str, str] | None:
        reads.append(node)
        return fleet.get(node)

    def size_of(label: str, value: str) -> int:
        return sum(1 for labels in fleet.values() if labels.get(label) == value)

    groups, rest = fold_by_component(alerts, PLAYBOOKS, labels_of, size_of)
    return groups, rest, reads


def _a(name: str, node: str, **labels: str) -> AlertIn:
    return AlertIn(alertname=name, labels={"node": node, **labels})


def test_a_rack_that_throttles_is_one_incident_naming_the_rack() -> None:
    alerts = [_a("GPUThermalThrottling", f"n{i:02d}", gpu=str(g)) for i in range(6) for g in (0, 5)]
    groups, rest, reads = _fold(alerts, _fleet())
    assert rest == []
    [g] = groups
    assert (g.component.kind, g.component.name, g.component.size) == ("rack", "rack-0", 16)
    assert g.component.nodes == [f"n{i:02d}" for i in range(6)]
    assert g.playbook.id == "rack-cooling" and g.alerts == alerts
    assert sorted(set(reads)) == sorted({a.node for a in alerts if a.node})  # one read per alerting node


def test_half_a_rack_down_is_the_rack_not_the_two_leaves_it_straddles() -> None:
    alerts = [_a(name, f"n{i:02d}") for i in range(16, 24) for name in ("KubeNodeNotReady", "NodeDown")]
    groups, rest, _ = _fold(alerts, _fleet())
    [g] = groups
    assert (g.component.kind, g.component.name, g.playbook.id) == ("rack", "rack-1", "rack-power")
    assert rest == [] and len(g.alerts) == 16


def test_every_node_behind_a_leaf_is_the_leaf() -> None:
    alerts = [_a("KubeNodeUnreachable", f"n{i:02d}") for i in range(4, 12)]
    [g], _, _ = _fold(alerts, _fleet())
    assert (g.component.kind, g.component.name, g.playbook.id) == ("switch", "leaf-1", "switch-down")


def test_the_nodes_that_took_a_new_driver_are_the_rollout() -> None:
    rolled = frozenset({1, 9, 17, 25})  # one per leaf, two per rack: only the driver explains them all
    alerts = [_a("GPUXidError", f"n{i:02d}", gpu="0", xid="119") for i in sorted(rolled)]
    [g], rest, _ = _fold(alerts, _fleet(new_driver=rolled))
    assert (g.component.kind, g.component.name, g.playbook.id) == ("driver", "560.35.03", "driver-rollout")
    assert rest == []
    # The same XID on the driver everyone runs is no rollout (the gate's mass-failure limit is the line).
    groups, rest, _ = _fold(alerts, _fleet())
    assert groups == [] and rest == alerts


def test_unrelated_faults_in_one_rack_and_ghost_nodes_fold_by_node() -> None:
    alerts = [
        _a("GPUXidError", "n01", gpu="0", xid="48"),
        _a("KubeNodeDiskPressure", "n02"),
        _a("GPUThermalThrottling", "n03", gpu="1"),
        # nodes the cluster does not have count for nothing, whatever rack their alerts claim
        *[_a("GPUThermalThrottling", f"ghost-{i}", gpu="0", rack="rack-0") for i in range(4)],
    ]
    groups, rest, _ = _fold(alerts, _fleet())
    assert groups == [] and rest == alerts


def test_too_few_of_a_big_component_is_not_its_fault() -> None:
    fleet = _fleet(64)
    alerts = [_a("GPUThermalThrottling", f"n{i:02d}", gpu="0") for i in (0, 20, 40)]  # three racks
    groups, rest, _ = _fold(alerts, fleet)
    assert groups == [] and rest == alerts


def test_a_component_has_one_stable_incident_id() -> None:
    alerts = [_a("GPUThermalThrottling", f"n{i:02d}", gpu="0") for i in range(4)]
    [g1], _, _ = _fold(alerts, _fleet())
    [g2], _, _ = _fold(list(reversed(alerts)), _fleet())
    assert incident_id_of(g1.component) == incident_id_of(g2.component)


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 31), max_size=12), st.sets(st.integers(0, 31), max_size=6))
def test_no_alert_is_lost_or_doubled_and_each_group_meets_the_threshold(
    thermal: set[int], down: set[int]
) -> None:
    alerts = [_a("GPUThermalThrottling", f"n{i:02d}", gpu="0") for i in sorted(thermal)]
    alerts += [_a("KubeNodeNotReady", f"n{i:02d}") for i in sorted(down)]
    groups, rest, _ = _fold(alerts, _fleet())
    folded = [a for g in groups for a in g.alerts] + rest
    assert sorted(map(id, folded)) == sorted(map(id, alerts))
    topo = PLAYBOOKS.limits.topology
    for g in groups:
        assert len(g.component.nodes) >= topo.min_nodes
        assert len(g.component.nodes) * 100 >= topo.min_fraction * g.component.size
        assert {a.node for a in g.alerts} <= set(g.component.nodes)


def test_a_quarter_of_a_pool_over_racks_and_leaves_is_the_pool() -> None:
    # Two per rack, one per leaf, the driver everyone runs: only the pool explains them.
    spread = [1, 9, 17, 25, 30, 14, 6, 22]
    alerts = [_a("GPUThermalThrottling", f"n{i:02d}", gpu="0") for i in spread]
    [g], rest, _ = _fold(alerts, _fleet(64))
    assert (g.component.kind, g.component.name, g.playbook.id) == ("pool", "east", "pool-wide")
    assert g.playbook.cause == "mass-failure" and rest == []
    # A whole small pool that is one rack is the rack: the kind listed first wins a tie.
    small = {f"n{i:02d}": {RACK: "rack-0", POOL: "tiny"} for i in range(12)}
    hot = [_a("GPUThermalThrottling", f"n{i:02d}", gpu="0") for i in range(4)]
    [g], _, _ = _fold(hot, small)
    assert (g.component.kind, g.playbook.id) == ("rack", "rack-cooling")


@pytest.mark.parametrize("kind", ["rack", "switch", "driver", "pool"])
def test_every_component_kind_has_a_playbook_and_a_label(kind: str) -> None:
    assert kind in PLAYBOOKS.limits.topology.components
    assert any(kind in pb.topology for pb in PLAYBOOKS)


# -- alerts no playbook knows by name (a stock rule's) ------------------------------------------------------
def _stock(node: str) -> AlertIn:
    return AlertIn(alertname="GPUXIDError", labels={"Hostname": node, "gpu": "0", "modelName": "H100"})


def _shown_as(name: str, calls: list[str]):  # type: ignore[no-untyped-def]
    def shown(a: AlertIn) -> tuple[bool, AlertIn | None]:
        calls.append(a.node or "")
        if not name:
            return True, None  # read: the GPU shows nothing
        labels = {"node": a.node or "", "gpu": "0"} | ({"xid": "119"} if name == "GPUXidError" else {})
        return True, AlertIn(alertname=name, labels=labels, source="agent")

    return shown


def test_an_unknown_gpu_alert_folds_by_what_the_gpus_show() -> None:
    fleet = _fleet()

    def size_of(label: str, value: str) -> int:
        return sum(1 for labels in fleet.values() if labels.get(label) == value)

    alerts = [_stock(f"n{i:02d}") for i in range(6)]  # six nodes of rack-0, the same stock page on each
    hot: list[str] = []
    [g], rest = fold_by_component(
        alerts, PLAYBOOKS, fleet.get, size_of, _shown_as("GPUThermalThrottling", hot)
    )
    assert (g.component.kind, g.playbook.id, rest) == ("rack", "rack-cooling", [])
    assert sorted(set(hot)) == [f"n{i:02d}" for i in range(6)]  # each alerting node's GPU read
    xid: list[str] = []
    groups, rest = fold_by_component(alerts, PLAYBOOKS, fleet.get, size_of, _shown_as("GPUXidError", xid))
    # An XID on six nodes of a rack (under a fifth of the pool) is not the rack's cooling: node by node.
    assert groups == [] and rest == alerts
    # Unread (no node-agent), it is either GPU alert: still one incident, the component's.
    [g], rest = fold_by_component(alerts, PLAYBOOKS, fleet.get, size_of)
    assert g.playbook.topology and rest == []
    # Read, and healthy (a utilisation or power rule across a rack): no component's fault.
    groups, rest = fold_by_component(alerts, PLAYBOOKS, fleet.get, size_of, _shown_as("", []))
    assert groups == [] and rest == alerts
    # A known alert is never read for it.
    known: list[str] = []
    fold_by_component(
        [_a("GPUThermalThrottling", f"n{i:02d}", gpu="0") for i in range(6)],
        PLAYBOOKS,
        fleet.get,
        size_of,
        _shown_as("GPUXidError", known),
    )
    assert known == []


def test_the_folds_gpu_reads_never_fail_it_and_stop_at_the_first_failure() -> None:
    from supply_agent.incidents.fold_reads import FoldReads

    asked: list[str] = []

    def broken(node: str) -> object:
        asked.append(node)
        raise TimeoutError("node-agent timed out")

    reads = FoldReads(kube=None, gpu_health=broken)  # type: ignore[arg-type]
    assert reads.shown(_stock("n00")) == (False, None) and reads.shown(_stock("n01")) == (False, None)
    assert asked == ["n00"]  # one node-agent's wait per fold, not one per node
    silent: list[str] = []

    def unanswered(node: str) -> object:
        silent.append(node)
        return {"node": node, "available": False, "reason": "no node-agent pod"}

    quiet = FoldReads(kube=None, gpu_health=unanswered)  # type: ignore[arg-type]
    assert quiet.shown(_stock("n00")) == (False, None) and quiet.shown(_stock("n01")) == (False, None)
    assert silent == ["n00"]  # a node-agent that does not answer counts as down too
    lost = {
        "node": "n02",
        "available": True,
        "report": {"gpus": [{"index": 0, "lost": True, "xid_events": []}]},
    }
    read, found = FoldReads(kube=None, gpu_health=lambda node: lost).shown(_stock("n02"))  # type: ignore[arg-type]
    assert read and found is not None and (found.alertname, found.labels["xid"]) == ("GPUXidError", "79")
