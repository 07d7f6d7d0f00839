"""Serving the fleet: a real HTTP server on loopback, a kubeconfig with its bearer tokens, clean shutdown.

Four identities, one token each (see :mod:`sandbox.fleet.rbac`): the admin (the kubeconfig's current
context, so kubectl and ``supply-agent sandbox`` work unchanged), the agent's reader and writer,
authorised by deploy/base/rbac.yaml, in the contexts ``sandbox-reader`` and ``sandbox-writer``, and the
agent's pods' own identity (its singletons' Leases, deploy/base/agent-rbac.yaml) in ``sandbox-agent``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from sandbox.fleet.api import FleetAPI
from sandbox.fleet.rbac import Policy
from sandbox.fleet.tls import make_serving_cert
from sandbox.fleet.world import Fleet

READER_USER, WRITER_USER, AGENT_USER = "supply-agent-reader", "supply-agent-writer", "supply-agent"


def write_kubeconfig(
    path: Path,
    url: str,
    token: str,
    ca_pem: bytes,
    cluster: str = "sandbox",
    *,
    reader_token: str | None = None,
    writer_token: str | None = None,
    agent_token: str | None = None,
) -> None:
    """A kubeconfig that kubectl and the official client both read; private to its owner (0600).

    The admin is the current context (``cluster``); with their tokens, the agent's identities get
    contexts ``{cluster}-reader`` and ``{cluster}-writer`` (users supply-agent-reader and -writer), and
    ``{cluster}-agent`` (user supply-agent: its pods' own, which takes the singletons' Leases)."""
    ca_data = base64.b64encode(ca_pem).decode()
    users: list[dict[str, Any]] = [{"name": f"{cluster}-admin", "user": {"token": token}}]
    contexts: list[dict[str, Any]] = [
        {"name": cluster, "context": {"cluster": cluster, "user": f"{cluster}-admin", "namespace": "default"}}
    ]
    for role, user, tok in (
        ("reader", READER_USER, reader_token),
        ("writer", WRITER_USER, writer_token),
        ("agent", AGENT_USER, agent_token),
    ):
        if tok is None:
            continue
        users.append({"name": user, "user": {"token": tok}})
        contexts.append(
            {
                "name": f"{cluster}-{role}",
                "context": {"cluster": cluster, "user": user, "namespace": "supply-agent-system"},
            }
        )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": url, "certificate-authority-data": ca_data}}],
        "users": users,
        "contexts": contexts,
        "current-context": cluster,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)


class _QuietShutdown(logging.Filter):
    """uvicorn reports idle TLS keep-alive connections it closes at shutdown as an error; they are not."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "graceful shutdown exceeded" not in record.getMessage()


logging.getLogger("uvicorn.error").addFilter(_QuietShutdown())


class _Server(uvicorn.Server):
    """uvicorn, ending open watch streams first so a shutdown does not wait on them."""

    on_exit: Callable[[], None] | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.on_exit is not None:
            self.on_exit()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """SIGINT/SIGTERM mean a clean stop, exit status 0; uvicorn would re-raise the signal afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class FleetServer:
    """The fleet behind uvicorn on 127.0.0.1; ``port=0`` picks a free port.

    ``token`` is the admin's (made up when not given), as are the reader's and the writer's; the RBAC
    policy (``policy``, default deploy/base/rbac.yaml) is read here, at start-up."""

    def __init__(
        self,
        fleet: Fleet,
        port: int = 0,
        token: str | None = None,
        host: str = "127.0.0.1",
        *,
        policy: Policy | None = None,
    ) -> None:
        self.api = FleetAPI(fleet, token or secrets.token_urlsafe(32), policy=policy)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this: without it, Nagle and delayed ACKs add 40 ms to each response.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind((host, port))
        self.sock.listen(2048)
        self.host, self.port = self.sock.getsockname()[:2]
        self.cert = make_serving_cert((host, "localhost"))
        self._certdir = tempfile.mkdtemp(prefix="supply-agent-fleet-")
        certfile, keyfile = Path(self._certdir, "tls.crt"), Path(self._certdir, "tls.key")
        certfile.write_bytes(self.cert.cert_pem)
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.cert.key_pem)
        config = uvicorn.Config(
            self.api.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            backlog=2048,
            ssl_certfile=str(certfile),
            ssl_keyfile=str(keyfile),
        )
        self.server = _Server(config)
        self.server.on_exit = lambda: self.fleet.store.close_watchers()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def fleet(self) -> Fleet:
        return self.api.fleet

    @property
    def token(self) -> str:
        """The admin's token."""
        return self.api.token

    @property
    def tokens(self) -> dict[str, str]:
        """Each identity's token: admin, reader, writer, agent."""
        return dict(self.api.tokens)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def write_kubeconfig(self, path: Path) -> None:
        """The admin as current context, plus the contexts sandbox-reader, sandbox-writer and sandbox-agent."""
        write_kubeconfig(
            path,
            self.url,
            self.token,
            self.cert.ca_pem,
            reader_token=self.api.tokens["reader"],
            writer_token=self.api.tokens["writer"],
            agent_token=self.api.tokens["agent"],
        )

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.fleet.clock.mode == "real":
                self.fleet.tick()

    async def serve(self, on_ready: Callable[[], Any] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        ticker = asyncio.create_task(self._ticker())

        async def announce() -> None:
            while not self.server.started:
                await asyncio.sleep(0.01)
            if on_ready:
                on_ready()

        announcer = asyncio.create_task(announce())
        try:
            await self.server.serve(sockets=[self.sock])
        finally:
            ticker.cancel()
            announcer.cancel()
            self.fleet.store.close_watchers()
            shutil.rmtree(self._certdir, ignore_errors=True)

    def run(self, on_ready: Callable[[], Any] | None = None) -> None:
        """Serve in the foreground until SIGINT/SIGTERM (uvicorn installs the handlers)."""
        asyncio.run(self.serve(on_ready))

    # -- in a background thread, for tests and evals --------------------------------------------
    def start(self, timeout: float = 30.0) -> FleetServer:
        ready = threading.Event()
        self.server.config.install_signal_handlers = False  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.serve(ready.set)), name="fleet", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the sandbox fleet did not start in time")
        return self

    def stop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.fleet.store.close_watchers)
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> FleetServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
