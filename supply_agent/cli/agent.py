"""``supply-agent handle`` and ``supply-agent incidents list|show``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from supply_agent.logging import quiet
from supply_agent.models.incident import AlertError, AlertIn, pagerduty_alerts, parse_alerts, read_alert_file
from supply_agent.settings import get_settings


def register(main: click.Group) -> None:
    @main.command("handle")
    @click.argument("alert_file", type=click.Path(dir_okay=False, path_type=Path))
    @click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The cluster (default: SUPPLY_AGENT_KUBECONFIG).",
    )
    @click.option(
        "--approve",
        type=click.Choice(["prompt", "auto", "never"]),
        default="prompt",
        show_default=True,
        help="Answer approvals here: ask on the terminal, approve all, or reject all.",
    )
    @click.option(
        "--planner",
        type=click.Choice(["runbook", "anthropic", "openai", "router"]),
        help="Who proposes steps (default: SUPPLY_AGENT_PLANNER, else runbook).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
    def handle(
        alert_file: Path, kubeconfig: Path | None, approve: str, planner: str | None, as_json: bool
    ) -> None:
        """Handle the alerts in ALERT_FILE (an Alertmanager or PagerDuty V3 webhook body, or alerts in
        the project's own form) on the cluster: investigate, act within the playbooks, verify, report.

        Exit 0 when every incident was handled (mitigated, escalated or no action needed); 2 on a usage
        or input error. With --approve prompt|auto the person at this terminal is the approver."""
        from supply_agent.cli.report import result_json, results_table, timeline_printer
        from supply_agent.incidents.agent import open_agent
        from supply_agent.mind.planners.base import PlannerError
        from supply_agent.mind.planners.factory import make_planner
        from supply_agent.service.terminal import TerminalApprover, default_identity

        settings = get_settings()
        path = kubeconfig or settings.kubeconfig
        if path is None:
            raise click.UsageError("give --kubeconfig (or set SUPPLY_AGENT_KUBECONFIG)")
        if not Path(path).exists():
            raise click.BadParameter(f"{path} does not exist", param_hint="--kubeconfig")
        try:
            alerts, pd_refs = _read_bodies(alert_file)
        except AlertError as exc:
            raise click.BadParameter(str(exc), param_hint="ALERT_FILE") from exc
        try:
            chosen = make_planner(planner or settings.planner, settings)
        except PlannerError as exc:
            raise click.BadParameter(str(exc), param_hint="--planner") from exc
        console = Console(stderr=as_json)
        if settings.log_level != "debug":
            quiet()
        identity = settings.approval_identity or default_identity()
        extra = frozenset({identity}) if approve in ("prompt", "auto") else frozenset()
        with open_agent(
            settings, Path(path), planner=chosen, on_entry=timeline_printer(console), extra_approvers=extra
        ) as (agent, env):
            env.runtime.warm()  # the nodes are listed while the alerts are read and investigated
            if pd_refs:
                alerts = [*alerts, *_pagerduty_details(pd_refs, env)]
            firing: list[AlertIn] = alerts
            if not firing:
                raise click.BadParameter(f"{alert_file}: no alerts in it", param_hint="ALERT_FILE")
            approver = TerminalApprover(approve, identity, env.runtime.clock, console)  # type: ignore[arg-type]
            results = agent.handle(firing, approver)
        if as_json:
            click.echo(json.dumps({"incidents": [result_json(r) for r in results]}, indent=2, default=str))
        else:
            console.print(results_table(results))
            for r in results:
                if r.state.escalation_reason:
                    console.print(f"[bold red]{r.incident_id} escalated:[/] {r.state.escalation_reason}")
                if r.state.handoff:
                    console.print(f"[cyan]{r.incident_id} hand-off:[/] {r.state.handoff}")
        if not results:
            console.print("no new incident: these alerts joined incidents already open (or handled)")

    def _read_bodies(alert_file: Path) -> tuple[list[AlertIn], list[Any]]:
        """The alerts of ALERT_FILE: one webhook body, or a JSON array of them (what `sandbox alerts`
        prints), each element parsed as one body. An array of the project's own alert objects, with no
        webhook body in it, stays what it was: one body."""
        body = read_alert_file(alert_file)
        if not isinstance(body, list) or not any(_is_webhook(b) for b in body):
            if body == []:
                raise AlertError(f"{alert_file}: an empty JSON array: no webhook bodies in it")
            return parse_alerts(body, where=str(alert_file))
        alerts: list[AlertIn] = []
        refs: list[Any] = []
        for i, one in enumerate(body):
            where = f"body [{i}]"
            if not isinstance(one, dict):
                raise AlertError(
                    f"{where}: expected a webhook body (a JSON object), not {type(one).__name__}"
                )
            got, pd = parse_alerts(one, where=where)
            alerts += got
            refs += pd
        return alerts, refs

    def _is_webhook(body: Any) -> bool:
        return isinstance(body, dict) and ("alerts" in body or "event" in body)

    def _pagerduty_details(refs: list[Any], env: Any) -> list[AlertIn]:
        out: list[AlertIn] = []
        for ref in refs:
            if ref.event_type not in ("incident.triggered", "incident.resolved"):
                continue
            if env.sandbox is None:
                raise click.BadParameter(
                    f"PagerDuty incident {ref.incident_id}: a V3 webhook carries no alert details and this "
                    "cluster is not a sandbox fleet; `supply-agent serve` fetches them with the PagerDuty API",
                    param_hint="ALERT_FILE",
                )
            out += pagerduty_alerts(ref, env.sandbox.pagerduty_incident_alerts(ref.incident_id))
        return out

    @main.group("incidents")
    def incidents() -> None:
        """Read the incident store."""

    @incidents.command("list")
    @click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
    @click.option("--status", type=click.Choice(["open", "paused", "closed"]))
    @click.option("--json", "as_json", is_flag=True)
    def incidents_list(limit: int, status: str | None, as_json: bool) -> None:
        """The latest incidents, newest first."""
        from supply_agent.cli.report import incidents_table
        from supply_agent.incidents.store import IncidentStore

        store = IncidentStore.from_url(get_settings().resolved_database_url())
        rows = store.incidents(limit, status)
        if as_json:
            click.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        else:
            Console().print(incidents_table(rows))

    @incidents.command("dead")
    @click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def incidents_dead(limit: int, as_json: bool) -> None:
        """Dead letters: jobs (runs, write-back, prompts) and events that failed for good, newest first."""
        from datetime import UTC, datetime

        from supply_agent.cli.report import dead_letters_table
        from supply_agent.incidents.store import engine_for
        from supply_agent.intake.events import EventLog
        from supply_agent.service.jobs import JobStore

        settings = get_settings()
        jobs = JobStore(engine_for(settings.resolved_database_url()))
        events = EventLog.from_url(settings.resolved_intake_url())
        try:
            rows: list[dict[str, Any]] = [
                {
                    "when": datetime.fromtimestamp(j.created_at, UTC).isoformat(),
                    "what": f"{j.kind} {j.payload.get('tool', '')}".strip(),
                    "incident": j.incident_id,
                    "attempts": j.attempts,
                    "error": j.last_error,
                }
                for j in jobs.with_status("dead", limit=limit)
            ]
            rows += [
                {
                    "when": ev.received_at.isoformat(),
                    "what": f"{ev.source} event {ev.id} ({ev.event_type})",
                    "incident": None,
                    "attempts": ev.attempts,
                    "error": why,
                }
                for ev, why in events.failed(limit)
            ]
        finally:
            events.close()
            jobs.engine.dispose()
        rows.sort(key=lambda r: str(r["when"]), reverse=True)
        if as_json:
            click.echo(json.dumps(rows[:limit], indent=2, default=str))
        else:
            Console().print(dead_letters_table(rows[:limit]))

    @incidents.command("show")
    @click.argument("incident_id")
    @click.option("--json", "as_json", is_flag=True)
    def incidents_show(incident_id: str, as_json: bool) -> None:
        """One incident's timeline, as a table."""
        from supply_agent.cli.report import timeline_table
        from supply_agent.incidents.store import IncidentStore

        store = IncidentStore.from_url(get_settings().resolved_database_url())
        row = store.get(incident_id)
        if row is None:
            click.echo(f"no incident {incident_id!r} (see `supply-agent incidents list`)", err=True)
            sys.exit(1)
        entries = store.timeline(incident_id)
        if as_json:
            click.echo(
                json.dumps(
                    {**row.model_dump(mode="json"), "timeline": [e.model_dump(mode="json") for e in entries]},
                    indent=2,
                )
            )
            return
        console = Console()
        console.print(timeline_table(row, entries))
        if row.escalation_reason:
            console.print(f"[bold red]escalated:[/] {row.escalation_reason}")
