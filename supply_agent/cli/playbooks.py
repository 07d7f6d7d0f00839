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
        if m.xid_buckets:
            parts.append("xid bucket " + "|".join(m.xid_buckets))
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


# What each immediate bucket of NVIDIA's Xid Catalog asks of the node (xid_buckets.csv): stay in
# service (the application's problem, or nothing at all), or go out of service until a human acts.
IN_SERVICE_BUCKETS = frozenset({"RESTART_APP", "IGNORE", "WORKFLOW_XID_45"})
_OUT_OF_SERVICE_TOOLS = frozenset({"k8s.cordon_node", "k8s.drain_node", "k8s.taint_node"})


def xid_response(pset: PlaybookSet, code: int) -> dict[str, object]:
    """What the agent does for one XID: the catalogue's entry, the bucket that counts, the playbook
    that matches and why, whether the node leaves service, and whether that is what the bucket asks."""
    from supply_agent.policy.xids import bucket_of, lookup

    entry = lookup(code)
    bucket = bucket_of(code)
    counted = bucket or pset.limits.xid_uncatalogued
    hits = pset.match("GPUXidError", {"xid": str(code), "node": "<node>"})
    pb = hits[0] if hits else None
    how = "no playbook"
    if pb is not None:
        named = any(code in m.xids for m in pb.match)
        how = (
            f"names XID {code}"
            if named
            else f"matches the bucket {counted}"
            + (
                ""
                if bucket
                else f" (_global.yaml's xid_uncatalogued: the catalogue has no bucket for {code})"
            )
        )
    tools = [s.tool for s in pb.runbook] if pb else []
    out = bool(set(tools) & _OUT_OF_SERVICE_TOOLS)
    return {
        "xid": code,
        "mnemonic": entry.mnemonic if entry else None,
        "description": entry.description if entry else None,
        "catalogued": entry is not None,
        "bucket": bucket,
        "counted_as": counted,
        "playbook": pb.id if pb else None,
        "why": how,
        "steps": tools,
        "out_of_service": out,
        "pages": "escalate.human" in tools,
        "as_catalogue_says": pb is not None and out != (counted in IN_SERVICE_BUCKETS),
    }


def explain_xid(pset: PlaybookSet, code: int) -> dict[str, object]:
    """`xid_response`, with the text a person reads."""
    r = xid_response(pset, code)
    name = f"XID {code} {r['mnemonic']}" if r["mnemonic"] else f"XID {code} (not in NVIDIA's catalogue)"
    lines = [name]
    if r["description"]:
        lines.append(f"  NVIDIA: {r['description']}")
    lines.append(
        f"  catalogue bucket: {r['bucket'] or 'none'}"
        + (f" -> counted as {r['counted_as']}" if r["bucket"] is None else "")
    )
    if r["playbook"] is None:
        lines.append("  playbook: none: the agent escalates to a human")
    else:
        lines.append(f"  playbook: {r['playbook']} ({r['why']})")
        lines.append(f"  steps: {', '.join(map(str, r['steps']))}")  # type: ignore[call-overload]
        lines.append(
            "  the node: "
            + (
                "taken out of service until a human resets or reboots it"
                if r["out_of_service"]
                else "stays in service"
            )
            + ("; a human is handed the rest" if r["pages"] else "; nobody is paged")
        )
    lines.append(f"  as the catalogue says: {'yes' if r['as_catalogue_says'] else 'NO'}")
    return {**r, "text": "\n".join(lines)}


def xid_table(pset: PlaybookSet) -> Table:
    """Per immediate bucket: the catalogued XIDs, the playbooks answering them, how many are handled as
    the catalogue says (the node in or out of service as the bucket asks)."""
    from supply_agent.policy.xids import load_catalogue

    rows: dict[str, list[dict[str, object]]] = {}
    for entry in load_catalogue().entries:
        r = xid_response(pset, entry.code)
        rows.setdefault(str(r["counted_as"]) + ("" if r["bucket"] else " (no bucket)"), []).append(r)
    table = Table(title="NVIDIA's catalogued XIDs: what the agent does, per resolution bucket")
    for col in ("bucket", "XIDs", "playbooks", "node", "as the catalogue says"):
        table.add_column(col)
    total = ok = 0
    for bucket, rs in sorted(rows.items(), key=lambda kv: -len(kv[1])):
        good = sum(1 for r in rs if r["as_catalogue_says"])
        total, ok = total + len(rs), ok + good
        table.add_row(
            bucket,
            str(len(rs)),
            ", ".join(sorted({str(r["playbook"]) for r in rs})),
            "in service"
            if bucket.split(" ")[0] in IN_SERVICE_BUCKETS
            else "as NVML's recovery action says"
            if bucket == "XID_154"
            else "out of service",
            f"{good}/{len(rs)}",
        )
    table.add_row("all", str(total), "", "", f"{ok}/{total}")
    return table


@playbooks.command("xids")
@click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("playbooks")
)
def xids_command(directory: Path) -> None:
    """Every XID in NVIDIA's catalogue: per resolution bucket, what the agent does, and how many it
    handles as the catalogue says."""
    Console().print(xid_table(load_playbooks(directory)))


def limits_table(
    limits: GlobalLimits, labels: dict[str, str], pool_size: int | None, fleet_size: int | None
) -> tuple[str, Table]:
    """Which node group holds on a node with these labels, and why; and the table of the limits the gate
    applies there (``supply-agent playbooks explain --node``)."""
    from supply_agent.policy.explain import explain

    result = explain(limits, labels, pool_size, fleet_size)
    table = Table(title="the limits the gate applies here")
    for col in ("limit", "fleet-wide", "here", "from"):
        table.add_column(col, overflow="fold")
    for row in result.rows:
        table.add_row(
            row.name, row.fleet, row.here, row.source, style="bold" if row.source != "_global.yaml" else ""
        )
    return result.why, table


def group_choices_table(pset: PlaybookSet, labels: dict[str, str]) -> Table | None:
    """The playbooks' own choices on the node group these labels put a node in: a playbook its match
    names (chosen at triage on such a node) and a playbook's ``containment.node_groups`` rules; None
    when the node is in no group or no playbook chooses anything there."""
    group = pset.limits.group_for(labels)
    if group is None:
        return None
    table = Table(title=f"the playbooks' choices on node group {group.name}")
    for col in ("playbook", "choice"):
        table.add_column(col, overflow="fold")
    for pb in pset:
        if any(group.name in clause.node_groups for clause in pb.match):
            table.add_row(pb.id, "chosen at triage on these nodes (match.node_groups)")
        rule = pb.containment.node_groups.get(group.name)
        if rule is not None:
            table.add_row(pb.id, f"containment: {rule.model_dump(exclude_defaults=True)}")
    return table if table.row_count else None
