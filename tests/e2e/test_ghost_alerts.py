"""End to end on the sandbox fleet: alerts naming nodes the cluster does not have ("ghosts": a stale
rule for decommissioned nodes, or alerts not from this cluster) never make one real fault a mass
failure. Measured before: one real XID next to four ghosts was escalated as a mass failure (5 of 24
nodes alerting is over the fleet's 20%) instead of handled."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from supply_agent.incidents.agent import RunResult
from supply_agent.models.incident import AlertIn, parse_alerts
from supply_agent.service.terminal import TerminalApprover
from tests.e2e.test_agent import executed, node
from tests.support.agent_harness import APPROVER, Harness, harness

GHOSTS = [f"ghost-{i}" for i in range(1, 5)]
NOTE = "4 alerting nodes not in the cluster ignored for mass-failure counting: ghost-1, ghost-2, ghost-3, ghost-4"


def _stale_rule_bodies() -> list[dict[str, Any]]:
    """Alertmanager webhooks for nodes that were decommissioned (their series linger)."""
    return [
        {
            "version": "4",
            "groupKey": f'{{}}:{{node="{g}"}}',
            "status": "firing",
            "receiver": "supply-agent",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "KubeNodeNotReady", "node": g, "severity": "critical"},
                    "annotations": {"summary": f"{g} is NotReady"},
                    "startsAt": "2026-01-01T00:00:00Z",
                }
            ],
        }
        for g in GHOSTS
    ]


def _same_xid_bodies(h: Harness, real: str) -> list[dict[str, Any]]:
    """The real XID's Alertmanager webhook again, once per ghost, naming the ghost instead."""
    out = []
    for body in h.admin.alerts("alertmanager"):
        for alert in body["alerts"]:
            if alert["labels"].get("node") != real:
                continue
            for g in GHOSTS:
                clone = copy.deepcopy(body)
                a = copy.deepcopy(alert)
                a["labels"].update(node=g, Hostname=g)
                a.pop("fingerprint", None)
                clone["alerts"] = [a]
                out.append(clone)
    assert len(out) == len(GHOSTS), "the fleet raised no alert for the injected XID"
    return out


def _handle(h: Harness, bodies: list[dict[str, Any]]) -> list[RunResult]:
    alerts: list[AlertIn] = h.alerts(advance_s=1800)  # the real XID, as the fleet's Alertmanager sends it
    for body in bodies:
        alerts += parse_alerts(body)[0]
    return h.agent.handle(alerts, TerminalApprover("auto", APPROVER, h.env.runtime.clock))


def _the_real_incident(results: list[RunResult], real: str) -> RunResult:
    hits = [r for r in results if real in r.state.nodes()]
    assert len(hits) == 1, [r.state.nodes() for r in results]
    return hits[0]


def _no_mass_failure(h: Harness, result: RunResult) -> None:
    state = result.state
    assert state.root_cause != "mass-failure"
    assert not any("mass failure" in r for s in state.steps if s.decision for r in s.decision.reasons)
    cordon = next(s for s in state.steps if s.action.tool == "k8s.cordon_node")
    assert cordon.outcome == "executed" and cordon.decision is not None
    assert any(NOTE in r for r in cordon.decision.reasons), cordon.decision.reasons
    # The ghosts are named as suspicious on the incident's timeline, where a human reads it.
    assert any(NOTE in e.text for e in h.agent.store.timeline(state.incident_id))
    # The fleet's truth: the agent wrote to the real node, and to no other node.
    nodes_written = {w["name"] for w in h.truth()["writes"] if w["resource"] == "nodes" and not w["dry_run"]}
    assert nodes_written == set(result.state.nodes()) - set(GHOSTS), nodes_written


def test_a_real_xid_next_to_four_stale_node_alerts_is_handled(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        real = node(h)
        h.inject("xid", node=real, gpu=1, code=79)
        results = _handle(h, _stale_rule_bodies())
        result = _the_real_incident(results, real)
        assert (result.state.playbook_id, result.state.outcome) == ("xid-fallen-off-bus", "mitigated"), (
            result.state.escalation_reason
        )
        assert {"k8s.cordon_node", "k8s.drain_node"} <= set(executed(result))
        _no_mass_failure(h, result)
        # The ghosts' own incidents write nothing: their nodes are not in the fleet.
        for other in results:
            if other is not result:
                assert not [s for s in other.state.steps if s.outcome == "executed"], other.state.steps


def test_ghosts_of_the_same_xid_fold_in_but_do_not_short_circuit(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        real = node(h)
        h.inject("xid", node=real, gpu=1, code=79)
        result = _the_real_incident(_handle(h, _same_xid_bodies(h, real)), real)
        assert result.state.nodes() == sorted([real, *GHOSTS])  # one incident: the XID groups by code
        assert executed(result)[:1] == ["k8s.cordon_node"]
        _no_mass_failure(h, result)


def test_ghosts_of_the_same_xid_fold_in_and_the_incident_is_mitigated(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        real = node(h)
        h.inject("xid", node=real, gpu=1, code=79)
        result = _the_real_incident(_handle(h, _same_xid_bodies(h, real)), real)
        assert result.state.outcome == "mitigated", result.state.escalation_reason
