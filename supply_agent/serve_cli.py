"""``supply-agent serve``: the on-call surface on uvicorn.

Two processes: this one owns the port and acknowledges webhooks once stored
(:mod:`supply_agent.intake_server`); a worker process it starts and watches
(:mod:`supply_agent.serve_worker`) handles them and serves the rest of the API. ``--single-process``
runs everything in one process (the intake then shares its CPU with the graph threads).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click

from supply_agent.logging import get_logger
from supply_agent.settings import get_settings


@contextlib.contextmanager
def own_fleet(nodes: int) -> Iterator[Path]:
    """A sandbox fleet of the service's own (real clock) when no cluster is given; its kubeconfig."""
    from sandbox.fleet.clock import SimClock
    from sandbox.fleet.server import FleetServer
    from sandbox.fleet.world import Fleet, FleetSpec

    fleet = Fleet(FleetSpec(nodes=nodes, pools=2, seed=0), SimClock("real"))
    fleet.generate()
    with FleetServer(fleet) as server, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kubeconfig"
        server.write_kubeconfig(path)
        get_logger(component="serve").info("serving a sandbox fleet of its own", url=server.url, nodes=nodes)
        yield path


def register(main: click.Group) -> None:
    @main.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
    @click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
    @click.option(
        "--kubeconfig",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="The cluster (default: SUPPLY_AGENT_KUBECONFIG, else a sandbox fleet of its own).",
    )
    @click.option(
        "--planner",
        type=click.Choice(["runbook", "anthropic", "openai", "router"]),
        help="Who proposes steps (default: SUPPLY_AGENT_PLANNER, else runbook).",
    )
    @click.option(
        "--sandbox-nodes",
        type=click.IntRange(1, 50_000),
        default=24,
        show_default=True,
        help="Nodes of the sandbox fleet started when no cluster is given.",
    )
    @click.option(
        "--single-process",
        is_flag=True,
        help="Intake and the agent in one process (default: intake answers in a process of its own).",
    )
    def serve(
        host: str,
        port: int,
        kubeconfig: Path | None,
        planner: str | None,
        sandbox_nodes: int,
        single_process: bool,
    ) -> None:
        """Webhooks in (PagerDuty, Alertmanager), Slack approvals, PagerDuty write-back, metrics."""
        if single_process:
            _serve_one_process(host, port, kubeconfig, planner, sandbox_nodes)
        else:
            _serve_split(host, port, kubeconfig, planner, sandbox_nodes)


def _serve_split(
    host: str, port: int, kubeconfig: Path | None, planner: str | None, sandbox_nodes: int
) -> None:
    """The intake process: the port and the event log here, the agent in a worker process."""
    import uvicorn

    from supply_agent.intake import EventLog
    from supply_agent.intake_server import IntakeApp, run_worker

    settings = get_settings()
    log = get_logger(component="serve")
    cluster = kubeconfig or settings.kubeconfig
    events = EventLog.from_url(settings.resolved_intake_url(), track_pending=True)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="supply-agent-") as run_dir,
            run_worker(Path(run_dir), cluster, planner, sandbox_nodes) as worker,
        ):
            app = IntakeApp(settings, events, worker.uds, on_shutdown=worker.stop)
            config = uvicorn.Config(
                app, host=host, port=port, log_config=None, access_log=False, lifespan="on"
            )
            log.info("serving", host=host, port=port, worker=worker.uds)
            uvicorn.Server(config).run()
    finally:
        events.close()


def _serve_one_process(
    host: str, port: int, kubeconfig: Path | None, planner: str | None, sandbox_nodes: int
) -> None:
    import uvicorn

    from supply_agent.planners.base import make_planner
    from supply_agent.server import create_app
    from supply_agent.service import open_service

    # The event loop answers webhooks while worker threads fold alerts and run graphs: a shorter GIL
    # switch interval keeps a busy worker from holding up an acknowledgement for 5 ms at a time.
    sys.setswitchinterval(0.001)
    settings = get_settings()
    if planner:
        settings = settings.model_copy(update={"planner": planner})
    log = get_logger(component="serve")
    with contextlib.ExitStack() as stack:
        cluster = kubeconfig or settings.kubeconfig or stack.enter_context(own_fleet(sandbox_nodes))
        try:
            service = stack.enter_context(
                open_service(settings, cluster, planner=make_planner(settings.planner, settings))
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        app = create_app(service)
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        log.info("serving", host=host, port=port, cluster=str(cluster))
        server.run()
