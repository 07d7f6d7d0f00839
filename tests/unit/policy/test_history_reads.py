"""A decision reads the audit rows of its budget windows and of its own incident, and the nodes out now
(``audit_nodes_out``), not the whole log: for any log, it decides exactly as it would on the whole log.

The logs are written through the real ``AuditLog`` (SQLite): writes of every kind (out of service, hand
back, a pod deleted, a credit) across five incidents and twenty nodes, up to five days old, executed,
failed or still in flight (a write in flight is a recent one: one left in flight before the windows is
the one case the two reads may count differently, see ``history_from_audit``).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from sandbox.executor.audit import AuditLog, AuditRecord, NodeOutRow
from supply_agent.models import Action
from supply_agent.policy.gate import agent_out_nodes, decide, history_from_audit, lookback
from tests.unit.policy.test_gate import NOW, PLAYBOOKS, make_world

WORLD = make_world(pools=2, per_pool=10)
NODES = sorted(WORLD.nodes)
TOOLS = (
    "k8s.cordon_node",
    "k8s.cordon_node",
    "k8s.uncordon_node",
    "k8s.uncordon_node",
    "k8s.drain_node",
    "k8s.taint_node",
    "k8s.delete_pod",
    "billing.issue_credit",
)

write = st.tuples(
    st.integers(0, 5 * 24 * 60),  # minutes ago
    st.sampled_from(TOOLS),
    st.sampled_from(NODES),
    st.integers(0, 4),  # the incident
    st.sampled_from(["executed", "executed", "failed", "in flight"]),
)


def _targets(tool: str, node: str) -> dict[str, Any]:
    view = WORLD.nodes[node]
    customers = list(view.customers())
    if tool == "billing.issue_credit":
        return {"nodes": [], "customers": customers[:1], "dollars": "40", "gpus": 0}
    return {"nodes": [node], "customers": customers, "gpus": view.gpus}


def _fill(audit: AuditLog, writes: list[tuple[int, str, str, int, str]]) -> None:
    with audit.engine.begin() as conn:
        conn.execute(delete(AuditRecord))
        conn.execute(delete(NodeOutRow))
    for i, (ago, tool, node, incident, how) in enumerate(sorted(writes, key=lambda w: -w[0])):
        if how == "in flight" and ago > 12 * 60:
            how = "executed"  # one left in flight is recent (the executor's own recovery ends older ones)
        common = {
            "at": NOW - timedelta(minutes=ago),
            "incident_id": f"inc-{incident}",
            "step": i,
            "tool": tool,
            "action_hash": f"{i:064x}",
            "idempotency_key": f"key-{i}",
            "params": {"node": node},
            "verdict": "allow",
            "targets": _targets(tool, node),
        }
        audit.append(phase="before", outcome="pending", **common)
        if how != "in flight":
            audit.append(phase="after", outcome=how, **common)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    writes=st.lists(write, max_size=30),
    tool=st.sampled_from(["k8s.cordon_node", "k8s.drain_node", "billing.issue_credit", "k8s.delete_pod"]),
    node=st.sampled_from(NODES),
    incident=st.integers(0, 5),
)
def test_a_decision_on_the_windows_and_the_nodes_out_is_the_decision_on_the_whole_log(
    tmp_path_factory: Any, writes: list[tuple[int, str, str, int, str]], tool: str, node: str, incident: int
) -> None:
    audit = _audit(tmp_path_factory.getbasetemp())
    _fill(audit, writes)
    whole = history_from_audit(audit.records(), WORLD)
    rows, out = audit.for_decision(NOW - lookback(PLAYBOOKS.limits), f"inc-{incident}")
    read = history_from_audit(rows, WORLD, nodes_out=out)
    assert len(rows) <= len(audit.records())
    assert agent_out_nodes(read) == agent_out_nodes(whole)
    # The table is what the log's finished writes say (one in flight counts from its row in the window).
    if not any(how == "in flight" and ago <= 12 * 60 for ago, _, _, _, how in writes):
        assert {r.node for r in out} == agent_out_nodes(whole)
    params: dict[str, Any] = {"node": node}
    if tool == "billing.issue_credit":
        params = {"customer": WORLD.nodes[node].customers()[0], "amount_usd": "40", "reason": "x"}
    elif tool == "k8s.delete_pod":
        pod = next(p for p in WORLD.nodes[node].pods if not p.daemonset)
        params = {"namespace": pod.namespace, "pod": pod.name}
    action = Action(tool=tool, params=params, incident_id=f"inc-{incident}", step=999, proposed_by="human")
    a, b = decide(action, WORLD, whole, PLAYBOOKS), decide(action, WORLD, read, PLAYBOOKS)
    assert (a.verdict, a.reasons, a.limits_consulted) == (b.verdict, b.reasons, b.limits_consulted)


_AUDITS: dict[Path, AuditLog] = {}


def _audit(base: Path) -> AuditLog:
    if base not in _AUDITS:
        _AUDITS[base] = AuditLog.from_url(f"sqlite:///{base / 'history-reads.db'}")
        _AUDITS[base].clock = lambda: NOW
    return _AUDITS[base]


def test_an_old_cordon_still_counts_and_a_hand_back_ends_it(tmp_path: Path) -> None:
    """The case the windows alone get wrong: a node cordoned a week ago is still out of service (and
    counts against its pool), until it is handed back."""
    audit = AuditLog.from_url(f"sqlite:///{tmp_path / 'a.db'}")
    node = NODES[0]
    _fill(audit, [(7 * 24 * 60, "k8s.cordon_node", node, 1, "executed")])
    rows, out = audit.for_decision(NOW - lookback(PLAYBOOKS.limits), "inc-2")
    assert rows == [] and [r.node for r in out] == [node]
    assert agent_out_nodes(history_from_audit(rows, WORLD, nodes_out=out)) == {node}
    _fill(
        audit,
        [
            (7 * 24 * 60, "k8s.cordon_node", node, 1, "executed"),
            (60, "k8s.uncordon_node", node, 1, "executed"),
        ],
    )
    rows, out = audit.for_decision(NOW - lookback(PLAYBOOKS.limits), "inc-2")
    assert out == [] and agent_out_nodes(history_from_audit(rows, WORLD, nodes_out=out)) == set()
