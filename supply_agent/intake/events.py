"""Intake: a webhook is read, checked, stored durably, and only then acknowledged.

What comes in is untrusted: the body is checked for shape here (a clear 400 says what and where), the
event is stored as received (the raw bytes) with a dedup key, and a worker handles it later. Both
senders retry, so a delivery seen before is one event: PagerDuty by its event id, Alertmanager by the
content of the notification (group key, and each alert's fingerprint, status and start).
"""

from __future__ import annotations

import asyncio
import hmac
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import structlog
from sqlalchemy import DateTime, Integer, LargeBinary, String, Text, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from supply_agent.incidents.store import engine_for
from supply_agent.intake.bodies import (  # re-exported: the body checks live there
    MAX_DEPTH,
    PD_HANDLED,
    PD_HUMAN,
    PD_ID,
    PD_TRIGGERS,
    Classified,
    IntakeError,
    Source,
    classify_alertmanager,
    classify_pagerduty,
)
from supply_agent.intake.signing import SignatureError, verify_pagerduty

if TYPE_CHECKING:
    from supply_agent.metrics import Metrics
    from supply_agent.settings import Settings

log = structlog.get_logger("supply_agent.intake.events")


__all__ = [
    "MAX_DEPTH",
    "PD_HANDLED",
    "PD_HUMAN",
    "PD_ID",
    "PD_TRIGGERS",
    "Classified",
    "EventLog",
    "EventRow",
    "Intake",
    "IntakeError",
    "Reply",
    "Source",
    "StoredEvent",
    "classify_alertmanager",
    "classify_pagerduty",
]


class _Base(DeclarativeBase):
    pass


class EventRow(_Base):
    __tablename__ = "intake_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedup_key: Mapped[str] = mapped_column(String(120), unique=True)
    source: Mapped[str] = mapped_column(String(32))
    event_type: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    handled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class StoredEvent:
    id: int
    source: Source
    event_type: str
    received_at: datetime
    body: bytes
    status: str


_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite
_SQLITE_ADD = (
    "INSERT INTO intake_events (dedup_key, source, event_type, received_at, body, status) "
    "VALUES (?, ?, ?, ?, ?, 'pending') ON CONFLICT (dedup_key) DO NOTHING RETURNING id"
)
_SQLITE_FINISH = "UPDATE intake_events SET status = ?, note = ?, handled_at = ? WHERE id = ?"
_RECOUNT_S = 0.5


class EventLog:
    """Every accepted webhook, as received, until a worker has handled it (and after, for the record).

    With ``track_pending`` (the intake process) the writer keeps a count of stored events not yet
    handled, recounted from the table every half second, so intake can refuse (503) without a query
    when a worker elsewhere falls behind."""

    def __init__(self, engine: Engine, *, track_pending: bool = False) -> None:
        self.engine = engine
        _Base.metadata.create_all(engine)
        self._sqlite = engine.dialect.name == "sqlite"
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            self._insert: Any = pg_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            self._insert = sqlite_insert
        self._track = track_pending
        self._pending_est = 0
        self._counted_at = 0.0
        self._ops: queue.Queue[Any] = queue.Queue()
        if track_pending:
            self._pending_est = self._count_pending()
            self._counted_at = time.monotonic()
        self._writer = threading.Thread(target=self._write_loop, name="intake-writer", daemon=True)
        self._writer.start()

    @classmethod
    def from_url(cls, url: str, *, track_pending: bool = False) -> EventLog:
        return cls(engine_for(url), track_pending=track_pending)

    def submit(self, c: Classified, body: bytes) -> Future[int | None]:
        """Queue one event for the writer; the future's value is its id, or None for a delivery seen before."""
        fut: Future[int | None] = Future()
        self._ops.put(("add", (c, body), fut))
        return fut

    def add(self, c: Classified, body: bytes) -> int | None:
        """Store one event (committed when this returns); its id, or None when stored before."""
        return self.submit(c, body).result()

    def pending_estimate(self) -> int:
        """Stored events not yet handled (``track_pending`` only): exact after each recount, and counts
        every event stored since; events handled since the last recount are still counted."""
        return self._pending_est

    def _write_loop(self) -> None:
        # One writer, many requests per transaction (group commit): no lock contention on the intake
        # file, and a burst of webhooks costs one commit per batch instead of one per request. On SQLite
        # the writer uses its own DB-API connection and plain SQL: a tenth of the CPU of the ORM path,
        # which matters as every request's acknowledgement waits on it.
        raw: Any = None
        db: Any = None
        if self._sqlite:
            try:
                raw = self.engine.raw_connection()
                raw.detach()  # the writer's own: never handed back to the pool
                db = raw.dbapi_connection
                db.isolation_level = None  # transactions are begun and committed here
            except Exception:  # the portable path below still works
                log.exception("no DB-API connection for the intake writer")
                db = None
        try:
            self._write_batches(db)
        finally:
            if raw is not None:
                raw.close()

    def _write_batches(self, db: Any) -> None:
        while True:
            try:
                op = self._ops.get(timeout=_RECOUNT_S if self._track else None)
            except queue.Empty:
                self._recount(db, force=True)
                continue
            if op is None:
                return
            batch = [op]
            while len(batch) < 512:
                try:
                    more = self._ops.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._ops.put(None)
                    break
                batch.append(more)
            results: list[Any] = []
            try:
                if db is not None:
                    results = self._apply_sqlite(db, batch)
                else:
                    with self.engine.begin() as conn:
                        for kind, args, _ in batch:
                            results.append(self._apply(conn, kind, args))
            except Exception as exc:  # nothing in this batch was stored: every caller hears so
                for _, _, fut in batch:
                    fut.set_exception(exc)
                continue
            if self._track:
                self._pending_est += sum(
                    1 for (kind, _, _), value in zip(batch, results, strict=True) if kind == "add" and value
                )
                self._recount(db)
            for (_, _, fut), value in zip(batch, results, strict=True):
                fut.set_result(value)

    def _recount(self, db: Any, force: bool = False) -> None:
        if not self._track or (not force and time.monotonic() - self._counted_at < _RECOUNT_S):
            return
        try:
            if db is not None:
                n = int(
                    db.execute("SELECT count(*) FROM intake_events WHERE status = 'pending'").fetchone()[0]
                )
            else:
                n = self._count_pending()
        except Exception:  # the estimate stays as it was; the next recount tries again
            return
        self._pending_est = n
        self._counted_at = time.monotonic()

    def _count_pending(self) -> int:
        from sqlalchemy import func

        with Session(self.engine) as s:
            return int(s.scalar(select(func.count()).where(EventRow.status == "pending")) or 0)

    def _apply_sqlite(self, db: Any, batch: list[Any]) -> list[Any]:
        results: list[Any] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for kind, args, _ in batch:
                now = datetime.now(UTC).strftime(_SQLITE_TIME)
                if kind == "add":
                    c, body = args
                    row = db.execute(_SQLITE_ADD, (c.dedup_key, c.source, c.event_type, now, body)).fetchone()
                    results.append(int(row[0]) if row else None)
                else:
                    db.executemany(
                        _SQLITE_FINISH,
                        [(status, note[:2000] or None, now, event_id) for event_id, status, note in args],
                    )
                    results.append(None)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return results

    def _apply(self, conn: Any, kind: str, args: tuple[Any, ...]) -> Any:
        if kind == "add":
            c, body = args
            stmt = (
                self._insert(EventRow)
                .values(
                    dedup_key=c.dedup_key,
                    source=c.source,
                    event_type=c.event_type,
                    received_at=datetime.now(UTC),
                    body=body,
                    status="pending",
                )
                .on_conflict_do_nothing(index_elements=["dedup_key"])
                .returning(EventRow.id)
            )
            row = conn.execute(stmt).first()
            return int(row[0]) if row else None
        now = datetime.now(UTC)
        for event_id, status, note in args:
            conn.execute(
                update(EventRow)
                .where(EventRow.id == event_id)
                .values(status=status, note=note[:2000] or None, handled_at=now)
            )
        return None

    def seen(self, dedup_key: str) -> bool:
        with Session(self.engine) as s:
            return s.scalar(select(EventRow.id).where(EventRow.dedup_key == dedup_key)) is not None

    def get(self, event_id: int) -> StoredEvent | None:
        with Session(self.engine) as s:
            row = s.get(EventRow, event_id)
            return _stored(row) if row else None

    def get_many(self, event_ids: list[int]) -> dict[int, StoredEvent]:
        """Several events in one query (a worker's batch), by id; ids not stored are left out."""
        out: dict[int, StoredEvent] = {}
        with Session(self.engine) as s:
            for i in range(0, len(event_ids), 500):
                for row in s.scalars(select(EventRow).where(EventRow.id.in_(event_ids[i : i + 500]))):
                    out[row.id] = _stored(row)
        return out

    def pending(self, after: int = 0) -> list[int]:
        """Events stored and not yet handled, oldest first (what a restart picks up); with ``after``,
        only those stored after that id (what a worker following the log has not seen yet)."""
        with Session(self.engine) as s:
            return list(
                s.scalars(
                    select(EventRow.id)
                    .where(EventRow.status == "pending", EventRow.id > after)
                    .order_by(EventRow.id)
                )
            )

    def finish(self, event_id: int, status: Literal["handled", "ignored", "failed"], note: str = "") -> None:
        self.finish_many([(event_id, status, note)])

    def finish_many(self, done: list[tuple[int, str, str]]) -> None:
        """Mark events handled (or ignored, or failed: kept, with why); committed when this returns."""
        if not done:
            return
        fut: Future[None] = Future()
        self._ops.put(("finish", tuple(done), fut))
        fut.result()

    def counts(self) -> dict[str, int]:
        from sqlalchemy import func

        with Session(self.engine) as s:
            return {
                str(status): int(n)
                for status, n in s.execute(select(EventRow.status, func.count()).group_by(EventRow.status))
            }

    def close(self) -> None:
        self._ops.put(None)
        self._writer.join(10)
        self.engine.dispose()


def _stored(row: EventRow) -> StoredEvent:
    at = row.received_at if row.received_at.tzinfo else row.received_at.replace(tzinfo=UTC)
    source: Source = "pagerduty" if row.source == "pagerduty" else "alertmanager"
    return StoredEvent(row.id, source, row.event_type, at, bytes(row.body), row.status)


# -- the hot path: checked, stored, answered -----------------------------------------------------------
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
    ) -> None:
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
