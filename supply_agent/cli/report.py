"""What a person reads: the live timeline, the incident report, and ``--json`` results."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from supply_agent.incidents.agent import RunResult
from supply_agent.incidents.store import IncidentSummary
from supply_agent.models.incident import TimelineEntry

KIND_STYLE = {
    "triage": "bold cyan",
    "evidence": "dim",
    "proposal": "magenta",
    "decision": "yellow",
    "approval": "bold yellow",
    "action": "bold green",
    "verify": "green",
    "handoff": "cyan",
    "scheduled": "bold cyan",
    "skip": "dim",
    "escalate": "bold red",
    "resolve": "bold green",
    "no_action": "bold blue",
}
VERDICT_STYLE = {"allow": "green", "ask": "yellow", "deny": "red"}
OUTCOME_STYLE = {"mitigated": "bold green", "escalated": "bold red", "no_action": "bold blue"}


def timeline_printer(console: Console) -> Any:
    """A callback for :class:`Agent` that prints each timeline entry as it happens."""

    def show(incident_id: str, entry: TimelineEntry) -> None:
        style = KIND_STYLE.get(entry.kind, "")
        if entry.kind == "decision":
            style = VERDICT_STYLE.get(str(entry.data.get("verdict", "")), "yellow")
        console.print(
            f"[dim]{entry.at.strftime('%H:%M:%S')}[/] [dim]{incident_id}[/] "
            f"[{style}]{entry.kind:>9}[/] {entry.text}",
            highlight=False,
            soft_wrap=True,
        )

    return show


def result_json(result: RunResult) -> dict[str, Any]:
    """``--json``: incident id, outcome, root cause, proposals with decisions, actions with results."""
    s = result.state
    summary = s.summary or {}
    return {
        "incident_id": s.incident_id,
        "status": result.status,
        "outcome": s.outcome,
        "root_cause": s.root_cause,
        "playbook": s.playbook_id,
        "severity": s.severity,
        "escalation_reason": s.escalation_reason,
        "handoff": s.handoff,
        "pending_approval": result.pending.model_dump(mode="json") if result.pending else None,
        "waiting": result.waiting.model_dump(mode="json") if result.waiting else None,
        "proposals": summary.get("proposals", []),
        "actions": summary.get("actions", []),
        "evidence": summary.get("evidence", []),
        "llm": summary.get("llm", {}),
        "agent_s": round(result.agent_s, 4),
        "io_s": round(result.io_s, 4),
    }


def results_table(results: list[RunResult], title: str = "incidents handled") -> Table:
    table = Table(title=title)
    for col in ("incident", "alert", "nodes", "playbook", "outcome", "actions"):
        table.add_column(col, overflow="fold")
    for r in results:
        s = r.state
        acted = [
            f"{st.action.tool.split('.', 1)[1]}{'✓' if st.verified else '✗' if st.verified is False else ''}"
            for st in s.steps
            if st.outcome in ("executed", "duplicate")
        ]
        outcome = s.outcome or (
            "awaiting approval"
            if r.pending
            else f"{r.waiting.tool} at {r.waiting.until:%H:%M:%S}"
            if r.waiting
            else r.status
        )
        nodes = s.nodes()
        table.add_row(
            s.incident_id,
            s.alert.alertname,
            f"{len(nodes)}: {nodes[0]}{'…' if len(nodes) > 1 else ''}" if nodes else "-",
            s.playbook_id or "-",
            f"[{OUTCOME_STYLE.get(outcome, '')}]{outcome}[/]",
            ", ".join(acted) or "-",
        )
    return table


def incidents_table(rows: list[IncidentSummary]) -> Table:
    table = Table(title=f"{len(rows)} incident(s)")
    for col in ("id", "opened", "alert", "playbook", "severity", "status", "outcome", "root cause"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r.id,
            r.opened_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.alertname,
            r.playbook_id or "-",
            r.severity,
            r.status + (f" (merged into {r.folded_into})" if r.folded_into else ""),
            f"[{OUTCOME_STYLE.get(r.outcome or '', '')}]{r.outcome or '-'}[/]",
            r.root_cause or "-",
        )
    return table


def timeline_table(incident: IncidentSummary, entries: list[TimelineEntry]) -> Table:
    table = Table(title=f"{incident.id}: {incident.title} ({incident.outcome or incident.status})")
    for col in ("time", "step", "what", "detail"):
        table.add_column(col, overflow="fold")
    for e in entries:
        style = KIND_STYLE.get(e.kind, "")
        if e.kind == "decision":
            style = VERDICT_STYLE.get(str(e.data.get("verdict", "")), "yellow")
        table.add_row(e.at.strftime("%H:%M:%S"), e.node, f"[{style}]{e.kind}[/]", e.text)
    return table


def dead_letters_table(rows: list[dict[str, Any]]) -> Table:
    """Jobs and events that failed for good: what, for which incident, how often tried, and why. The
    error text came from outside (an API's message, an alert's field): shown as text, never markup."""
    from rich.text import Text

    table = Table(title=f"{len(rows)} dead letter(s)")
    for col in ("when", "what", "incident", "attempts", "error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["when"])[:19],
            Text(str(r["what"])),
            Text(str(r["incident"] or "-")),
            str(r["attempts"]),
            Text(str(r["error"] or "")),
        )
    return table
