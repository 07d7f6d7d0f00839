"""The intake process of ``supply-agent serve``: the public port, answering webhooks fast.

``supply-agent serve`` is two processes. This one owns the public port and does only what an
acknowledgement needs: check the signature or token and the body's shape, store the event in the event
log (committed), answer. It is a plain ASGI app (no framework, no per-request model parse beyond the
shape check), so a storm of webhooks costs little CPU per request and the acknowledgement never waits
on an incident being worked.

The worker process (:mod:`supply_agent.cli.worker`, started and watched by this one) owns the
:class:`~supply_agent.service.core.Service`: it follows the event log, folds alerts into incidents, runs the
graphs, writes back to PagerDuty and Slack. Slack clicks are verified and stored here too (Slack sends
an interaction once, so a click must be stored whether or not a worker is up); the worker applies them
from the log. It serves the rest of the API (health of the cluster, metrics, incidents) on a Unix
socket; this process forwards those requests to it. ``/metrics`` is both processes' figures added up.

The event log is the contract between the two: what is acknowledged is stored, and a worker that dies,
or is restarted, handles every stored event that is not marked handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from supply_agent.intake.accept import Intake, Reply
from supply_agent.intake.events import EventLog
from supply_agent.logging import get_logger
from supply_agent.metrics import Metrics
from supply_agent.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Hop-by-hop headers (and the length, which the forwarder sets again) are not forwarded.
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"upgrade",
        b"content-length",
        b"host",
        b"proxy-connection",
    }
)
_JSON = (b"content-type", b"application/json")
_WORKER_METRICS_S = 2.0  # how long /metrics waits for the worker's part


class _TooLarge(Exception):
    pass


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _reply(send: Send, r: Reply) -> None:
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in r.headers.items()]
    await _answer(send, r.status, json.dumps(r.body).encode(), [_JSON, *extra])


class IntakeApp:
    """The ASGI app of the intake process: webhooks answered here, everything else forwarded to the
    worker's socket (``worker_uds``)."""

    def __init__(
        self,
        settings: Settings,
        events: EventLog,
        worker_uds: str,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_shutdown = on_shutdown
        self.events = events
        self.metrics = Metrics()
        self.intake = Intake(settings, events, self.metrics, pending=events.pending_estimate)
        self.worker_uds = worker_uds
        self.limit = settings.max_body_bytes
        self._client: httpx.AsyncClient | None = None

    def _worker(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=self.worker_uds),
                base_url="http://worker",
                timeout=httpx.Timeout(60.0, connect=5.0),
            )
        return self._client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        try:
            if method == "POST" and path == "/webhooks/alertmanager":
                body = await _read_body(scope, receive, self.limit)
                await _reply(send, await self.intake.alertmanager(body, _header(scope, b"authorization")))
            elif method == "POST" and path == "/webhooks/pagerduty":
                body = await _read_body(scope, receive, self.limit)
                signature = _header(scope, b"x-pagerduty-signature")
                await _reply(send, await self.intake.pagerduty(body, signature))
            elif method == "POST" and path == "/slack/interactions":
                body = await _read_body(scope, receive, self.limit)
                ts, sig = _header(scope, b"x-slack-request-timestamp"), _header(scope, b"x-slack-signature")
                await _reply(send, await self.intake.slack(body, ts, sig))
            elif method == "GET" and path == "/healthz":
                await _reply(send, Reply(200, {"status": "ok"}))
            elif method == "GET" and path == "/metrics":
                await self._metrics(send)
            else:
                await self._forward(scope, receive, send)
        except _TooLarge:
            await _reply(send, Reply(413, {"error": f"body larger than {self.limit} bytes"}))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                # Here, not after the server returns: uvicorn ends the process by raising the signal
                # it caught again once the app has shut down.
                if self.on_shutdown is not None:
                    await asyncio.to_thread(self.on_shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(scope, receive, self.limit)
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        headers = [(k, v) for k, v in scope["headers"] if k not in _HOP]
        client = self._worker()
        request = client.build_request(
            scope["method"], target.decode("latin-1"), headers=headers, content=body
        )
        try:
            r = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            why = f"the worker process is not answering ({type(exc).__name__})"
            await _reply(send, Reply(503, {"error": why}, {"Retry-After": "1"}))
            return
        # Streamed through as it comes (the console's server-sent events never end), until either side
        # goes: the worker's end of the response, or the client's disconnect.
        out = [(k, v) for k, v in r.headers.raw if k.lower() not in _HOP and k.lower() != b"content-encoding"]
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": r.status_code, "headers": out})
            async for chunk in r.aiter_raw():
                if gone.is_set():
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError:  # the worker went mid-response: the client sees the body cut short
            get_logger(component="serve").warning("the worker's response was cut short", path=scope["path"])
        finally:
            watcher.cancel()
            await r.aclose()

    async def _metrics(self, send: Send) -> None:
        own = generate_latest(self.metrics.registry).decode()
        try:
            # A stalled worker costs the scrape its part, not the intake's own (a scrape times out
            # at 10 s by default; the worker's client waits 60 s).
            r = await self._worker().get("/metrics", timeout=_WORKER_METRICS_S)
            theirs = r.text if r.status_code == 200 else ""
        except httpx.HTTPError:
            theirs = ""
        body = merge_metrics(own, theirs)
        await _answer(send, 200, body, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def merge_metrics(*texts: str) -> bytes:
    """Prometheus text from several processes as one: counters and histograms added up, gauges the
    largest (the queue depth both processes see)."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            if fam.name not in merged:
                merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            seen = values[fam.name]
            for sample in fam.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in seen:
                    seen[key] = sample.value
                elif sample.name.endswith("_created"):
                    seen[key] = min(seen[key], sample.value)
                elif fam.type == "gauge":
                    seen[key] = max(seen[key], sample.value)
                else:
                    seen[key] += sample.value
    for name, fam in merged.items():
        for (sample_name, labels), value in values[name].items():
            fam.add_sample(sample_name, dict(labels), value)
    return generate_latest(_Families(list(merged.values())))


class WorkerProcess:
    """The worker process, started, watched and started again if it dies; stopped with the intake.

    The worker reads its standard input until the end: when this process dies, however it dies, the
    pipe closes and the worker exits at once (no worker outlives its intake)."""

    def __init__(self, argv: list[str], uds: str) -> None:
        self.argv = argv
        self.uds = uds
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)
        self.restarts = 0
        self.log = get_logger(component="serve")

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.uds)
            # a session of its own: a terminal's Ctrl-C stops this process, which stops the worker in order
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, start_new_session=True)
            self.log.info("worker started", pid=self.proc.pid)

    def _watch(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            proc = self.proc
            if proc is None:
                return
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            self.log.error("the worker process exited; starting it again", pid=proc.pid, code=code)
            if proc.stdin is not None:
                proc.stdin.close()
            backoff = 0.5 if time.monotonic() - started > 30 else min(backoff * 2, 10.0)
            if self._stopping.wait(backoff):
                return
            self.restarts += 1
            self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()


def worker_argv(uds: str, kubeconfig: Path | None, planner: str | None) -> list[str]:
    argv = [sys.executable, "-m", "supply_agent.cli.worker", "--uds", uds]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    if planner:
        argv += ["--planner", planner]
    return argv


@contextlib.contextmanager
def run_worker(run_dir: Path, kubeconfig: Path | None, planner: str | None) -> Iterator[WorkerProcess]:
    """A watched worker process for the life of the block."""
    uds = str(run_dir / "worker.sock")
    worker = WorkerProcess(worker_argv(uds, kubeconfig, planner), uds)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
