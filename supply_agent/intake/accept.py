"""The hot path of intake: a webhook or a Slack click checked, stored in the event log, answered.

Only what an acknowledgement needs happens here (signature or token, the body's shape, one committed
insert); the work behind the page happens later, in the worker, from the log.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from supply_agent.intake.bodies import (
    Classified,
    IntakeError,
    Source,
    classify_alertmanager,
    classify_pagerduty,
)
from supply_agent.intake.clicks import click_key, read_click
from supply_agent.intake.events import EventLog
from supply_agent.intake.signing import SignatureError, verify_pagerduty, verify_slack

if TYPE_CHECKING:
    from supply_agent.metrics import Metrics
    from supply_agent.settings import Settings

log = structlog.get_logger("supply_agent.intake.accept")

__all__ = ["Intake", "Reply"]


@dataclass
class Reply:
    """What an HTTP handler answers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Intake:
    """Check a webhook, store it, answer: the only work done before the acknowledgement.

    Used by the in-process service (``pending`` is its queue, ``stored`` hands the id to its dispatcher)
    and by the intake process of ``supply-agent serve`` (``pending`` is the event log's count, and a
    worker process follows the log)."""

    def __init__(
        self,
        settings: Settings,
        events: EventLog,
        metrics: Metrics,
        *,
        pending: Callable[[], int],
        stored: Callable[[int], None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.wall = wall  # Slack's signing window is in real time, whatever the cluster's clock says
        self.settings = settings
        self.events = events
        self.metrics = metrics
        self._pending = pending
        self._stored = stored
        self._counters: dict[tuple[str, str], Any] = {}

    def count(self, source: str, result: str) -> None:
        c = self._counters.get((source, result))
        if c is None:
            c = self._counters[(source, result)] = self.metrics.events.labels(source, result)
        c.inc()

    async def pagerduty(self, body: bytes, signature: str | None) -> Reply:
        try:
            verify_pagerduty(
                body, signature, [s.get_secret_value() for s in self.settings.pagerduty_webhook_secrets]
            )
        except SignatureError as exc:
            self.count("pagerduty", "bad_signature")
            return Reply(exc.status, {"error": exc.reason})
        return await self.accept("pagerduty", body, classify_pagerduty)

    async def alertmanager(self, body: bytes, authorization: str | None) -> Reply:
        token = self.settings.alertmanager_token
        expected = f"Bearer {token.get_secret_value()}" if token else None
        if expected is None or not hmac.compare_digest((authorization or "").encode(), expected.encode()):
            self.count("alertmanager", "unauthorized")
            why = "no SUPPLY_AGENT_ALERTMANAGER_TOKEN configured" if expected is None else "bad bearer token"
            return Reply(401, {"error": why}, {"WWW-Authenticate": "Bearer"})
        return await self.accept("alertmanager", body, classify_alertmanager)

    def check_click(self, body: bytes, timestamp: str | None, signature: str | None) -> Classified | Reply:
        """A Slack interaction's signature and shape: what to store, or the refusal to answer."""
        secret = self.settings.slack_signing_secret
        try:
            verify_slack(body, timestamp, signature, secret.get_secret_value() if secret else "", self.wall())
        except SignatureError as exc:
            self.count("slack", "bad_signature")
            return Reply(exc.status, {"error": exc.reason})
        try:
            read_click(body)
        except ValueError as exc:
            self.count("slack", "bad_request")
            return Reply(400, {"error": f"not a block_actions interaction: {exc}"})
        self.count("slack", "accepted")
        return Classified("slack", click_key(body), "block_actions", True)

    async def slack(self, body: bytes, timestamp: str | None, signature: str | None) -> Reply:
        """A click stored at the edge: 200 as soon as it is committed, whether or not a worker is up
        (Slack does not send an interaction again, and wants an answer within 3 s). Never refused for a
        full queue: a human's answer is worth more than the backlog it joins."""
        checked = self.check_click(body, timestamp, signature)
        if isinstance(checked, Reply):
            return checked
        event_id = await asyncio.wrap_future(self.events.submit(checked, body))
        if event_id is None:
            return Reply(200, {"status": "duplicate"})
        if self._stored is not None:
            self._stored(event_id)
        return Reply(200, {"status": "stored", "event_id": event_id})

    async def accept(self, source: Source, body: bytes, classify: Callable[[bytes], Classified]) -> Reply:
        try:
            c = classify(body)
        except IntakeError as exc:
            self.count(source, "bad_request")
            return Reply(exc.status, {"error": exc.reason})
        if not c.handled:
            self.count(c.source, "ignored")
            log.info("webhook ignored", source=c.source, event_type=c.event_type, reason=c.reason)
            return Reply(202, {"status": "ignored", "reason": c.reason})
        if self._pending() >= self.settings.queue_max:
            if self.events.seen(c.dedup_key):
                self.count(c.source, "duplicate")
                return Reply(200, {"status": "duplicate"})
            self.count(c.source, "queue_full")
            retry = str(self.settings.retry_after_s)
            return Reply(503, {"error": "the intake queue is full; retry later"}, {"Retry-After": retry})
        event_id = await asyncio.wrap_future(self.events.submit(c, body))
        if event_id is None:
            self.count(c.source, "duplicate")
            return Reply(200, {"status": "duplicate"})
        if self._stored is not None:
            self._stored(event_id)
        self.count(c.source, "accepted")
        return Reply(202, {"status": "accepted", "event_id": event_id})
