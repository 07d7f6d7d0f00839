"""Incidents about what several nodes share, on the sandbox fleet: the cluster's node labels say which
rack a node is in, alerts of a rack fold into one incident naming it (also when a node joins late), and
a pod's alert on a dead node is the node's incident."""

from __future__ import annotations

from pathlib import Path

from supply_agent.incidents.topology import component_incident_base
from tests.support.agent_harness import harness

RACK = "supply-agent.io/rack"


def test_a_racks_nodes_throttling_are_one_incident_and_a_late_node_joins_it(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        nodes = h.nodes()[:5]
        racks = {h.fleet.node(n)["metadata"]["labels"][RACK] for n in nodes}
        assert len(racks) == 1, racks
        for n in nodes[:4]:
            h.inject("thermal", node=n, gpu=0)
        [result] = h.handle("auto", advance_s=420)
        state = result.state
        assert (state.playbook_id, state.outcome) == ("rack-cooling", "escalated"), state.escalation_reason
        assert state.component is not None and state.component.name == racks.pop()
        assert state.component.nodes == sorted(nodes[:4])
        assert state.component.name in (state.escalation_reason or "")
        assert [s for s in state.steps if s.outcome == "executed"] == []
        assert result.incident_id == component_incident_base("rack", state.component.name)
        # A fifth node of the rack throttles later: its alert joins the rack's incident, no new page.
        h.inject("thermal", node=nodes[4], gpu=3)
        assert h.handle("auto", advance_s=420) == []
        joined = {a.node for a in h.agent.store.alerts_for(result.incident_id)}
        assert nodes[4] in joined
        truth = h.truth()
        assert sum(p["nodes_tainted"] + p["nodes_cordoned"] for p in truth["pools"].values()) == 0


def test_a_pods_alert_on_a_dead_node_is_the_nodes_incident(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        ns, pod, node = h.tenant_pod()
        h.inject("notready", node=node)
        h.admin.advance(330)
        h.inject("stuck-terminating", namespace=ns, pod=pod)
        [result] = h.handle("auto", advance_s=660)
        state = result.state
        assert state.playbook_id == "node-notready", [a.alertname for a in state.alerts]
        names = {a.alertname for a in h.agent.store.alerts_for(result.incident_id)}
        assert "KubePodStuckTerminating" in names and "KubeNodeNotReady" in names
        assert "k8s.delete_pod" not in {s.action.tool for s in state.steps}


def test_with_the_cluster_refusing_the_fold_goes_on_node_by_node(tmp_path: Path) -> None:
    """The alerts are stored first; the fold's cluster reads (labels, a pod's node) failing must not fail
    the fold: it folds node by node, and after the first failure it asks the cluster nothing more."""
    with harness(tmp_path) as h:
        nodes = h.nodes()[:4]
        for n in nodes:
            h.inject("thermal", node=n, gpu=0)
        ns, pod, _ = h.tenant_pod(nodes[0])
        h.inject("crashloop", namespace=ns, pod=pod)
        alerts = h.alerts(advance_s=960)
        assert {"GPUThermalThrottling", "KubePodCrashLooping"} <= {a.alertname for a in alerts}
        h.admin.outage(60.0, "refuse")
        try:
            new, touched = h.agent.fold(alerts)
        finally:
            h.admin.outage(0)
        assert {s.component for s in new} == {None}
        assert sorted(s.alert.node for s in new if s.alert.alertname == "GPUThermalThrottling") == sorted(
            nodes
        )
        assert any(s.alert.pod == (ns, pod) for s in new), [s.alert.alertname for s in new]
        assert len(touched) == len(new)
