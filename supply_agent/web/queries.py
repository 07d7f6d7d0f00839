"""What the console reads, and nothing else: a handful of indexed queries per page over the stores
(incidents, their entities and timelines, the audit log, approval prompts, jobs, events).

Every query is bounded: a list is keyset-paged on ``(opened_at, id)`` (an index each, with and without
the status) and filtered on the entity index, so a page costs the same on 100 or 100,000 incidents; an
incident page reads that incident's rows only. Read-only: no query here writes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from sandbox.executor.audit import AuditRecord, NodeOutRow
from supply_agent.incidents.store import (
    AlertRow,
    EntityRow,
    IncidentRow,
    IncidentSummary,
    TimelineRow,
    summary_of,
)
from supply_agent.intake.events import EventRow
from supply_agent.service.jobs import JobRow
from supply_agent.service.prompts import PromptRow

StatusFilter = Literal["open", "paused", "escalated", "mitigated", "closed"]


class IncidentFilter(BaseModel):
    """The list's filters, as the query string gives them (each checked; a bad one is a 400 naming it)."""

    status: StatusFilter | None = None
    klass: str | None = Field(None, max_length=200, description="The class: alert name or playbook.")
    pool: str | None = Field(None, max_length=253)
    node: str | None = Field(None, max_length=253)
    customer: str | None = Field(None, max_length=253)
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = Field(None, max_length=200)
    limit: int = Field(50, ge=1, le=200)

    @field_validator("status", "klass", "pool", "node", "customer", "cursor", "since", "until", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    def query_string(self, **change: Any) -> str:
        """These filters (with ``change``) as a query string, for links."""
        from urllib.parse import urlencode

        values = self.model_dump() | change
        pairs = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()}
        return urlencode({k: v for k, v in pairs.items() if v not in (None, "") and k != "limit"})


@dataclass
class IncidentPage:
    lines: list[IncidentSummary]
    next_cursor: str | None


@dataclass
class IncidentDetail:
    line: IncidentSummary
    timeline: list[TimelineRow]
    entities: dict[str, list[str]]
    audit: list[AuditRecord]
    prompts: list[PromptRow]
    jobs: list[JobRow]
    alerts: list[AlertRow] = field(default_factory=list)


def _cursor(line: IncidentSummary) -> str:
    raw = f"{line.opened_at.astimezone(UTC).isoformat()}|{line.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _uncursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, iid = raw.split("|", 1)
        return datetime.fromisoformat(at), iid
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("cursor: not one this console made (follow the page's own 'older' link)") from exc


class ConsoleReads:
    """The console's queries. ``engine``: the incidents' database; ``audit_engine`` the audit log's (the
    same database under ``serve`` on PostgreSQL; a file of its own on the embedded SQLite default)."""

    def __init__(
        self, engine: Engine, audit_engine: Engine | None = None, events_engine: Engine | None = None
    ):
        self.engine = engine
        self.audit_engine = audit_engine or engine
        self.events_engine = events_engine

    def incidents(self, f: IncidentFilter) -> IncidentPage:
        q = select(IncidentRow)
        if f.status in ("open", "paused", "closed"):
            q = q.where(IncidentRow.status == f.status)
        elif f.status in ("escalated", "mitigated"):
            q = q.where(IncidentRow.outcome == f.status)
        if f.klass:
            q = q.where(or_(IncidentRow.alertname == f.klass, IncidentRow.playbook_id == f.klass))
        for kind, value in (("pool", f.pool), ("node", f.node), ("customer", f.customer)):
            if value:
                q = q.where(
                    IncidentRow.id.in_(
                        select(EntityRow.incident_id).where(EntityRow.kind == kind, EntityRow.value == value)
                    )
                )
        if f.since:
            q = q.where(IncidentRow.opened_at >= f.since)
        if f.until:
            q = q.where(IncidentRow.opened_at < f.until)
        if f.cursor:
            at, iid = _uncursor(f.cursor)
            q = q.where(
                or_(IncidentRow.opened_at < at, and_(IncidentRow.opened_at == at, IncidentRow.id < iid))
            )
        q = q.order_by(IncidentRow.opened_at.desc(), IncidentRow.id.desc()).limit(f.limit + 1)
        with Session(self.engine) as s:
            lines = [summary_of(r) for r in s.scalars(q)]
        more = len(lines) > f.limit
        lines = lines[: f.limit]
        return IncidentPage(lines, _cursor(lines[-1]) if more and lines else None)

    def incident(self, incident_id: str, *, timeline_limit: int = 2000) -> IncidentDetail | None:
        with Session(self.engine) as s:
            row = s.get(IncidentRow, incident_id)
            if row is None:
                return None
            timeline = list(
                s.scalars(
                    select(TimelineRow)
                    .where(TimelineRow.incident_id == incident_id)
                    .order_by(TimelineRow.seq)
                    .limit(timeline_limit)
                )
            )
            entities: dict[str, list[str]] = {}
            for kind, value in s.execute(
                select(EntityRow.kind, EntityRow.value)
                .where(EntityRow.incident_id == incident_id)
                .order_by(EntityRow.kind, EntityRow.value)
            ):
                entities.setdefault(kind, []).append(value)
            prompts = list(
                s.scalars(
                    select(PromptRow).where(PromptRow.incident_id == incident_id).order_by(PromptRow.id)
                )
            )
            jobs = list(
                s.scalars(select(JobRow).where(JobRow.incident_id == incident_id).order_by(JobRow.id))
            )
            alerts = list(
                s.scalars(
                    select(AlertRow)
                    .where(AlertRow.incident_id == incident_id)
                    .order_by(AlertRow.id)
                    .limit(timeline_limit)
                )
            )
            detail = IncidentDetail(
                line=summary_of(row),
                timeline=timeline,
                entities=entities,
                audit=[],
                prompts=prompts,
                jobs=jobs,
                alerts=alerts,
            )
        with Session(self.audit_engine) as s:
            detail.audit = list(
                s.scalars(
                    select(AuditRecord)
                    .where(AuditRecord.incident_id == incident_id)
                    .order_by(AuditRecord.id)
                    .limit(timeline_limit)
                )
            )
        return detail

    def audit_since(self, since: datetime) -> list[AuditRecord]:
        """The audit rows of the budget windows (the newest day): what the containment view counts."""
        with Session(self.audit_engine) as s:
            return list(
                s.scalars(
                    select(AuditRecord).where(AuditRecord.at >= since).order_by(AuditRecord.id).limit(50_000)
                )
            )

    def nodes_out(self) -> list[NodeOutRow]:
        """The nodes the agent has out of service now (however long ago it took them out)."""
        with Session(self.audit_engine) as s:
            return list(s.scalars(select(NodeOutRow).order_by(NodeOutRow.audit_id).limit(50_000)))

    def pending_prompts(self, limit: int = 200) -> list[PromptRow]:
        with Session(self.engine) as s:
            return list(
                s.scalars(
                    select(PromptRow)
                    .where(PromptRow.status == "pending")
                    .order_by(PromptRow.expires_at)
                    .limit(limit)
                )
            )

    def dead_letters(self, limit: int = 100) -> tuple[list[JobRow], list[EventRow]]:
        with Session(self.engine) as s:
            jobs = list(
                s.scalars(
                    select(JobRow).where(JobRow.status == "dead").order_by(JobRow.id.desc()).limit(limit)
                )
            )
        events: list[EventRow] = []
        if self.events_engine is not None:
            with Session(self.events_engine) as s:
                events = list(
                    s.scalars(
                        select(EventRow)
                        .where(EventRow.status == "failed")
                        .order_by(EventRow.id.desc())
                        .limit(limit)
                    )
                )
        return jobs, events
