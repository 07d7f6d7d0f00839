"""``supply-agent eval``: replay the incident corpus and score it; ``supply-agent eval validate``."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import click

DEFAULT_CORPUS = Path(__file__).resolve().parent / "incidents"
PLANNERS = ("runbook", "anthropic", "openai", "router")


class _DefaultRun(click.Group):
    """``eval PATH …`` means ``eval run PATH …``; ``eval validate`` is the other command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _worker_init() -> None:
    """Replays log to stderr, errors only: the simulated fleet's own warnings (an XID it raised on purpose)
    are the scenario, not news; the progress bar and the table are the output."""
    import logging

    from supply_agent.logging import configure_logging, quiet

    configure_logging()
    quiet(logging.ERROR)


def _one(path: str, planner: str, gate: bool, record: bool, node_only: bool = False) -> dict[str, Any]:
    from evals.runner import run_incident

    result = run_incident(Path(path), planner, gate=gate, record=record, node_only=node_only)
    return result.model_dump(mode="json")


def _has_gang_jobs(path: Path) -> bool:
    from evals.schema import load_incident

    fleet = load_incident(path).world.fleet
    return fleet is not None and bool(fleet.jobsets or fleet.leaderworkersets)


def _corpus_or_exit(path: Path) -> list[Path]:
    from evals.schema import IncidentFileError, load_corpus

    try:
        good, errors = load_corpus(path)
    except IncidentFileError as exc:
        raise click.ClickException(str(exc)) from exc
    if errors:
        for e in errors:
            click.echo(f"invalid: {e}", err=True)
        raise click.ClickException(
            f"{len(errors)} invalid incident file(s) under {path}: fix them (supply-agent eval validate)"
        )
    if not good:
        raise click.ClickException(f"no incident files (*.yaml) under {path}")
    return [p for p, _ in good]


def register(main: click.Group) -> None:
    @main.group("eval", cls=_DefaultRun)
    def eval_group() -> None:
        """Replay past incidents against fresh sandbox fleets and score the agent.

        \b
        supply-agent eval [PATH] [--planner P] [--jobs N] [--report DIR] [--no-gate] [--node-only] [--record]
        supply-agent eval validate [PATH]
        """

    @eval_group.command("validate")
    @click.argument("path", type=click.Path(path_type=Path), default=DEFAULT_CORPUS)
    def validate(path: Path) -> None:
        """Check incident files against the schema; every error names the file and the field."""
        from evals.schema import IncidentFileError, load_corpus

        try:
            good, errors = load_corpus(path)
        except IncidentFileError as exc:
            raise click.ClickException(str(exc)) from exc
        for p, inc in good:
            click.echo(f"ok       {p}  ({inc.incident_class}, expect {inc.expect.outcome})")
        for e in errors:
            click.echo(f"invalid  {e}", err=True)
        click.echo(f"{len(good)} valid, {len(errors)} invalid")
        if errors or not good:
            sys.exit(1)

    @eval_group.command("run")
    @click.argument("path", type=click.Path(path_type=Path), default=DEFAULT_CORPUS)
    @click.option("--planner", type=click.Choice(PLANNERS), default="runbook", show_default=True)
    @click.option(
        "--jobs",
        type=click.IntRange(1, 64),
        default=min(4, os.cpu_count() or 1),
        show_default="CPUs, at most 4",
        help="Incidents replayed at once (one process each).",
    )
    @click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path))
    @click.option(
        "--no-gate",
        is_flag=True,
        help="Also run each incident with the gate's decisions logged but not enforced (sandbox only), "
        "so the report shows what the gate prevented.",
    )
    @click.option(
        "--node-only",
        is_flag=True,
        help="Also run each incident with gang jobs with the gate's workload rules off (the node-only "
        "gate, no wait for a checkpoint), so the report shows the GPU-minutes the rules save.",
    )
    @click.option("--record", is_flag=True, help="LLM planners: call the API and record cassettes.")
    def run(
        path: Path,
        planner: str,
        jobs: int,
        report_dir: Path | None,
        no_gate: bool,
        node_only: bool,
        record: bool,
    ) -> None:
        """Replay each incident on a fresh sandbox fleet; a table at the end (and a report with --report)."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from evals.report import results_table, summary_table, write_report
        from evals.results import EvalResult, summarise

        if record and planner == "runbook":
            raise click.BadParameter(
                "the runbook planner calls no model: nothing to record", param_hint="--record"
            )
        files = _corpus_or_exit(path)
        runs = [(f, gate, False) for f in files for gate in ((True, False) if no_gate else (True,))]
        if node_only:
            runs += [(f, True, True) for f in files if _has_gang_jobs(f)]
        console = Console(stderr=True)
        t0 = time.perf_counter()
        results: list[EvalResult] = []
        columns = (
            TextColumn("[bold]eval[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(f"{planner}: {len(files)} incident(s)", total=len(runs))
            if jobs == 1:
                _worker_init()
                for f, gate, bare in runs:
                    results.append(EvalResult.model_validate(_one(str(f), planner, gate, record, bare)))
                    progress.advance(task)
            else:
                with ProcessPoolExecutor(
                    jobs, mp_context=get_context("spawn"), initializer=_worker_init
                ) as pool:
                    futures: list[Future[dict[str, Any]]] = [
                        pool.submit(_one, str(f), planner, gate, record, bare) for f, gate, bare in runs
                    ]
                    for fut in futures:
                        results.append(EvalResult.model_validate(fut.result()))
                        progress.advance(task)
        wall = time.perf_counter() - t0
        results.sort(key=lambda r: (r.id, r.planner, not r.gate, r.node_only))
        summary = summarise(results, wall, jobs)
        out = Console()
        if not out.is_terminal:
            out = Console(width=max(out.width, 180))  # a file or a pipe: whole ids, not wrapped cells
        out.print(results_table(results))
        out.print(summary_table(summary))
        if report_dir is not None:
            written = write_report(results, summary, report_dir)
            out.print(
                f"report: {written.get('report.md', report_dir)}  results: {written.get('results.json')}"
            )
        errors = [r for r in results if r.error]
        for r in errors:
            console.print(f"[red]{r.id}[/]: {r.error}")
