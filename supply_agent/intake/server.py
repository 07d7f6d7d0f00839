"""The public port's limits against bad clients: uvicorn, with a deadline on reading each request.

Why this exists: uvicorn bounds how long an *idle* keep-alive connection stays open
(``timeout_keep_alive``), but not how long a client may take to *send* a request. The keep-alive timer
is cancelled by the first byte that arrives, and a new connection has no timer at all, so a client that
trickles its request head a byte at a time (slowloris) holds a connection, and a file descriptor, for as
long as it likes: 1,000 such clients were all kept open. uvicorn has no header-read timeout to turn on,
so :class:`GuardedH11Protocol` adds one to its h11 protocol:

* the request head must be complete within ``head_timeout_s`` of the connection opening (or of the
  previous response, on a keep-alive connection); the body within ``body_timeout_s`` of the head. Both
  are deadlines, not idle timers: trickling bytes does not extend them. A client past one gets 408 and
  the reason (when it sent part of a request), and the connection is closed.
* over ``limit_concurrency`` connections, uvicorn answers a request 503; a connection opened past the
  limit is answered 503 and closed at once, so a flood holds at most that many sockets, each for at most
  the head timeout. ``backlog`` bounds the connections the kernel queues for accepting.

Once a request is in, its time is the app's, not the client's: no deadline runs while the app works.
Webhook senders (Alertmanager, PagerDuty, Slack) send a small request at once, so the defaults are far
above what they need. The values are parameters (:class:`ClientLimits`); ``supply-agent serve`` uses
them for its public port.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from supply_agent.settings import Settings

HEAD_TIMEOUT_S = 10.0  # the whole request line and headers, from the connection (or last response)
BODY_TIMEOUT_S = 30.0  # the whole body (at most max_body_bytes), from the end of the head
LIMIT_CONCURRENCY = 256  # connections (and requests in flight) served at once; 503 over it
BACKLOG = 256  # connections the kernel queues for accepting
KEEP_ALIVE_S = 5  # an idle keep-alive connection (uvicorn's own timer, its default)


@dataclass(frozen=True)
class ClientLimits:
    """How much the public port gives one client, and all of them together."""

    head_timeout_s: float = HEAD_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    limit_concurrency: int = LIMIT_CONCURRENCY
    backlog: int = BACKLOG
    keep_alive_s: int = KEEP_ALIVE_S

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientLimits:
        return cls(
            head_timeout_s=settings.intake_head_timeout_s,
            body_timeout_s=settings.intake_body_timeout_s,
            limit_concurrency=settings.intake_max_connections,
            backlog=settings.intake_backlog,
        )


class _Throttled:
    """At most one log line a second for a kind of event a flood repeats; the rest are counted."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self._last = -every_s
        self._held = 0

    def warn(self, logger: Any, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            self._held += 1
            return
        more = f" ({self._held} more like it since)" if self._held else ""
        self._last, self._held = now, 0
        logger.warning(message + more)


_SLOW = _Throttled()
_FULL = _Throttled()


def _raw_response(status: int, phrase: str, reason: str, extra: tuple[str, ...] = ()) -> bytes:
    body = reason.encode()
    head = [
        f"HTTP/1.1 {status} {phrase}",
        "content-type: text/plain; charset=utf-8",
        f"content-length: {len(body)}",
        "connection: close",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the request head and one on the body, and a
    connection past the concurrency limit refused as it opens. Use :func:`protocol` to bind limits."""

    limits: ClassVar[ClientLimits] = ClientLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = ""  # "head" or "body" while the client owes us one, "" while the app works

    # -- uvicorn's protocol hooks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.limit_concurrency
        if limit is not None and len(self.connections) > limit:
            _FULL.warn(self.logger, f"refused a connection: over the limit of {limit} connections")
            self._refuse(
                _raw_response(503, "Service Unavailable", "too many connections\n", ("retry-after: 1",))
            )
            return
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    # -- the deadlines ---------------------------------------------------------------------------------
    def _track(self) -> None:
        """Start the deadline the client now owes (a head, a body) when that changes; none while the app
        has the request."""
        if self.transport.is_closing():
            self._cancel()
            return
        theirs = self.conn.their_state
        phase = "head" if theirs is h11.IDLE else "body" if theirs is h11.SEND_BODY else ""
        if phase == self._phase:
            return
        self._phase = phase
        self._cancel()
        if phase:
            seconds = self.limits.head_timeout_s if phase == "head" else self.limits.body_timeout_s
            self._deadline = self.loop.call_later(seconds, self._expired, phase, seconds)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if phase == "body" and self.flow.read_paused:
            # We stopped reading (the app has not taken what came yet): the wait is ours, not theirs.
            self._deadline = self.loop.call_later(seconds, self._expired, phase, seconds)
            return
        who = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        what = "request head" if phase == "head" else "request body"
        _SLOW.warn(self.logger, f"closed {who}: its {what} was not complete within {seconds:g} s")
        started = phase == "head" and bool(self.conn.trailing_data[0])  # part of a head arrived
        answerable = started or (phase == "body" and (self.cycle is None or not self.cycle.response_started))
        reason = f"the {what} was not complete within {seconds:g} s\n"
        self._refuse(_raw_response(408, "Request Timeout", reason) if answerable else b"")

    def _refuse(self, response: bytes) -> None:
        """Answer (if anything) outside h11's bookkeeping and close; the app, if it has the request,
        sees a disconnected client and whatever it sends is dropped."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if response:
            self.transport.write(response)
        self.transport.close()


def protocol(limits: ClientLimits) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn builds per connection, bound to ``limits``."""
    return cast(
        type[GuardedH11Protocol], type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})
    )


def public_config(app: Any, host: str, port: int, limits: ClientLimits | None = None) -> uvicorn.Config:
    """A uvicorn config for a port that faces the network: the limits above, no WebSocket upgrades (the
    intake serves none), uvicorn's own logging and access log off (the service logs what it handles)."""
    limits = limits or ClientLimits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol(limits),
        ws="none",
        limit_concurrency=limits.limit_concurrency,
        backlog=limits.backlog,
        timeout_keep_alive=limits.keep_alive_s,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
