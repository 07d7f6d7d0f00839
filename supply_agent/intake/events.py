"""The event log: a webhook is read, checked, stored durably, and only then acknowledged (the hot path
that does so is :mod:`supply_agent.intake.accept`).

What comes in is untrusted: the body is checked for shape here (a clear 400 says what and where), the
event is stored as received (the raw bytes) with a dedup key, and a worker handles it later. Both
senders retry, so a delivery seen before is one event: PagerDuty by its event id, Alertmanager by the
content of the notification (group key, and each alert's fingerprint, status and start).
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy import DateTime, Float, Integer, LargeBinary, String, Text, or_, select, update
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
from supply_agent.schema import ensure_schema

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
    "IntakeError",
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
    # Handling that failed and may pass: tried again at next_at (epoch seconds), the error in note.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_at: Mapped[float | None] = mapped_column(Float, nullable=True)


@dataclass(frozen=True)
class StoredEvent:
    id: int
    source: Source
    event_type: str
    received_at: datetime
    body: bytes
    status: str
    attempts: int = 0


_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite
# A delivery seen before is a duplicate, unless its row failed: then the re-delivery revives it (a
# sender's retry is a second chance, never an answer from a dead row).
_SQLITE_ADD = (
    "INSERT INTO intake_events (dedup_key, source, event_type, received_at, body, status, attempts) "
    "VALUES (?, ?, ?, ?, ?, 'pending', 0) ON CONFLICT (dedup_key) DO UPDATE SET status = 'pending', "
    "attempts = 0, next_at = NULL, note = NULL WHERE intake_events.status = 'failed' RETURNING id"
)
_SQLITE_FINISH = "UPDATE intake_events SET status = ?, note = ?, handled_at = ? WHERE id = ?"
_SQLITE_RETRY = "UPDATE intake_events SET attempts = attempts + 1, next_at = ?, note = ? WHERE id = ?"
# The same on PostgreSQL, for psycopg's placeholders.
_PG_ADD, _PG_FINISH, _PG_RETRY = (q.replace("?", "%s") for q in (_SQLITE_ADD, _SQLITE_FINISH, _SQLITE_RETRY))
_RECOUNT_S = 0.5
_LOCK_WAIT_S = 5.0  # how long the writer waits for another process's write lock on the file


def _begin_sqlite(db: Any) -> None:
    """``BEGIN IMMEDIATE``, waiting for another process (the worker marks events handled) to release the
    file's write lock by polling every half millisecond or so.

    Why not SQLite's own busy timeout: its handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 and
    then 100 ms between tries and does not wake when the lock is freed, so a worker's write of a few
    milliseconds held every acknowledgement in the batch for 20 to 90 ms (the storm's p99)."""
    deadline = time.monotonic() + _LOCK_WAIT_S
    pause = 0.0002
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.002)


class EventLog:
    """Every accepted webhook, as received, until a worker has handled it (and after, for the record).

    With ``track_pending`` (the intake process) the writer keeps a count of stored events not yet
    handled, recounted from the table every half second, so intake can refuse (503) without a query
    when a worker elsewhere falls behind."""

    def __init__(self, engine: Engine, *, track_pending: bool = False) -> None:
        self.engine = engine
        ensure_schema(engine)
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
        self._raw: Any = None  # the writer thread's own DB-API connection (see _write_loop)
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
        # file, and a burst of webhooks costs one commit per batch instead of one per request. The
        # writer uses its own DB-API connection and plain SQL (on PostgreSQL pipelined, one round trip
        # per batch): a tenth of the CPU of the ORM path, which matters as every request's
        # acknowledgement waits on it. A PostgreSQL connection that breaks is opened anew for the next
        # batch; the batch it broke in is refused to its callers (they answer 503: the sender retries).
        try:
            self._write_batches()
        finally:
            self._close_raw()

    def _db(self) -> Any:
        """The writer's own DB-API connection (opened on first use and after a failure); None: the
        portable path."""
        if self._raw is None and self.engine.dialect.name in ("sqlite", "postgresql"):
            try:
                raw = self.engine.raw_connection()
                raw.detach()  # the writer's own: never handed back to the pool
                db: Any = raw.dbapi_connection
                if self._sqlite:
                    db.isolation_level = None  # transactions are begun and committed here
                    db.execute("PRAGMA busy_timeout=0")  # the wait for the lock is _begin_sqlite's
                else:
                    db.autocommit = False
                self._raw = raw
            except Exception as exc:  # the portable path below still works (and says why it fails)
                log.warning("no DB-API connection for the intake writer", error=str(exc)[:300])
                return None
        return None if self._raw is None else self._raw.dbapi_connection

    def _close_raw(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.close()
            except Exception:
                log.debug("the intake writer's connection would not close")

    def _write_batches(self) -> None:
        while True:
            try:
                op = self._ops.get(timeout=_RECOUNT_S if self._track else None)
            except queue.Empty:
                self._recount(force=True)
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
                db = self._db()
                if db is not None and self._sqlite:
                    results = self._apply_sqlite(db, batch)
                elif db is not None:
                    results = self._apply_postgres(db, batch)
                else:
                    with self.engine.begin() as conn:
                        for kind, args, _ in batch:
                            results.append(self._apply(conn, kind, args))
            except Exception as exc:  # nothing in this batch was stored: every caller hears so
                if not self._sqlite:
                    self._close_raw()  # a broken connection is not used again
                for _, _, fut in batch:
                    fut.set_exception(exc)
                continue
            if self._track:
                self._pending_est += sum(
                    1 for (kind, _, _), value in zip(batch, results, strict=True) if kind == "add" and value
                )
                self._recount()
            for (_, _, fut), value in zip(batch, results, strict=True):
                fut.set_result(value)

    def _recount(self, force: bool = False) -> None:
        if not self._track or (not force and time.monotonic() - self._counted_at < _RECOUNT_S):
            return
        try:
            db = self._db() if self._sqlite else None
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
        _begin_sqlite(db)
        try:
            for kind, args, _ in batch:
                now = datetime.now(UTC).strftime(_SQLITE_TIME)
                if kind == "add":
                    c, body = args
                    row = db.execute(_SQLITE_ADD, (c.dedup_key, c.source, c.event_type, now, body)).fetchone()
                    results.append(int(row[0]) if row else None)
                elif kind == "retry":
                    db.executemany(
                        _SQLITE_RETRY, [(at, note[:2000] or None, event_id) for event_id, note, at in args]
                    )
                    results.append(None)
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

    def _apply_postgres(self, db: Any, batch: list[Any]) -> list[Any]:
        """The batch in one transaction, each run of adds as one pipelined ``executemany``."""
        results: list[Any] = []
        try:
            with db.cursor() as cur:
                i = 0
                while i < len(batch):
                    kind, args, _ = batch[i]
                    now = datetime.now(UTC)
                    if kind == "add":
                        j = i
                        while j < len(batch) and batch[j][0] == "add":
                            j += 1
                        params = [
                            (c.dedup_key, c.source, c.event_type, now, body)
                            for (c, body) in (op[1] for op in batch[i:j])
                        ]
                        cur.executemany(_PG_ADD, params, returning=True)
                        for _ in range(j - i):
                            row = cur.fetchone()
                            results.append(int(row[0]) if row else None)
                            cur.nextset()
                        i = j
                        continue
                    if kind == "retry":
                        cur.executemany(
                            _PG_RETRY, [(at, note[:2000] or None, event_id) for event_id, note, at in args]
                        )
                    else:
                        cur.executemany(
                            _PG_FINISH,
                            [(status, note[:2000] or None, now, event_id) for event_id, status, note in args],
                        )
                    results.append(None)
                    i += 1
            db.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection cannot roll back: it is dropped
                db.rollback()
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
                .on_conflict_do_update(
                    index_elements=["dedup_key"],
                    set_={"status": "pending", "attempts": 0, "next_at": None, "note": None},
                    where=EventRow.status == "failed",
                )
                .returning(EventRow.id)
            )
            row = conn.execute(stmt).first()
            return int(row[0]) if row else None
        if kind == "retry":
            for event_id, note, at in args:
                conn.execute(
                    update(EventRow)
                    .where(EventRow.id == event_id)
                    .values(attempts=EventRow.attempts + 1, next_at=at, note=note[:2000] or None)
                )
            return None
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

    def pending(self, after: int = 0, *, due: bool = True) -> list[int]:
        """Events stored and not yet handled, oldest first (what a restart picks up); with ``after``,
        only those stored after that id (what a worker following the log has not seen yet). With
        ``due`` (the default), an event waiting for its next attempt is left out until its time."""
        q = select(EventRow.id).where(EventRow.status == "pending", EventRow.id > after)
        if due:
            q = q.where(or_(EventRow.next_at.is_(None), EventRow.next_at <= time.time()))
        with Session(self.engine) as s:
            return list(s.scalars(q.order_by(EventRow.id)))

    def retry_many(self, later: list[tuple[int, str, float]]) -> None:
        """Put events back for another attempt: (id, the error, when as epoch seconds); committed on return."""
        if not later:
            return
        fut: Future[None] = Future()
        self._ops.put(("retry", tuple(later), fut))
        fut.result()

    def stuck(self, older_than_s: float) -> list[StoredEvent]:
        """Pending events that failed at least once and were received longer ago than ``older_than_s``."""
        since = datetime.now(UTC) - timedelta(seconds=older_than_s)
        with Session(self.engine) as s:
            rows = s.scalars(
                select(EventRow)
                .where(EventRow.status == "pending", EventRow.attempts > 0, EventRow.received_at < since)
                .order_by(EventRow.id)
                .limit(500)
            )
            return [_stored(r) for r in rows]

    def failed(self, limit: int = 100) -> list[tuple[StoredEvent, str]]:
        """Events whose handling failed for good, newest first, with why (the dead letters)."""
        with Session(self.engine) as s:
            rows = s.scalars(
                select(EventRow).where(EventRow.status == "failed").order_by(EventRow.id.desc()).limit(limit)
            )
            return [(_stored(r), r.note or "") for r in rows]

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
    source: Source = row.source if row.source in ("pagerduty", "slack") else "alertmanager"  # type: ignore[assignment]
    return StoredEvent(row.id, source, row.event_type, at, bytes(row.body), row.status, row.attempts or 0)
