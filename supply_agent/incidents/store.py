"""The incident store: every alert as received (stored first), the incidents, their timelines.

SQLAlchemy 2 over a SQLite file by default, Postgres by URL. The graph's checkpoints live beside it
(``supply_agent.incidents.checkpoint``); this store is what people read: ``incidents list/show`` and the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sandbox.executor.audit import jsonable
from supply_agent.models.incident import AlertIn, IncidentState, TimelineEntry
from supply_agent.schema import ensure_schema


class _Base(DeclarativeBase):
    pass


class AlertRow(_Base):
    __tablename__ = "alert_events"
    __table_args__ = (UniqueConstraint("dedup_key", name="uq_alert_events_dedup"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedup_key: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(32))
    alertname: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    node: Mapped[str | None] = mapped_column(String(253), nullable=True)
    incident_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class IncidentRow(_Base):
    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_opened", "opened_at", "id"),
        Index("ix_incidents_status_opened", "status", "opened_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(500))
    alertname: Mapped[str] = mapped_column(String(200))
    playbook_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    severity: Mapped[str] = mapped_column(String(32), default="warning")
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | paused | closed
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    root_cause: Mapped[str | None] = mapped_column(String(200), nullable=True)
    escalation_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    human_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # "rack=east-h100-rack-000": the incident is about a shared component (supply_agent.incidents.topology)
    component: Mapped[str | None] = mapped_column(String(300), nullable=True)
    # The component's incident this one was merged into (its alerts moved there; no more writes here)
    folded_into: Mapped[str | None] = mapped_column(String(64), nullable=True)


class EntityRow(_Base):
    """An entity an incident affects (what the console filters on): a node, pool, customer or pod."""

    __tablename__ = "incident_entities"
    __table_args__ = (Index("ix_incident_entities_kind_value", "kind", "value"),)

    incident_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # node | pool | customer | pod
    value: Mapped[str] = mapped_column(String(253), primary_key=True)


POOL_LABELS = ("pool", "supply-agent.io/pool")  # an alert's label naming the node's pool


def entities_of(state: IncidentState) -> set[tuple[str, str]]:
    """The entities an incident affects, as far as it knows them: its alerts' nodes and pools, and
    what each step's decision resolved (nodes, pods, customers)."""
    out: set[tuple[str, str]] = set()
    for alert in state.alerts:
        if node := alert.labels.get("node"):
            out.add(("node", node))
        for label in POOL_LABELS:
            if pool := alert.labels.get(label):
                out.add(("pool", pool))
    for step in state.steps:
        if step.decision is not None:
            targets = step.decision.targets
            out |= {("node", n) for n in targets.nodes}
            out |= {("pod", p) for p in targets.pods}
            out |= {("customer", c) for c in targets.customers}
    return {(k, v[:253]) for k, v in out if v}


class TimelineRow(_Base):
    __tablename__ = "incident_timeline"
    __table_args__ = (UniqueConstraint("incident_id", "seq", name="uq_timeline_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    node: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class IncidentSummary(BaseModel):
    id: str
    title: str
    alertname: str
    playbook_id: str | None
    severity: str
    status: str
    outcome: str | None
    root_cause: str | None
    escalation_reason: str | None
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    human_owner: str | None = None
    summary: dict[str, Any] | None = None
    component: str | None = None
    folded_into: str | None = None


def engine_for(url: str) -> Engine:
    """An engine for the store's URL; SQLite in WAL mode, as several processes (CLI, server) share the file."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # On a server, a pooled connection is checked before use: after a restart of PostgreSQL (or a
    # connection it ended) the next use opens a new one instead of failing once per pooled connection.
    engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process crash
            cur.close()

    return engine


T = TypeVar("T")


def _with_seq_retry(write: Callable[[], T]) -> T:
    """Run a timeline write again when another writer took the same sequence number first (two
    transactions read the same highest number; the unique constraint refuses the second)."""
    for attempt in range(8):
        try:
            return write()
        except IntegrityError:
            if attempt == 7:
                raise
            time.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")


def _stored_alert(row: AlertRow) -> AlertIn | None:
    """A stored alert as received, naming the node the cluster knows it as where the fold found that
    (``IncidentStore.name_node``); None for a body that no longer parses."""
    try:
        alert = AlertIn.model_validate(row.body)
    except ValueError:
        return None
    if row.node and alert.node and row.node != alert.node:
        alert = alert.model_copy(update={"labels": {**alert.labels, "node": row.node}})
    return alert


def as_utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class IncidentStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        ensure_schema(engine)

    @classmethod
    def from_url(cls, url: str) -> IncidentStore:
        return cls(engine_for(url))

    # -- alerts: stored before anything else happens ---------------------------------------------------
    def record_alert(self, alert: AlertIn, body: dict[str, Any], received_at: datetime) -> bool:
        """Store one alert as received; False when this exact delivery was stored before (a retry) and
        was folded (it is in an incident, or it was a resolved alert that joined none)."""
        key = f"{alert.source}:{alert.fingerprint}:{alert.status}:{alert.starts_at.isoformat() if alert.starts_at else ''}"
        with Session(self.engine) as s, s.begin():
            seen = s.execute(
                select(AlertRow.id, AlertRow.incident_id).where(AlertRow.dedup_key == key[:200])
            ).first()
            if seen is not None:
                # Stored and in no incident: a fold cut short (a firing alert always lands in one).
                return seen[1] is None and alert.status == "firing"
            s.add(
                AlertRow(
                    dedup_key=key[:200],
                    fingerprint=alert.fingerprint[:64],
                    received_at=received_at,
                    source=alert.source,
                    alertname=alert.alertname,
                    status=alert.status,
                    node=alert.node,
                    body=jsonable(body),
                )
            )
        return True

    def name_node(self, fingerprint: str, received: str, node: str) -> None:
        """The node the cluster knows an alert's node as (``FoldReads.named``), kept with the alert as
        stored: where its stored alerts are read back (a thread rebuilt, alerts that joined, the fold's
        earlier alerts, the mass-failure count) the alert names that node. Its body stays as received."""
        with Session(self.engine) as s, s.begin():
            for row in s.scalars(
                select(AlertRow).where(AlertRow.fingerprint == fingerprint[:64], AlertRow.node == received)
            ):
                row.node = node

    def link_alerts(self, alerts: Iterable[AlertIn], incident_id: str) -> None:
        keys = [a.fingerprint[:64] for a in alerts]
        with Session(self.engine) as s, s.begin():
            for row in s.scalars(
                select(AlertRow).where(AlertRow.incident_id.is_(None), AlertRow.fingerprint.in_(keys))
            ):
                row.incident_id = incident_id

    def recent_node_alerts(self, now: datetime, window: timedelta) -> list[tuple[AlertIn, str]]:
        """Firing node alerts received within the window, each with the incident it is in, where that
        incident is about a node (not a component), was not merged, is no human's, and is open or closed
        within the window: what a later delivery may show to be one component's failure. The latest
        delivery of each alert; O(the alerts in the window)."""
        since = now - window
        with Session(self.engine) as s:
            rows = s.execute(
                select(AlertRow, IncidentRow)
                .join(IncidentRow, AlertRow.incident_id == IncidentRow.id)
                .where(AlertRow.node.is_not(None), AlertRow.received_at >= since)
                .order_by(AlertRow.id)
            ).all()
            latest: dict[str, tuple[AlertRow, IncidentRow]] = {}
            for alert_row, inc in rows:
                latest[alert_row.fingerprint] = (alert_row, inc)
            out = []
            for alert_row, inc in latest.values():
                closed = as_utc(inc.closed_at)
                if (
                    alert_row.status != "firing"
                    or inc.component is not None
                    or inc.folded_into is not None
                    or inc.human_owner
                    or (inc.status == "closed" and (closed is None or closed < since))
                ):
                    continue
                alert = _stored_alert(alert_row)
                if alert is not None:
                    out.append((alert, inc.id))
            return out

    def merge_into(self, incident_id: str, into: str, fingerprints: Iterable[str] = ()) -> None:
        """Merge an incident into another (its component's), in one transaction: its alerts with these
        fingerprints move there, and it is marked merged (the agent makes no more writes on it)."""
        keys = [f[:64] for f in fingerprints]
        with Session(self.engine) as s, s.begin():
            row = s.get(IncidentRow, incident_id)
            if row is None:
                raise KeyError(f"no incident {incident_id}")
            row.folded_into = into
            for alert in s.scalars(
                select(AlertRow).where(AlertRow.incident_id == incident_id, AlertRow.fingerprint.in_(keys))
            ):
                alert.incident_id = into

    def incident_of(self, fingerprint: str, closed_since: datetime | None = None) -> str | None:
        """The latest incident this alert (by fingerprint) belongs to; with ``closed_since``, only one that is
        still open or closed since then (the grouping window)."""
        with Session(self.engine) as s:
            q = (
                select(IncidentRow.id, IncidentRow.status, IncidentRow.closed_at)
                .join(AlertRow, AlertRow.incident_id == IncidentRow.id)
                .where(AlertRow.fingerprint == fingerprint[:64])
                .order_by(IncidentRow.opened_at.desc())
                .limit(1)
            )
            row = s.execute(q).first()
        if row is None:
            return None
        iid, status, closed_at = row
        if (
            closed_since is not None
            and status == "closed"
            and (as_utc(closed_at) or closed_since) < closed_since
        ):
            return None
        return str(iid)

    def alerts_for(self, incident_id: str) -> list[AlertIn]:
        """The alerts linked to an incident, as received (to rebuild a thread that never started)."""
        with Session(self.engine) as s:
            rows = s.scalars(
                select(AlertRow).where(AlertRow.incident_id == incident_id).order_by(AlertRow.id)
            )
            return [a for r in rows if (a := _stored_alert(r)) is not None]

    def alerting_nodes(self, now: datetime, window: timedelta) -> frozenset[str]:
        """Nodes with a firing alert received within the window (the mass-failure short circuit's input)."""
        since = now - window
        with Session(self.engine) as s:
            rows = s.execute(
                select(AlertRow.node, AlertRow.status, AlertRow.received_at).where(
                    AlertRow.node.is_not(None), AlertRow.received_at >= since
                )
            ).all()
        latest: dict[str, tuple[datetime, str]] = {}
        for node, status, at in rows:
            at = as_utc(at) or at
            if node and (node not in latest or at >= latest[node][0]):
                latest[node] = (at, status)
        return frozenset(n for n, (at, status) in latest.items() if status == "firing" and at >= since)

    # -- incidents -------------------------------------------------------------------------------------
    def open_incident(self, state: IncidentState, title: str) -> bool:
        """Open an incident; False when it is already open (the alerts join it)."""
        with Session(self.engine) as s, s.begin():
            row = s.get(IncidentRow, state.incident_id)
            if row is not None:
                return False
            s.add(
                IncidentRow(
                    id=state.incident_id,
                    title=title[:500],
                    alertname=state.alert.alertname,
                    severity=state.severity,
                    status="open",
                    opened_at=state.opened_at,
                    updated_at=state.opened_at,
                    component=(f"{state.component.kind}={state.component.name}" if state.component else None),
                )
            )
        return True

    def save(self, state: IncidentState, status: str, now: datetime) -> list[TimelineEntry]:
        """Mirror the graph's state: the incident row and any timeline entries not stored yet (returned)."""
        return _with_seq_retry(lambda: self._save(state, status, now))

    def _save(self, state: IncidentState, status: str, now: datetime) -> list[TimelineEntry]:
        with Session(self.engine) as s, s.begin():
            row = s.get(IncidentRow, state.incident_id)
            if row is None:
                raise KeyError(f"no incident {state.incident_id}")
            row.playbook_id = state.playbook_id
            row.severity = state.severity
            row.status = status
            row.outcome = state.outcome
            row.root_cause = state.root_cause
            row.escalation_reason = state.escalation_reason
            row.updated_at = now
            if status == "closed" and row.closed_at is None:
                row.closed_at = now
            if state.summary is not None:
                row.summary = jsonable(state.summary)
            known = {
                (str(k), str(v))
                for k, v in s.execute(
                    select(EntityRow.kind, EntityRow.value).where(EntityRow.incident_id == state.incident_id)
                )
            }
            for kind, value in sorted(entities_of(state) - known):
                s.add(EntityRow(incident_id=state.incident_id, kind=kind, value=value))
            have = s.scalar(
                select(func.count())
                .select_from(TimelineRow)
                .where(TimelineRow.incident_id == state.incident_id, TimelineRow.kind != "audit")
            )
            top = s.scalar(
                select(func.max(TimelineRow.seq)).where(TimelineRow.incident_id == state.incident_id)
            )
            new = state.timeline[have or 0 :]
            for i, entry in enumerate(new, start=(top if top is not None else -1) + 1):
                s.add(
                    TimelineRow(
                        incident_id=state.incident_id,
                        seq=i,
                        at=entry.at,
                        node=entry.node,
                        kind=entry.kind,
                        text=entry.text,
                        data=jsonable(entry.data),
                    )
                )
        return new

    def note(self, incident_id: str, at: datetime, text: str, **data: Any) -> None:
        """An audit line outside the graph (an ignored click, a refused approver): kind ``audit``."""
        _with_seq_retry(lambda: self._note(incident_id, at, text, data))

    def _note(self, incident_id: str, at: datetime, text: str, data: dict[str, Any]) -> None:
        with Session(self.engine) as s, s.begin():
            top = s.scalar(select(func.max(TimelineRow.seq)).where(TimelineRow.incident_id == incident_id))
            s.add(
                TimelineRow(
                    incident_id=incident_id,
                    seq=(top if top is not None else -1) + 1,
                    at=at,
                    node="intake",
                    kind="audit",
                    text=text,
                    data=jsonable(data),
                )
            )

    def set_owner(self, incident_id: str, owner: str | None) -> None:
        """A human took (or handed back) the incident: the agent makes no more writes on it."""
        with Session(self.engine) as s, s.begin():
            row = s.get(IncidentRow, incident_id)
            if row is not None:
                row.human_owner = owner

    def get(self, incident_id: str) -> IncidentSummary | None:
        with Session(self.engine) as s:
            row = s.get(IncidentRow, incident_id)
            return summary_of(row) if row else None

    def incidents(self, limit: int = 50, status: str | None = None) -> list[IncidentSummary]:
        with Session(self.engine) as s:
            q = select(IncidentRow).order_by(IncidentRow.opened_at.desc()).limit(limit)
            if status:
                q = q.where(IncidentRow.status == status)
            return [summary_of(r) for r in s.scalars(q)]

    def timeline(self, incident_id: str) -> list[TimelineEntry]:
        with Session(self.engine) as s:
            rows = s.scalars(
                select(TimelineRow).where(TimelineRow.incident_id == incident_id).order_by(TimelineRow.seq)
            )
            return [
                TimelineEntry(at=as_utc(r.at) or r.at, node=r.node, kind=r.kind, text=r.text, data=r.data)
                for r in rows
            ]

    def close(self) -> None:
        self.engine.dispose()


def summary_of(row: IncidentRow) -> IncidentSummary:
    """A stored incident as people read it (the API, the CLI, the console)."""
    return IncidentSummary(
        id=row.id,
        title=row.title,
        alertname=row.alertname,
        playbook_id=row.playbook_id,
        severity=row.severity,
        status=row.status,
        outcome=row.outcome,
        root_cause=row.root_cause,
        escalation_reason=row.escalation_reason,
        opened_at=as_utc(row.opened_at) or row.opened_at,
        updated_at=as_utc(row.updated_at) or row.updated_at,
        closed_at=as_utc(row.closed_at),
        human_owner=row.human_owner,
        summary=row.summary,
        component=row.component,
        folded_into=row.folded_into,
    )
