"""`supply-agent node-agent serve`: the per-node GPU health server (run as a DaemonSet).

`GET /health` is the node's `GpuHealthReport`; `GET /healthz` is liveness. A background thread waits on
the NVML event set the whole time the server runs, because NVML delivers an XID only to a set that is
listening when it happens: reading events only when /health is asked would miss them.

Each report also says which pods hold each GPU (`GpuHealth.pods`), read from the kubelet's pod-resources
socket (`tools.podresources`, mounted read-only by the DaemonSet); when it cannot be read, `pods` is None
and `errors["pods"]` says why.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from supply_agent.logging import configure_logging, get_logger
from tools.nvml import NvmlCollector
from tools.podresources import DEFAULT_SOCKET, DEFAULT_TIMEOUT_S, PodResourcesClient


def _log() -> Any:
    # Bound per call: a logger bound at import time would keep structlog's defaults forever.
    return get_logger(component="node-agent")


DEFAULT_POLL_TIMEOUT_MS = 5000


def _event_loop(collector: NvmlCollector, stop: threading.Event, timeout_ms: int) -> None:
    """Wait for XID events until stopped; pause when a wait returns at once (no NVML, or a simulation)."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            events = collector.poll_events(timeout_ms)
        except Exception:
            _log().exception("node_agent.poll_failed", node=collector.node)
            events = []
        if not events:
            left = timeout_ms / 1000 - (time.monotonic() - started)
            if left > 0:
                stop.wait(left)


def make_app(collector: NvmlCollector, poll_timeout_ms: int = DEFAULT_POLL_TIMEOUT_MS) -> Starlette:
    """The node-agent's Starlette app over `collector`; the caller keeps ownership of the collector."""

    def health(request: Request) -> JSONResponse:
        # A plain function: Starlette runs it in its thread pool, so NVML reads never block the loop.
        return JSONResponse(collector.report().model_dump(mode="json"))

    def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        collector.start()
        stop = threading.Event()
        thread = threading.Thread(
            target=_event_loop, args=(collector, stop, poll_timeout_ms), name="nvml-events", daemon=True
        )
        thread.start()
        report = collector.report()
        _log().info(
            "node_agent.started",
            node=collector.node,
            nvml_available=report.nvml_available,
            simulated=report.simulated,
            gpus=len(report.gpus),
            driver=report.driver_version,
            error=report.error,
            pods_error=next((g.errors["pods"] for g in report.gpus if "pods" in g.errors), None),
        )
        try:
            yield
        finally:
            stop.set()
            # The thread may be inside one NVML wait; it returns within the wait's timeout.
            await asyncio.to_thread(thread.join, poll_timeout_ms / 1000 + 1)
            _log().info("node_agent.stopped", node=collector.node)

    return Starlette(
        routes=[Route("/health", health, methods=["GET"]), Route("/healthz", healthz, methods=["GET"])],
        lifespan=lifespan,
    )


def make_collector(
    node: str,
    nvml: ModuleType | Any | None = None,
    pod_resources_socket: str | None = DEFAULT_SOCKET,
    pod_resources_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> NvmlCollector:
    """The node-agent's collector: NVML, and the kubelet's pod-resources (None: pods are not read)."""
    client = (
        None
        if pod_resources_socket is None
        else PodResourcesClient(pod_resources_socket, timeout_s=pod_resources_timeout_s)
    )
    return NvmlCollector(node, nvml=nvml, pod_resources=client)


def serve(
    host: str,
    port: int,
    node: str,
    nvml: ModuleType | Any | None = None,
    pod_resources_socket: str | None = DEFAULT_SOCKET,
) -> None:
    """Run the node-agent on uvicorn until interrupted; without a GPU it still serves a report saying so."""
    import uvicorn

    configure_logging()
    collector = make_collector(node, nvml=nvml, pod_resources_socket=pod_resources_socket)
    _log().info("node_agent.serving", node=node, host=host, port=port, pod_resources=pod_resources_socket)
    try:
        uvicorn.run(make_app(collector), host=host, port=port, log_level="info")
    finally:
        collector.close()
