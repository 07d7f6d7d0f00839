"""Triage (which playbook, how severe) and the first reads: what the alert says and what the node shows."""

from __future__ import annotations

import time
from typing import Any

from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes.common import entry
from supply_agent.mind.triage import (
    first_reads,
    match_playbook,
    nothing_asked,
    observed,
    severity,
    summarise_read,
    symptom_absent,
)
from supply_agent.models.incident import Evidence, IncidentState
from tools.catalogue import FRESH_METERS
from tools.kubernetes import ToolError


def triage(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    pbs = deps.runtime.playbooks
    pb = match_playbook(pbs, state.alerts)
    sev = severity(pb, state.alerts)
    nodes = state.nodes()
    where = (
        f" on {len(nodes)} node(s): {', '.join(nodes[:5])}{'…' if len(nodes) > 5 else ''}" if nodes else ""
    )
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
            rt.ingest_meters(incident_id, 0)
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


def investigate(state: IncidentState, deps: GraphDeps) -> dict[str, Any]:
    pbs = deps.runtime.playbooks
    evidence = [
        read_evidence(deps, state.incident_id, t, p, "investigate", None, "investigate")
        for t, p in first_reads(state.alert)
    ]
    timeline = [entry(deps, "investigate", "evidence", f"{e.tool}: {e.summary}") for e in evidence]
    probe = state.model_copy(update={"evidence": [*state.evidence, *evidence]})
    pb = pbs.get(state.playbook_id) if state.playbook_id else None
    update: dict[str, Any] = {
        "evidence": evidence,
        "read_budget": state.read_budget - len(evidence),
        "phase": "plan",
    }
    # What the node showed refines the match: NotReady with ControlPlanePathDown is a partition,
    # with HostUnresponsive a dead host.
    conditions, events = observed(probe.evidence, state.alert.node)
    if conditions is not None or events is not None:
        refined = match_playbook(pbs, state.alerts, conditions, events)
        if (refined.id if refined else None) != state.playbook_id:
            timeline.append(
                entry(
                    deps,
                    "investigate",
                    "triage",
                    f"what the node shows changes the playbook: {state.playbook_id or 'none'} → "
                    f"{refined.id if refined else 'none'} (events: {', '.join(events or []) or '-'})",
                )
            )
            pb = refined
            update |= {"playbook_id": pb.id if pb else None, "root_cause": pb.cause if pb else None}
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
