"""The public port against bad clients, on the real server: the intake app on uvicorn with
:mod:`supply_agent.intake.server`'s protocol, on loopback. Slow clients are closed at their deadline
however they trickle, a normal webhook is answered meanwhile, and connections over the limit are
turned away. Deadlines are shortened to a second so the whole file runs in a few seconds."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from supply_agent.intake.app import IntakeApp
from supply_agent.intake.events import EventLog
from supply_agent.intake.server import ClientLimits, public_config
from supply_agent.settings import Settings

TOKEN = "am-bearer-token-0001"
AUTH = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
HEAD = b"POST /webhooks/alertmanager HTTP/1.1\r\nhost: intake\r\n"  # a request head, not yet complete


@dataclass
class Served:
    url: str
    address: tuple[str, int]
    events: EventLog

    def webhook(self, node: str, timeout: float = 5.0) -> httpx.Response:
        body = {
            "version": "4",
            "groupKey": f'{{}}:{{node="{node}"}}',
            "status": "firing",
            "receiver": "supply-agent",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "KubeNodeNotReady", "node": node, "severity": "critical"},
                    "startsAt": "2026-01-01T00:00:00Z",
                    "fingerprint": f"fp-{node}",
                }
            ],
        }
        with httpx.Client(timeout=timeout) as client:  # a fresh client: a connection of its own
            return client.post(f"{self.url}/webhooks/alertmanager", content=json.dumps(body), headers=AUTH)

    def stored(self) -> int:
        return sum(self.events.counts().values())


@contextlib.contextmanager
def serve(tmp_path: Path, limits: ClientLimits) -> Iterator[Served]:
    settings = Settings(data_dir=tmp_path, alertmanager_token=TOKEN)
    events = EventLog.from_url(f"sqlite:///{tmp_path / 'intake.db'}", track_pending=True)
    app = IntakeApp(settings, events, str(tmp_path / "no-worker.sock"))
    server = uvicorn.Server(public_config(app, "127.0.0.1", 0, limits))
    thread = threading.Thread(target=server.run, name="intake", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield Served(f"http://{host}:{port}", (host, port), events)
    finally:
        server.should_exit = True
        thread.join(10)
        events.close()


def _read_until_closed(socks: list[socket.socket], timeout: float) -> dict[socket.socket, bytes | None]:
    """What each socket received until the server closed it (None: reset), for sockets it closed
    within ``timeout``; the others are left out."""
    got: dict[socket.socket, bytearray] = {s: bytearray() for s in socks}
    done: dict[socket.socket, bytes | None] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(socks) and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([s for s in socks if s not in done], [], [], left)
        for s in readable:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                done[s] = None
                continue
            if chunk:
                got[s] += chunk
            else:
                done[s] = bytes(got[s])
    return done


def test_slow_clients_are_closed_at_the_head_deadline_and_a_normal_client_is_answered(tmp_path: Path) -> None:
    with serve(tmp_path, ClientLimits(head_timeout_s=2.0, body_timeout_s=2.0, limit_concurrency=64)) as srv:
        slow = [socket.create_connection(srv.address, timeout=5) for _ in range(50)]
        t0 = time.monotonic()
        for s in slow:
            s.sendall(HEAD)
        # Trickle the head a byte at a time, as a slowloris does, until the server answers: trickling
        # must not push the deadline back.
        stop = threading.Event()

        def trickle() -> None:
            while not stop.is_set():
                answered, _, _ = select.select(slow, [], [], 0)
                for s in slow:
                    if s not in answered:
                        with contextlib.suppress(OSError):
                            s.send(b"x")
                stop.wait(0.1)

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            r = srv.webhook("node-1")
            assert r.status_code == 202, r.text
            # ... answered while all 50 slow clients were still connected
            assert time.monotonic() - t0 < 2.0 and select.select(slow, [], [], 0)[0] == []
            closed = _read_until_closed(slow, timeout=5)
            closed_in = time.monotonic() - t0
        finally:
            stop.set()
            trickler.join(5)
            for s in slow:
                s.close()
        assert len(closed) == 50, f"{50 - len(closed)} slow clients still open after {closed_in:.1f} s"
        assert 1.9 <= closed_in < 4.5, closed_in
        answers = [d for d in closed.values() if d is not None]
        assert len(answers) >= 45  # a send racing the close may reset a few before they read the 408
        for data in answers:
            assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:80]
            assert data.endswith(b"the request head was not complete within 2 s\n"), data[-80:]
        assert srv.stored() == 1  # the normal webhook, and nothing of the slow ones


def test_a_slow_body_is_closed_at_its_deadline_and_nothing_is_stored(tmp_path: Path) -> None:
    with serve(tmp_path, ClientLimits(head_timeout_s=5.0, body_timeout_s=1.0)) as srv:
        s = socket.create_connection(srv.address, timeout=5)
        t0 = time.monotonic()
        s.sendall(HEAD + f"authorization: Bearer {TOKEN}\r\ncontent-length: 400\r\n\r\n".encode())
        s.sendall(b'{"version": "4", "alerts": [')
        closed = _read_until_closed([s], timeout=4)
        took = time.monotonic() - t0
        s.close()
        assert closed, "a slow body was kept open"
        data = closed[s]
        assert data is not None and data.startswith(b"HTTP/1.1 408 "), data
        assert data.endswith(b"the request body was not complete within 1 s\n")
        assert 0.9 <= took < 2.5, took
        assert srv.stored() == 0


def test_the_head_deadline_runs_again_after_a_response_on_keep_alive(tmp_path: Path) -> None:
    # uvicorn's keep-alive timer (5 s) stops at the first byte of the next request: the head deadline
    # is what closes a keep-alive connection that then trickles.
    with serve(tmp_path, ClientLimits(head_timeout_s=1.0, keep_alive_s=5)) as srv:
        s = socket.create_connection(srv.address, timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: intake\r\n\r\n")
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 "), first
        t0 = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: in")
        closed = _read_until_closed([s], timeout=4)
        took = time.monotonic() - t0
        s.close()
        assert closed and (closed[s] or b"").startswith(b"HTTP/1.1 408 "), closed
        assert 0.9 <= took < 2.5, took


def test_connections_over_the_limit_are_turned_away(tmp_path: Path) -> None:
    with serve(tmp_path, ClientLimits(head_timeout_s=1.5, limit_concurrency=10)) as srv:
        idle = [socket.create_connection(srv.address, timeout=5) for _ in range(15)]
        try:
            refused = _read_until_closed(idle, timeout=0.5)  # answered and closed as they open
            assert len(refused) == 5, len(refused)
            for data in refused.values():
                assert data is not None and data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), data
                assert b"retry-after: 1\r\n" in data and data.endswith(b"too many connections\n")
            # Full: a fresh client is turned away too (503, or its connection closed under it).
            try:
                r = srv.webhook("node-1", timeout=2)
                assert r.status_code == 503, r.text
            except httpx.TransportError:
                pass
            # The ones held open, sending nothing, are closed at the head deadline (silently: they never
            # started a request), and the port serves again.
            held = [s for s in idle if s not in refused]
            closed = _read_until_closed(held, timeout=3)
            assert len(closed) == len(held) == 10 and set(closed.values()) <= {b"", None}, closed
        finally:
            for s in idle:
                s.close()
        r = srv.webhook("node-2")
        assert r.status_code == 202, r.text
        assert srv.stored() == 1
