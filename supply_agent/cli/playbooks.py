"""``supply-agent playbooks``: validate the playbook YAML the gate and the runbook planner follow."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from supply_agent.policy import GlobalLimits, Playbook, PlaybookSet, check, format_duration, load_playbooks


def register(cli_group: click.Group) -> None:
    """Add the ``playbooks`` command group to ``cli_group``."""
    cli_group.add_command(playbooks)


@click.group("playbooks")
def playbooks() -> None:
    """Playbooks: per incident class a runbook and containment rules, plus fleet-wide limits."""


@playbooks.command("check")
@click.argument(
    "directory", required=False, default="playbooks", type=click.Path(file_okay=False, path_type=Path)
)
def check_command(directory: Path) -> None:
    """Validate every playbook in DIRECTORY (default: playbooks/); list every error as FILE:LINE: FIELD:
    MESSAGE and exit 1 when there is any."""
    errors = check(directory)
    if errors:
        for error in errors:
            click.echo(str(error))
        files = len({e.file for e in errors})
        click.echo(f"{len(errors)} error(s) in {files} file(s)", err=True)
        raise SystemExit(1)
    _summary(load_playbooks(directory), directory)


def _matches(pb: Playbook) -> str:
    clauses = []
    for m in pb.match:
        parts = []
        if m.alertnames:
            parts.append(" | ".join(m.alertnames))
        if m.xids:
            parts.append("xid " + ",".join(map(str, m.xids)))
        parts += [f"{k}={v}" for k, v in m.labels.items()]
        parts += [f"{k}!={'|'.join(vs)}" for k, vs in m.exclude_labels.items()]
        parts += [f"{k}={v}" for k, v in m.node_conditions.items()]
        if m.node_events:
            parts.append("event " + "|".join(m.node_events))
        clauses.append(" ".join(parts))
    return "\n".join(clauses)


def _limits_line(limits: GlobalLimits) -> str:
    br, cb, mf = limits.blast_radius, limits.circuit_breaker, limits.mass_failure
    return (
        f"kill switch {'ON' if limits.kill_switch else 'off'}; "
        f"denied namespaces {', '.join(limits.deny.namespaces)}; "
        f"pool cordoned ≤{br.pool_cordoned.soft:.0%}/{br.pool_cordoned.hard:.0%}, "
        f"fleet ≤{br.fleet_cordoned.soft:.0%}/{br.fleet_cordoned.hard:.0%} (soft/hard); "
        f"mass failure > {mf.max_unhealthy_pool} of a pool or {mf.max_unhealthy_fleet} of the fleet; "
        f"breaker {cb.percentage:g}% in {format_duration(cb.duration)} or {cb.failed_verifications} failed verifications; "
        f"{len(limits.approvals.approvers)} approver(s), ttl {format_duration(limits.approvals.ttl)}"
    )


def _writes(pb: Playbook) -> str:
    """Write tools, short names; ``*`` marks a step that needs a human's approval."""
    out = []
    for step in pb.runbook:
        if step.tool in pb.write_tools:
            short = step.tool.split(".", 1)[1] if step.tool.startswith("k8s.") else step.tool
            out.append(short + ("*" if step.requires_approval else ""))
    return "\n".join(out) or "(read-only)"


def _summary(pset: PlaybookSet, directory: Path) -> None:
    table = Table(title=f"{len(pset)} playbooks in {directory}  (* needs approval)")
    table.add_column("id", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("matches", overflow="fold")
    table.add_column("steps", justify="right")
    table.add_column("writes", overflow="fold")
    for pb in pset:
        table.add_row(pb.id, pb.severity, _matches(pb), str(len(pb.runbook)), _writes(pb))
    console = Console()
    console.print(table)
    console.print(_limits_line(pset.limits), highlight=False)
    console.print("[green]ok[/green]: no errors")
