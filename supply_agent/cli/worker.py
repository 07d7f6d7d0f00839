"""The worker process of ``supply-agent serve`` (started by the intake process; not run by hand).

It owns the :class:`~supply_agent.service.core.Service`: follows the event log the intake process writes,
folds alerts into incidents, runs graph threads, writes back to PagerDuty and Slack, sweeps expired
approvals; and serves the API other than the webhooks (Slack clicks, readiness, metrics, incidents) on
a Unix socket the intake process forwards to. It runs at a lower CPU priority: an acknowledgement comes
first, handling may lag a storm by seconds. It exits when its standard input closes (the intake process
is gone), and on SIGTERM after finishing what is in flight.

    python -m supply_agent.cli.worker --uds PATH [--kubeconfig FILE] [--planner NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from pathlib import Path

WORKER_NICE = 10


def _exit_with_parent() -> None:
    """Read stdin until its end: the intake process holds the other end, so the end means it is gone."""

    def watch() -> None:
        with contextlib.suppress(Exception):
            while sys.stdin.buffer.read(4096):
                pass
        os._exit(0)  # no graceful stop: everything acknowledged is in the event log for the next worker

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="supply_agent.cli.worker", description=__doc__.split("\n\n")[0])
    ap.add_argument("--uds", required=True, help="Unix socket to serve the API on.")
    ap.add_argument("--kubeconfig", type=Path)
    ap.add_argument("--planner")
    ap.add_argument("--nice", type=int, default=WORKER_NICE)
    args = ap.parse_args(argv)
    _exit_with_parent()
    if args.nice:
        with contextlib.suppress(OSError):
            os.nice(args.nice)

    import uvicorn

    from supply_agent.heap import settle_heap
    from supply_agent.logging import configure_logging, get_logger
    from supply_agent.mind.planners.factory import make_planner
    from supply_agent.service.api import create_app
    from supply_agent.service.core import open_service
    from supply_agent.settings import get_settings
    from supply_agent.web.app import console_app
    from supply_agent.web.mount import console_for_service

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    if args.planner:
        settings = settings.model_copy(update={"planner": args.planner})
    log = get_logger(component="serve-worker")
    cluster = args.kubeconfig or settings.kubeconfig
    if cluster is None:  # the intake process starts a sandbox fleet of its own and passes its kubeconfig
        log.error("cannot start the worker: no cluster (--kubeconfig or SUPPLY_AGENT_KUBECONFIG)")
        sys.exit(2)
    with contextlib.ExitStack() as stack:
        try:
            service = stack.enter_context(
                open_service(
                    settings, cluster, planner=make_planner(settings.planner, settings), follow_log=True
                )
            )
        except ValueError as exc:
            log.error("cannot start the worker", error=str(exc))
            sys.exit(2)
        app = create_app(service)
        app.mount("/console", console_app(console_for_service(service)))
        config = uvicorn.Config(app, uds=args.uds, log_config=None, access_log=False, lifespan="on")
        log.info("worker serving", uds=args.uds, cluster=str(cluster), pid=os.getpid())
        settle_heap(service.metrics)
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
