"""The runbook planner over every affected entity: an incident holding several nodes with the same fault
gets each runbook step for each node, with that node's alert's labels, before the cursor moves on; and
XID 154's recovery action decides whether there is anything to do at all. Pure: no graph, no cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from supply_agent.mind.planners.base import PlanContext
from supply_agent.mind.planners.runbook import RunbookPlanner, affected
from supply_agent.mind.triage import nothing_asked
from supply_agent.models import Action
from supply_agent.models.incident import AlertIn, Evidence, IncidentState, StepRecord, TimelineEntry
from supply_agent.policy import load_playbooks

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PLAYBOOKS = load_playbooks(Path(__file__).resolve().parents[3] / "playbooks")
CTX = PlanContext(playbooks=PLAYBOOKS, now=NOW)


def _xid(node: str, code: int = 48, gpu: int = 2, customer: str = "") -> AlertIn:
    labels = {"node": node, "xid": str(code), "gpu": str(gpu)}
    if customer:
        labels["customer"] = customer
    return AlertIn(alertname="GPUXidError", labels=labels, fingerprint=f"{node}-{code}")


def _node_read(node: str, ok: bool = True) -> Evidence:
    return Evidence(tool="k8s.get_node", params={"node": node}, ok=ok, summary="", result={"name": node})


def _state(*alerts: AlertIn, seen: bool = True, **extra: Any) -> IncidentState:
    """An incident of these alerts; with ``seen``, each node already read (it exists)."""
    reads = [_node_read(a.node) for a in alerts if a.node] if seen else []
    extra["evidence"] = [*reads, *extra.get("evidence", [])]
    return IncidentState(incident_id="i1", alerts=list(alerts), opened_at=NOW, playbook_id="xid-ecc", **extra)


def _did(state: IncidentState, step: str, tool: str, subject: str, **params: Any) -> IncidentState:
    action = Action(tool=tool, params=params, incident_id="i1", step=len(state.steps), proposed_by="runbook")
    rec = StepRecord(
        index=len(state.steps),
        action=action,
        planner="runbook",
        runbook_step=step,
        subject=subject,
        outcome="executed",
    )
    return state.model_copy(update={"steps": [*state.steps, rec]})


def _read(state: IncidentState, step: str, tool: str, subject: str, result: Any = None) -> IncidentState:
    ev = Evidence(
        tool=tool,
        params={"node": subject},
        ok=True,
        summary="",
        result=result,
        runbook_step=step,
        subject=subject,
    )
    return state.model_copy(update={"evidence": [*state.evidence, ev]})


def test_each_node_gets_the_step_before_the_cursor_moves() -> None:
    a, b = _xid("node-a", customer="ember"), _xid("node-b", gpu=6, customer="cobalt")
    pb = PLAYBOOKS.get("xid-ecc")
    assert pb is not None
    assert [x.node for x in affected(_state(a, b), pb)] == ["node-a", "node-b"]
    cordon = next(i for i, s in enumerate(pb.runbook) if s.tool == "k8s.cordon_node")
    state = _state(a, b, runbook_cursor=cordon)
    first = RunbookPlanner().propose(state, CTX)
    assert first.params == {"node": "node-a"} and first.subject == "node-a" and first.more
    state = _did(state, pb.runbook[cordon].name or "", "k8s.cordon_node", "node-a", node="node-a")
    second = RunbookPlanner().propose(state, CTX)
    assert second.params == {"node": "node-b"} and second.subject == "node-b" and not second.more


def test_a_read_step_repeats_per_node_and_a_notice_uses_that_nodes_labels() -> None:
    a, b = _xid("node-a", customer="ember"), _xid("node-b", gpu=6, customer="cobalt")
    pb = PLAYBOOKS.get("xid-ecc")
    assert pb is not None
    state = _state(a, b)
    p = RunbookPlanner().propose(state, CTX)
    assert p.tool == "nvml.gpu_health" and p.subject == "node-a" and p.more
    state = _read(state, p.runbook_step or "", "nvml.gpu_health", "node-a")
    p = RunbookPlanner().propose(state, CTX)
    assert p.tool == "nvml.gpu_health" and p.subject == "node-b" and not p.more
    notify = next(i for i, s in enumerate(pb.runbook) if s.tool == "notify.customer")
    state = _state(a, b, runbook_cursor=notify)
    state = _did(state, pb.runbook[notify].name or "", "notify.customer", "node-a", customer="ember")
    # Who to tell is the cluster's to say: node-b is listed first, then its customer is told.
    p = RunbookPlanner().propose(state, CTX)
    assert p.tool == "k8s.list_pods_on_node" and p.params == {"node": "node-b"}
    pods = [{"namespace": "tenant-cobalt", "name": "train-0", "customer": "cobalt", "daemonset": False}]
    state = _read(state, "", "k8s.list_pods_on_node", "node-b", pods)
    p = RunbookPlanner().propose(state, CTX)
    assert p.params["customer"] == "cobalt" and p.subject == "node-b"


def test_who_is_told_comes_from_the_cluster_never_from_the_alerts_labels() -> None:
    """dcgm-exporter's pod attribution can be stale: an alert naming cobalt on a GPU running acme's pod
    tells acme, and credits acme's pod, never cobalt."""
    a = _xid("node-a", customer="cobalt")
    a = a.model_copy(update={"labels": {**a.labels, "namespace": "tenant-cobalt", "pod": "old-pod"}})
    pb = PLAYBOOKS.get("xid-ecc")
    assert pb is not None
    notify = next(i for i, s in enumerate(pb.runbook) if s.tool == "notify.customer")
    state = _state(a, runbook_cursor=notify)
    pods = [
        {"namespace": "tenant-acme", "name": "infer-1", "customer": "acme", "daemonset": False},
        {"namespace": "supply-agent-system", "name": "node-agent-x", "customer": None, "daemonset": True},
    ]
    state = _read(state, "", "k8s.list_pods_on_node", "node-a", pods)
    report = {"node": "node-a", "gpus": [{"index": 2, "pods": ["tenant-acme/infer-1"]}]}
    state = state.model_copy(
        update={
            "evidence": [
                *state.evidence,
                Evidence(
                    tool="nvml.gpu_health",
                    params={"node": "node-a"},
                    ok=True,
                    summary="",
                    result={"node": "node-a", "available": True, "report": report},
                ),
            ]
        }
    )
    p = RunbookPlanner().propose(state, CTX)
    assert p.tool == "notify.customer" and p.params["customer"] == "acme"
    credit = next((i for i, s in enumerate(pb.runbook) if s.tool.startswith("billing.")), None)
    if credit is not None:
        p = RunbookPlanner().propose(state.model_copy(update={"runbook_cursor": credit}), CTX)
        assert "cobalt" not in str(p.params) and "old-pod" not in str(p.params)


def test_a_node_that_joins_is_read_first_and_left_out_if_the_cluster_has_none() -> None:
    a, ghost = _xid("node-a", customer="ember"), _xid("ghost-1", customer="cobalt")
    pb = PLAYBOOKS.get("xid-ecc")
    assert pb is not None
    state = _state(a, ghost, seen=False)
    first = RunbookPlanner().propose(state, CTX)
    assert (first.tool, first.params, first.runbook_step) == ("k8s.get_node", {"node": "ghost-1"}, None)
    state = state.model_copy(update={"evidence": [_node_read("ghost-1", ok=False)]})
    assert [x.node for x in affected(state, pb)] == ["node-a"]
    p = RunbookPlanner().propose(state, CTX)
    assert p.tool == "nvml.gpu_health" and p.subject is None  # one node: planned as before


def test_one_node_is_planned_as_before() -> None:
    p = RunbookPlanner().propose(_state(_xid("node-a", customer="ember")), CTX)
    assert p.subject is None and not p.more


def test_a_skip_or_hand_off_counts_as_done_for_its_node() -> None:
    a, b = _xid("node-a"), _xid("node-b")
    pb = PLAYBOOKS.get("xid-ecc")
    assert pb is not None
    last = len(pb.runbook) - 1
    assert pb.runbook[last].tool == "escalate.human"
    name = pb.runbook[last].name
    handed = TimelineEntry(
        at=NOW, node="read", kind="handoff", text="", data={"runbook_step": name, "subject": "node-a"}
    )
    state = _state(a, b, runbook_cursor=last, timeline=[handed])
    p = RunbookPlanner().propose(state, CTX)
    assert p.subject == "node-b" and "node-b" in str(p.params)


def _gpu_report(node: str, gpu: int, action: str | None) -> Evidence:
    report = {"node": node, "gpus": [{"index": gpu, "recovery_action": action}]}
    return Evidence(
        tool="nvml.gpu_health",
        params={"node": node},
        ok=True,
        summary="",
        result={"available": True, "report": report},
    )


def test_xid_154_asks_nothing_only_on_a_fresh_none() -> None:
    alert = _xid("node-a", code=154, gpu=0)
    assert nothing_asked(_state(alert, evidence=[_gpu_report("node-a", 0, "none")]))
    assert nothing_asked(_state(alert, evidence=[_gpu_report("node-a", 0, "reset")])) is None
    assert nothing_asked(_state(alert, evidence=[_gpu_report("node-a", 0, None)])) is None  # not read
    assert nothing_asked(_state(alert, evidence=[_gpu_report("node-a", 3, "none")])) is None  # another GPU
    assert nothing_asked(_state(alert)) is None  # nothing read yet
    other = _xid("node-a", code=48, gpu=0)
    assert nothing_asked(_state(other, evidence=[_gpu_report("node-a", 0, "none")])) is None


def _skipped(state: IncidentState, step: str | None, subject: str | None) -> IncidentState:
    """The planner passed over a step for one node (nothing to do there)."""
    skip = TimelineEntry(
        at=NOW, node="read", kind="skip", text="", data={"runbook_step": step, "subject": subject}
    )
    return state.model_copy(update={"timeline": [*state.timeline, skip]})


def test_a_node_that_joins_late_gets_the_steps_the_first_node_already_had() -> None:
    """The second node's alert joined while the first node's drain waited for approval: before the
    cursor moves on, the second node gets every earlier step the first one had (its cordon included)."""
    a, b = _xid("node-a"), _xid("node-b", gpu=6)
    pb = PLAYBOOKS.get("xid-ecc")
    assert pb is not None
    cordon = next(i for i, s in enumerate(pb.runbook) if s.tool == "k8s.cordon_node")
    state = _state(a, runbook_cursor=cordon + 1)
    for i, st in enumerate(pb.runbook[: cordon + 1]):  # the first node had them, before b joined
        if st.tool == "k8s.cordon_node":
            state = _did(state, st.name or "", st.tool, "node-a", node="node-a")
        else:
            state = _skipped(state, st.name, None)
        assert i <= cordon
    # Recorded without a subject (it was the only node then): that counts as the first node's.
    state = state.model_copy(
        update={
            "alerts": [a, b],
            "steps": [s.model_copy(update={"subject": None}) for s in state.steps],
            "evidence": [*state.evidence, _node_read("node-b")],
        }
    )
    seen = []
    for _ in range(len(pb.runbook) * 2):
        p = RunbookPlanner().propose(state, CTX)
        if p.runbook_step not in {s.name for s in pb.runbook[: cordon + 1]}:
            break
        assert p.subject == "node-b", p
        seen.append(p.tool)
        if p.kind == "act" and p.tool == "k8s.cordon_node":
            assert p.params == {"node": "node-b"} and p.more
            state = _did(state, p.runbook_step or "", p.tool, "node-b", node="node-b")
        else:
            state = _skipped(state, p.runbook_step, "node-b")
    assert "k8s.cordon_node" in seen
