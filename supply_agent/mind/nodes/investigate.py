"""Triage (which playbook, how severe) and the first reads: what the alert says and what the node shows."""

from __future__ import annotations

import time
from typing import Any

from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes.common import entry
from supply_agent.mind.triage import (
    confirm_reads,
    first_reads,
    match_playbook,
    node_fault,
    nothing_asked,
    observed,
    observed_group,
    pod_fault,
    pod_gpu_fault,
    severity,
    summarise_read,
    symptom_absent,
)
from supply_agent.models.incident import AlertIn, Evidence, IncidentState
from tools.catalogue import FRESH_METERS
from tools.kubernetes import ToolError


def triage(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    pbs = deps.runtime.playbooks
    c = state.component
    pb = match_playbook(pbs, state.alerts, component=c.kind if c else None)
    sev = severity(pb, state.alerts)
    nodes = state.nodes()
    where = (
        f" on {len(nodes)} node(s): {', '.join(nodes[:5])}{'…' if len(nodes) > 5 else ''}" if nodes else ""
    )
    if c is not None:
        where += f", all in {c.kind} {c.name} ({len(c.nodes)} of its {c.size} nodes; its {c.label} label)"
    text = (
        f"{state.alert.alertname}{where}: playbook {pb.id} ({pb.title}), severity {sev}"
        if pb
        else f"{state.alert.alertname}{where}: no playbook matches, severity {sev}"
    )
    return {
        "playbook_id": pb.id if pb else None,
        "severity": sev,
        "root_cause": pb.cause if pb else None,
        "phase": "investigate",
        "read_budget": deps.max_reads,
        "timeline": [entry(deps, "triage", "triage", text, playbook=pb.id if pb else None)],
    }


def read_evidence(
    deps: GraphDeps,
    incident_id: str,
    tool: str,
    params: dict[str, Any],
    node: str,
    step: str | None,
    planner: str,
) -> Evidence:
    rt = deps.runtime
    t0 = time.perf_counter()
    try:
        if tool in FRESH_METERS:  # the ledger first takes in the meters as they read now (audited)
            # Only the meters the read is about (its customer's, or its pod's namespace's).
            scope = {k: str(params[k]) for k in ("customer", "namespace") if params.get(k)}
            rt.ingest_meters(incident_id, 0, scope)
        value = rt.read(tool, params)
        summary, untrusted = summarise_read(tool, value)
        ok = True
    except (ToolError, ValueError, KeyError) as exc:
        value, summary, untrusted, ok = None, f"failed: {exc}", False, False
    return Evidence(
        tool=tool,
        params=params,
        ok=ok,
        summary=summary,
        result=value,
        untrusted=untrusted,
        ms=(time.perf_counter() - t0) * 1000,
        runbook_step=step,
        planner=planner,
    )


def _behind_the_pod(state: IncidentState, deps: GraphDeps, evidence: list[Evidence]) -> AlertIn | None:
    """For a pod's alert: read the node-agent of the node the cluster says the pod runs on (appended to
    ``evidence``, with the node itself); the GPU fault it reports on the pod's GPU, if any."""
    pod = state.alert.pod if state.alert.source != "agent" else None
    if pod is None:
        return None
    read = next(
        (e for e in evidence if e.tool == "k8s.get_pod" and e.ok and isinstance(e.result, dict)), None
    )
    node = read.result.get("node") if read is not None and isinstance(read.result, dict) else None
    if not node:
        return None
    evidence.append(
        read_evidence(
            deps, state.incident_id, "nvml.gpu_health", {"node": node}, "investigate", None, "investigate"
        )
    )
    found = pod_gpu_fault(evidence, pod[0], pod[1], str(node))
    if found is not None:
        evidence += [
            read_evidence(deps, state.incident_id, t, p, "investigate", None, "investigate")
            for t, p in first_reads(found)
            if t != "nvml.gpu_health"
        ]
    return found


def investigate(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    pbs = deps.runtime.playbooks
    evidence = [
        read_evidence(deps, state.incident_id, t, p, "investigate", None, "investigate")
        for t, p in first_reads(state.alert)
    ]
    pb = pbs.get(state.playbook_id) if state.playbook_id else None
    update: dict[str, Any] = {"phase": "plan"}
    timeline = []
    found = _behind_the_pod(state, deps, evidence)
    if found is None and pb is None and state.alert.source != "agent":
        # An alert no playbook knows by name and labels: what its pod, or its node, shows is the incident.
        found = pod_fault(evidence, state.alert) or node_fault(evidence, state.alert)
    if found is not None:
        # Diagnosis changes the plan: the pod's symptom is its GPU's hardware fault, so the incident is
        # that node's hardware incident (the pod's alert stays, as its symptom).
        alerts = [found, *state.alerts]
        refined = match_playbook(pbs, alerts)
        timeline.append(
            entry(
                deps,
                "investigate",
                "triage",
                f"diagnosis changes the playbook: {state.playbook_id or 'none'} → {refined.id if refined else 'none'}"
                f" ({found.annotations['summary']})",
            )
        )
        pb = refined
        update |= {
            "alerts": alerts,
            "playbook_id": pb.id if pb else None,
            "root_cause": pb.cause if pb else None,
        }
        state = state.model_copy(update={"alerts": alerts, "playbook_id": update["playbook_id"]})
    timeline = [entry(deps, "investigate", "evidence", f"{e.tool}: {e.summary}") for e in evidence] + timeline
    probe = state.model_copy(update={"evidence": [*state.evidence, *evidence]})
    update |= {"evidence": evidence, "read_budget": state.read_budget - len(evidence)}
    # What the node showed refines the match: NotReady with ControlPlanePathDown is a partition,
    # with HostUnresponsive a dead host.
    conditions, events = observed(probe.evidence, state.alert.node)
    group = observed_group(probe.evidence, state.alert.node, pbs)
    if conditions is not None or events is not None or group is not None:
        kind = state.component.kind if state.component else None
        refined = match_playbook(pbs, state.alerts, conditions, events, kind, group)
        if (refined.id if refined else None) != state.playbook_id:
            in_group = f"; node group {group}" if group else ""
            timeline.append(
                entry(
                    deps,
                    "investigate",
                    "triage",
                    f"what the node shows changes the playbook: {state.playbook_id or 'none'} → "
                    f"{refined.id if refined else 'none'} (events: {', '.join(events or []) or '-'}{in_group})",
                )
            )
            pb = refined
            update |= {"playbook_id": pb.id if pb else None, "root_cause": pb.cause if pb else None}
    confirming = [
        read_evidence(deps, state.incident_id, t, p, "investigate", None, "investigate")
        for t, p in confirm_reads(state.alert, pb)
    ]
    if confirming:
        timeline += [entry(deps, "investigate", "evidence", f"{e.tool}: {e.summary}") for e in confirming]
        evidence = [*evidence, *confirming]
        probe = probe.model_copy(update={"evidence": [*probe.evidence, *confirming]})
        update |= {"evidence": evidence, "read_budget": state.read_budget - len(evidence)}
    asked_nothing = nothing_asked(probe) if pb is not None else None
    absent = asked_nothing or symptom_absent(probe, pb)
    if absent:
        # The fault is there and its own guidance asks nothing (XID 154 with recovery action none): the
        # playbook's class is the cause. Otherwise the alert's fault is not there at all.
        cause = pb.cause if asked_nothing and pb is not None else "no-fault"
        update |= {"outcome": "no_action", "root_cause": cause, "phase": "summarise"}
        timeline.append(entry(deps, "investigate", "no_action", f"nothing to do: {absent}"))
    update["timeline"] = timeline
    return update
