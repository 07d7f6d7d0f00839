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


def test_a_rack_that_fails_over_two_deliveries_merges_the_first_nodes_incidents(tmp_path: Path) -> None:
    """Alertmanager sends a group's alerts as they start: two nodes of a rack throttle (below the rack's
    threshold: two node incidents), three more minutes and two more do. The second delivery makes the
    rack qualify: one incident naming it takes the first two nodes' alerts, their incidents are merged
    into it (no more writes there), and an unrelated ECC incident on one of those nodes stays its own."""
    with harness(tmp_path) as h:
        nodes = h.nodes()[:4]
        racks = {h.fleet.node(n)["metadata"]["labels"][RACK] for n in nodes}
        assert len(racks) == 1, racks
        for n in nodes[:2]:
            h.inject("thermal", node=n, gpu=0)
        h.inject("ecc", node=nodes[0], gpu=5)
        first = h.handle("auto", advance_s=420)
        thermal = {r.incident_id for r in first if r.state.alert.alertname == "GPUThermalThrottling"}
        [ecc] = [r.incident_id for r in first if r.state.alert.alertname != "GPUThermalThrottling"]
        assert len(thermal) == 2 and all(r.state.component is None for r in first)
        for n in nodes[2:]:
            h.inject("thermal", node=n, gpu=1)
        [rack] = h.handle("auto", advance_s=360)
        state = rack.state
        assert (state.playbook_id, state.outcome) == ("rack-cooling", "escalated"), state.escalation_reason
        assert state.component is not None and state.component.name == racks.pop()
        assert state.component.nodes == sorted(nodes)
        store = h.agent.store
        linked = {a.node for a in store.alerts_for(rack.incident_id)}
        assert linked == set(nodes)
        for iid in thermal:
            row = store.get(iid)
            assert row is not None and row.folded_into == rack.incident_id
            assert store.alerts_for(iid) == []
            assert any("merged into" in e.text for e in store.timeline(iid))
            # The merged incident is the rack's now: the agent makes no more writes on it.
            assert h.agent.deps.human_owner(iid) is not None
        row = store.get(ecc)
        assert row is not None and row.folded_into is None
        assert {a.alertname for a in store.alerts_for(ecc)} == {"GPUEccUncorrectable"}
        assert h.agent.deps.human_owner(ecc) is None
        assert [s for s in state.steps if s.outcome == "executed"] == []
        # The next delivery (the same alerts again) changes nothing: no new incident, no second merge.
        assert h.handle("auto", advance_s=60) == []
        assert {a.node for a in store.alerts_for(rack.incident_id)} == set(nodes)


def test_an_incident_paused_for_approval_when_merged_makes_no_write_when_approved(tmp_path: Path) -> None:
    """The second node's taint waits for a human (over the GPUs-out soft limit) when the rack's next
    delivery merges its incident: the approval that comes later changes nothing on the node."""
    with harness(tmp_path) as h:
        nodes = h.nodes()[:4]
        for n in nodes[:2]:
            h.inject("thermal", node=n, gpu=0)
        first = h.handle(None, advance_s=420)
        paused = [r for r in first if r.pending is not None]
        assert len(paused) == 1, [(r.incident_id, r.state.outcome) for r in first]
        [waiting] = paused
        node = waiting.state.alert.node
        for n in nodes[2:]:
            h.inject("thermal", node=n, gpu=1)
        results = h.handle(None, advance_s=360)
        rack = next(r for r in results if r.state.component is not None)
        row = h.agent.store.get(waiting.incident_id)
        assert row is not None and row.folded_into == rack.incident_id
        after = h.answer(waiting, approved=True)
        assert after.pending is None and after.state.outcome is not None
        tools = [(s.action.tool, s.outcome) for s in after.state.steps if s.action.tool == "k8s.taint_node"]
        assert tools and tools[-1][1] == "refused", tools
        assert any(rack.incident_id in (s.error or "") for s in after.state.steps)
        # Not silent: the page it holds ends escalated (a human hears of it), not "mitigated".
        assert after.state.outcome == "escalated", after.state.outcome
        assert not h.fleet.node(node)["spec"].get("taints"), h.fleet.node(node)["spec"]
