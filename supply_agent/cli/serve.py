"""``supply-agent serve``: the on-call surface on uvicorn.

Two processes: this one owns the port and acknowledges webhooks once stored
(:mod:`supply_agent.intake.app`); a worker process it starts and watches
(:mod:`supply_agent.cli.worker`) handles them and serves the rest of the API. ``--single-process``
runs everything in one process (the intake then shares its CPU with the graph threads). Either way the
public port has the limits against slow and too many clients of :mod:`supply_agent.intake.server`.
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import click

from supply_agent.heap import settle_heap
from supply_agent.logging import get_logger
from supply_agent.settings import get_settings


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the fleet gets SIGTERM when the process that started it dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def own_fleet(nodes: int, ready_timeout_s: float = 180.0) -> Iterator[Path]:
    """A sandbox fleet of the service's own (real clock) when no cluster is given; its kubeconfig.

    It runs as ``supply-agent sandbox serve`` in a process of its own: the agent reaches it over HTTP
    only, exactly as it reaches a real cluster, and never imports the simulation."""
    log = get_logger(component="serve")
    with tempfile.TemporaryDirectory(prefix="supply-agent-fleet-") as tmp:
        path = Path(tmp) / "kubeconfig"
        argv = [sys.executable, "-m", "supply_agent", "sandbox", "serve", "--nodes", str(nodes)]
        argv += ["--pools", "2", "--seed", "0", "--port", "0", "--clock", "real", "--kubeconfig", str(path)]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent, start_new_session=False
        )
        assert proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        out = proc.stdout

        def pump() -> None:  # keeps reading, so the fleet never blocks on a full pipe
            for line in out:
                lines.put(line)
            lines.put("")

        threading.Thread(target=pump, name="fleet-stdout", daemon=True).start()
        deadline = time.monotonic() + ready_timeout_s
        try:
            while True:
                try:
                    line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(
                        f"the sandbox fleet did not start within {ready_timeout_s:.0f} s"
                    ) from None
                if line == "":
                    raise RuntimeError(f"the sandbox fleet exited before it was ready (code {proc.wait()})")
                if line.startswith("ready "):
                    break
            log.info("serving a sandbox fleet of its own", ready=line.strip(), nodes=nodes, pid=proc.pid)
            yield path
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


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

    from supply_agent.intake.app import IntakeApp, run_worker
    from supply_agent.intake.events import EventLog
    from supply_agent.intake.server import ClientLimits, public_config

    settings = get_settings()
    log = get_logger(component="serve")
    events = EventLog.from_url(settings.resolved_intake_url(), track_pending=True)
    try:
        with contextlib.ExitStack() as stack:
            cluster = kubeconfig or settings.kubeconfig or stack.enter_context(own_fleet(sandbox_nodes))
            run_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="supply-agent-"))
            worker = stack.enter_context(run_worker(Path(run_dir), cluster, planner))
            app = IntakeApp(settings, events, worker.uds, on_shutdown=worker.stop)
            config = public_config(app, host, port, ClientLimits.from_settings(settings))
            log.info("serving", host=host, port=port, worker=worker.uds)
            settle_heap(app.metrics)  # a full collection would hold every acknowledgement in flight
            uvicorn.Server(config).run()
    finally:
        events.close()


def _serve_one_process(
    host: str, port: int, kubeconfig: Path | None, planner: str | None, sandbox_nodes: int
) -> None:
    import uvicorn

    from supply_agent.intake.server import ClientLimits, public_config
    from supply_agent.mind.planners.factory import make_planner
    from supply_agent.service.api import create_app
    from supply_agent.service.core import open_service
    from supply_agent.web.app import console_app
    from supply_agent.web.mount import console_for_service

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
            # On a shared database other replicas store events too: follow the log, not only this
            # process's own webhooks.
            service = stack.enter_context(
                open_service(
                    settings,
                    cluster,
                    planner=make_planner(settings.planner, settings),
                    follow_log=bool(settings.database_url),
                )
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        app = create_app(service)
        app.mount("/console", console_app(console_for_service(service)))
        server = uvicorn.Server(public_config(app, host, port, ClientLimits.from_settings(settings)))
        log.info("serving", host=host, port=port, cluster=str(cluster))
        settle_heap(service.metrics)
        server.run()
