"""Intake: a webhook is read, checked, stored durably, and only then acknowledged.

What comes in is untrusted: the body is checked for shape here (a clear 400 says what and where), the
event is stored as received (the raw bytes) with a dedup key, and a worker handles it later. Both
senders retry, so a delivery seen before is one event: PagerDuty by its event id, Alertmanager by the
content of the notification (group key, and each alert's fingerprint, status and start).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import DateTime, Integer, LargeBinary, String, Text, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from supply_agent.incident import AlertError, parse_alerts
from supply_agent.store import engine_for

Source = Literal["pagerduty", "alertmanager"]

# PagerDuty V3 incident events the agent acts on: a page opens (or joins) an incident; the rest are what
# humans do to it. Anything else PagerDuty sends is accepted and ignored.
PD_TRIGGERS = frozenset({"incident.triggered", "incident.reopened"})
PD_HUMAN = frozenset(
    {
        "incident.acknowledged",
        "incident.resolved",
        "incident.reassigned",
        "incident.escalated",
        "incident.delegated",
        "incident.unacknowledged",
    }
)
PD_HANDLED = PD_TRIGGERS | PD_HUMAN


class IntakeError(ValueError):
    """A webhook body that cannot be taken: the HTTP status to answer and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Classified:
    """What a checked webhook is: its dedup key, its type, and whether the agent acts on it."""

    source: Source
    dedup_key: str
    event_type: str
    handled: bool
    reason: str = ""


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise IntakeError(400, f"body is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise IntakeError(
            400, f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


def classify_pagerduty(body: bytes) -> Classified:
    """Check a PagerDuty V3 webhook body; 400 with the reason when it is not one."""
    data = _json(body)
    if not isinstance(data, Mapping) or not isinstance(data.get("event"), Mapping):
        raise IntakeError(400, "body: a PagerDuty V3 webhook is an object with an 'event' object")
    ev = data["event"]
    for key in ("id", "event_type"):
        if not isinstance(ev.get(key), str) or not ev[key]:
            raise IntakeError(400, f"body.event.{key}: expected a non-empty string")
    event_type = ev["event_type"]
    if event_type not in PD_HANDLED:
        return Classified("pagerduty", f"pd:{ev['id']}", event_type, False, f"{event_type} is not acted on")
    try:
        _, refs = parse_alerts(data)
    except AlertError as exc:
        raise IntakeError(400, str(exc)) from exc
    if not refs:
        return Classified("pagerduty", f"pd:{ev['id']}", event_type, False, "not an incident event")
    return Classified("pagerduty", f"pd:{ev['id']}", event_type, True)


def classify_alertmanager(body: bytes) -> Classified:
    """Check an Alertmanager (version "4") webhook body; 400 with the reason when it is not one."""
    data = _json(body)
    if not isinstance(data, Mapping) or "alerts" not in data:
        raise IntakeError(400, "body: an Alertmanager webhook is an object with an 'alerts' list")
    try:
        alerts, _ = parse_alerts(data)
    except AlertError as exc:
        raise IntakeError(400, str(exc)) from exc
    if not alerts:
        return Classified("alertmanager", "", "alertmanager", False, "no alerts in the notification")
    # A retry and a repeat notification carry the same alerts: one event. A flap (a new startsAt) is new.
    content = json.dumps(
        [
            str(data.get("groupKey", "")),
            sorted(
                (a.fingerprint, a.status, a.starts_at.isoformat() if a.starts_at else "", a.alertname)
                for a in alerts
            ),
        ]
    )
    key = "am:" + hashlib.sha256(content.encode()).hexdigest()[:40]
    return Classified("alertmanager", key, f"alertmanager.{data.get('status', 'firing')}", True)


# -- the event log ------------------------------------------------------------------------------------
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


class EventLog:
    """Every accepted webhook, as received, until a worker has handled it (and after, for the record)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _Base.metadata.create_all(engine)
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            self._insert: Any = pg_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            self._insert = sqlite_insert
        self._ops: queue.Queue[Any] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="intake-writer", daemon=True)
        self._writer.start()

    @classmethod
    def from_url(cls, url: str) -> EventLog:
        return cls(engine_for(url))

    def submit(self, c: Classified, body: bytes) -> Future[int | None]:
        """Queue one event for the writer; the future's value is its id, or None for a delivery seen before."""
        fut: Future[int | None] = Future()
        self._ops.put(("add", (c, body), fut))
        return fut

    def add(self, c: Classified, body: bytes) -> int | None:
        """Store one event (committed when this returns); its id, or None when stored before."""
        return self.submit(c, body).result()

    def _write_loop(self) -> None:
        # One writer, many requests per transaction (group commit): no lock contention on the intake
        # file, and a burst of webhooks costs one commit per batch instead of one per request.
        while True:
            op = self._ops.get()
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
                with self.engine.begin() as conn:
                    for kind, args, _ in batch:
                        results.append(self._apply(conn, kind, args))
            except Exception as exc:  # nothing in this batch was stored: every caller hears so
                for _, _, fut in batch:
                    fut.set_exception(exc)
                continue
            for (_, _, fut), value in zip(batch, results, strict=True):
                fut.set_result(value)

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

    def pending(self) -> list[int]:
        """Events stored and not yet handled, oldest first (what a restart picks up)."""
        with Session(self.engine) as s:
            return list(
                s.scalars(select(EventRow.id).where(EventRow.status == "pending").order_by(EventRow.id))
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
