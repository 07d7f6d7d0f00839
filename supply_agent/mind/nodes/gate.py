"""Asking the containment gate about a proposed write (the mind never decides it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes.common import entry, short
from supply_agent.models import Action, Decision, Verdict
from supply_agent.models.incident import Evidence, IncidentState, Proposal, StepRecord
from supply_agent.policy.gate import CUSTOMER_WRITES


def incident_pods(state: IncidentState) -> frozenset[str]:
    """The pods the incident is about ("namespace/name"), from its pod alerts. The names are the alerts'
    (the gate looks them up in the cluster); who owns them is the pod's label there, never the alert's."""
    return frozenset("/".join(pod) for a in state.alerts if (pod := a.pod) is not None)


def customer_nodes(state: IncidentState, subject: str | None = None) -> frozenset[str]:
    """The nodes whose tenants the incident affects: those its node and GPU alerts name, and the step's
    own node (unless only pod alerts name it). A pod alert's node label is where the pod runs, and the other tenants
    there are not affected by the pod's crash loop: the pod's owner is (by the pod, see
    ``incident_pods``), also when the step is about that pod's node."""
    named = frozenset(a.node for a in state.alerts if a.node and a.pod is None)
    pods_only = {a.node for a in state.alerts if a.node and a.pod is not None} - named
    return frozenset({subject} - pods_only) if subject else named


def observed_customers(state: IncidentState, subject: str | None = None) -> frozenset[str]:
    """The customers this incident's own reads from the cluster saw with tenant pods on its nodes (those
    its alerts name, and the step's own node) or among its pods: the pods on those nodes a listing
    showed, the pods the node-agent reported bound to their GPUs, and the pods the incident is about, as
    a read of each pod labels them. Pods a drain evicted, or a dead node lost, are gone from the cluster
    but still here: their customers are told and credited. Only trusted reads count (their answers are the
    cluster's records, not text from an alert or a log), and only for the incident's own nodes and pods,
    so a model that read some other customer's pod cannot make that customer affected."""
    nodes = set(customer_nodes(state, subject))
    pods = set(incident_pods(state))
    good = [ev for ev in state.evidence if ev.ok]
    for ev in _reads(good, "nvml.gpu_health", nodes):
        report = (ev.result.get("report") if isinstance(ev.result, dict) else None) or {}
        for gpu in report.get("gpus") or []:
            bound = gpu.get("pods") if isinstance(gpu, dict) else None
            pods.update(str(p) for p in bound or [] if isinstance(p, str))
    seen: set[str] = set()
    for ev in _reads(good, "k8s.list_pods_on_node", nodes):
        for pod in ev.result if isinstance(ev.result, list) else []:
            if isinstance(pod, dict) and pod.get("customer") and not pod.get("daemonset"):
                seen.add(str(pod["customer"]))
    for ev in good:
        r = ev.result
        if ev.tool != "k8s.get_pod" or not isinstance(r, dict) or not r.get("customer"):
            continue
        on_node = r.get("node") in nodes and not r.get("daemonset")
        if on_node or f"{r.get('namespace')}/{r.get('name')}" in pods:
            seen.add(str(r["customer"]))
    return frozenset(seen)


def _reads(evidence: Iterable[Evidence], tool: str, nodes: set[str]) -> Iterable[Evidence]:
    return (ev for ev in evidence if ev.tool == tool and ev.params.get("node") in nodes)


def decide(state: IncidentState, deps: GraphDeps, action: Action, step_subject: str | None) -> Decision:
    """The gate's decision on one of the incident's actions, on the world as it is now. The subject is
    the step's own node when the incident has several (a notice is about the node it follows). For a
    write addressed to a customer (the gate's identity rule) the gate also gets the pods the incident is
    about and the customers its own reads saw (the only writes that need the scan)."""
    rt = deps.runtime
    subject = frozenset({step_subject}) if step_subject else frozenset(state.nodes())
    who: dict[str, Any] = {"pods": incident_pods(state)}  # a pod's status confirms a pod's fault
    if action.tool in CUSTOMER_WRITES:
        who["observed"] = observed_customers(state, step_subject)
        who["customer_nodes"] = customer_nodes(state, step_subject)
    return rt.decide(action, deps.alerting_nodes(rt.clock()), subject, **who)


def action_of(state: IncidentState, p: Proposal) -> Action:
    """The action a proposal is, as the next step of the incident (what the gate and the executor see)."""
    assert p.tool is not None
    return Action(
        tool=p.tool,
        params=p.params,
        incident_id=state.incident_id,
        step=len(state.steps) + 1,
        playbook_id=state.playbook_id,
        proposed_by=p.planner,
        reason=p.reason[:500],
    )


def gate(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    rt = deps.runtime
    p = state.pending
    assert p is not None and p.tool is not None
    action = action_of(state, p)
    index = action.step
    owner = deps.human_owner(state.incident_id)
    record = StepRecord(
        index=index,
        action=action,
        planner=p.planner,
        runbook_step=p.runbook_step,
        more=p.more,
        subject=p.subject,
    )
    prior = [
        s
        for s in state.steps
        if s.runbook_step and s.runbook_step == p.runbook_step and s.subject == p.subject
    ]
    record.attempts = len(prior) + 1
    if owner:
        record.outcome = "refused"
        record.error = f"{owner} took the incident: the agent makes no more writes on it"
        return {
            "steps": [*state.steps, record],
            "timeline": [entry(deps, "gate", "decision", record.error)],
        }
    with rt.write_lock:
        # The step's own node when the incident has several (a notice is about the node it follows).
        decision = decide(state, deps, action, p.subject)
    record.decision = decision
    unenforced = not rt.enforce_gate and decision.verdict != Verdict.ALLOW
    if unenforced:
        pass  # the --no-gate ablation: the decision is logged below and the action goes ahead
    elif decision.verdict == Verdict.DENY:
        record.outcome = "denied"
    elif decision.verdict == Verdict.ASK:
        record.approval_state = "pending"
    root: str | None = state.root_cause
    if any("mass failure" in r for r in decision.reasons):
        root = "mass-failure"
    text = f"{decision.verdict.value.upper()} {action.tool} {short(action.params)}" + (
        f": {'; '.join(decision.reasons)}" if decision.reasons else ""
    )
    if unenforced:
        text = "NOT ENFORCED (--no-gate ablation): " + text
    return {
        "steps": [*state.steps, record],
        "root_cause": root,
        "timeline": [
            entry(
                deps,
                "gate",
                "decision",
                text,
                verdict=decision.verdict.value,
                reasons=list(decision.reasons),
                limits=list(decision.limits_consulted),
                targets=decision.targets.model_dump(mode="json", exclude_defaults=True),
                step=index,
            )
        ],
    }


def after_gate(state: IncidentState, deps: GraphDeps) -> str:
    last = state.steps[-1]
    if last.outcome in ("denied", "refused"):
        return "escalate"
    return "approval" if last.approval_state == "pending" else "execute"
