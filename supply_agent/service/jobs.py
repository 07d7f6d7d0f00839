"""Durable work: each thing the service does for a page it acknowledged is a stored job, retried until
it is done, or ended visibly when it never can be.

A job has a kind (what to do), a lane and a key. Jobs of one lane run one at a time, in the order
they were stored: an incident's PagerDuty writes (its notes before its resolve), its Slack messages
(the prompt before its update), its graph runs. Lanes run side by side, so a slow PagerDuty never
delays an approval prompt. The key makes storing idempotent: the same write-back stored twice (a run
repeated after a crash) is one job.

A failure that may pass (see :mod:`tools.errors`) puts the job back with capped exponential back-off
and full jitter, or the wait the other side asked for (``Retry-After``), whichever is longer; attempts,
the next attempt's time and the last error are stored with it. Only a permanent failure ends a job as
``dead``: kept, with why, listed in ``/metrics``, ``supply-agent incidents`` and the incident's
timeline. A job is at-least-once (a kill mid-run runs it again after the restart); each kind is
idempotent (executor keys, checkpoints), so that is harmless.

Times here are wall-clock seconds (``time.time``): back-off is real waiting, whatever clock the cluster
or a replay runs on.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Float, Integer, String, Text, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column

from sandbox.executor.fencing import LeaseRow, owner_gone
from supply_agent.schema import ensure_schema

Status = Literal["queued", "done", "dead"]


class _Base(DeclarativeBase):
    pass


class JobRow(_Base):
    __tablename__ = "service_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    lane: Mapped[str] = mapped_column(String(120), index=True)
    incident_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    first_failed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


@dataclass(frozen=True)
class Job:
    id: int
    key: str
    kind: str
    lane: str
    incident_id: str | None
    payload: dict[str, Any]
    status: Status
    attempts: int
    next_at: float
    created_at: float
    first_failed_at: float | None
    last_error: str | None

    @property
    def created(self) -> datetime:
        return datetime.fromtimestamp(self.created_at, UTC)


def _job(r: JobRow) -> Job:
    return Job(
        id=r.id,
        key=r.key,
        kind=r.kind,
        lane=r.lane,
        incident_id=r.incident_id,
        payload=json.loads(r.payload),
        status=r.status,  # type: ignore[arg-type]
        attempts=r.attempts,
        next_at=r.next_at,
        created_at=r.created_at,
        first_failed_at=r.first_failed_at,
        last_error=r.last_error,
    )


@dataclass(frozen=True)
class Backoff:
    """Capped exponential back-off with full jitter (AWS Architecture Blog, "Exponential Backoff And
    Jitter"): attempt n waits uniformly in [0, min(cap, base * 2**n)], at least ``floor``."""

    base_s: float = 0.5
    cap_s: float = 30.0
    floor_s: float = 0.05

    def delay(
        self, attempts: int, asked_s: float | None = None, rand: Callable[[], float] = random.random
    ) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** min(attempts, 30)))
        wait = max(self.floor_s, ceiling * rand())
        return max(wait, asked_s) if asked_s is not None else wait


class JobStore:
    """The job table (SQLite embedded, Postgres with ``database_url``)."""

    def __init__(self, engine: Engine, wall: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.wall = wall
        ensure_schema(engine)
        self._insert: Any = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    def put(
        self,
        kind: str,
        key: str,
        payload: dict[str, Any],
        *,
        lane: str,
        incident_id: str | None = None,
        delay_s: float = 0.0,
    ) -> int | None:
        """Store a job (committed when this returns); its id, or None when a job with this key exists."""
        now = self.wall()
        stmt = (
            self._insert(JobRow)
            .values(
                key=key[:120],
                kind=kind,
                lane=lane[:120],
                incident_id=incident_id,
                payload=json.dumps(payload, sort_keys=True, default=str),
                status="queued",
                attempts=0,
                next_at=now + delay_s,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(JobRow.id)
        )
        with self.engine.begin() as conn:
            row = conn.execute(stmt).first()
        return int(row[0]) if row else None

    @staticmethod
    def _head() -> Any:
        """A queued job with no queued job before it in its lane."""
        older = aliased(JobRow)
        earlier = select(older.id).where(
            older.lane == JobRow.lane, older.status == "queued", older.id < JobRow.id
        )
        return ~earlier.exists()

    def due(self, limit: int = 64, busy: frozenset[str] = frozenset(), owner: str | None = None) -> list[Job]:
        """The first queued job of each lane, where it is due, lanes in ``busy`` left out, and with
        ``owner`` the incidents whose lease another replica holds; oldest first."""
        now = self.wall()
        q = select(JobRow).where(JobRow.status == "queued", self._head(), JobRow.next_at <= now)
        if busy:
            q = q.where(JobRow.lane.not_in(sorted(busy)))
        if owner is not None:
            theirs = select(LeaseRow.name).where(LeaseRow.owner != owner, LeaseRow.expires_at >= now)
            if self.engine.dialect.name == "postgresql":  # a dead replica's incidents are due at once
                theirs = theirs.where(or_(LeaseRow.live_key.is_(None), ~owner_gone(LeaseRow.live_key)))
            q = q.where(or_(JobRow.incident_id.is_(None), JobRow.incident_id.not_in(theirs)))
        with Session(self.engine) as s:
            return [_job(r) for r in s.scalars(q.order_by(JobRow.id).limit(limit))]

    def next_due_in(self) -> float | None:
        """Seconds until the earliest lane head is due (0 when one is), None when none is queued."""
        with Session(self.engine) as s:
            at = s.scalar(select(func.min(JobRow.next_at)).where(JobRow.status == "queued", self._head()))
        return None if at is None else max(0.0, float(at) - self.wall())

    def done(self, job_id: int) -> None:
        self._set(job_id, status="done", finished_at=self.wall())

    def later(self, job_id: int, delay_s: float) -> None:
        """Put a job back, not failed: due again after ``delay_s`` (a timer whose moment has not come)."""
        self._set(job_id, next_at=self.wall() + delay_s)

    def retry(self, job: Job, error: str, delay_s: float) -> None:
        """Put a job back: one more attempt, due after ``delay_s``, with the error that stopped it."""
        now = self.wall()
        self._set(
            job.id,
            attempts=job.attempts + 1,
            next_at=now + delay_s,
            last_error=error[:2000],
            first_failed_at=job.first_failed_at if job.first_failed_at is not None else now,
        )

    def dead(self, job: Job, error: str) -> None:
        """End a job that can never succeed; kept, with why."""
        now = self.wall()
        self._set(
            job.id,
            status="dead",
            attempts=job.attempts + 1,
            last_error=error[:2000],
            finished_at=now,
            first_failed_at=job.first_failed_at if job.first_failed_at is not None else now,
        )

    def _set(self, job_id: int, **values: Any) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(update(JobRow).where(JobRow.id == job_id).values(**values))

    def get(self, key: str) -> Job | None:
        with Session(self.engine) as s:
            row = s.scalar(select(JobRow).where(JobRow.key == key[:120]))
            return _job(row) if row else None

    def with_status(self, status: Status, incident_id: str | None = None, limit: int = 1000) -> list[Job]:
        q = select(JobRow).where(JobRow.status == status)
        if incident_id is not None:
            q = q.where(JobRow.incident_id == incident_id)
        with Session(self.engine) as s:
            return [_job(r) for r in s.scalars(q.order_by(JobRow.id).limit(limit))]

    def failing(self) -> list[Job]:
        """Queued jobs that have failed at least once (what the dead man's switch watches)."""
        with Session(self.engine) as s:
            rows = s.scalars(
                select(JobRow)
                .where(JobRow.status == "queued", JobRow.first_failed_at.is_not(None))
                .order_by(JobRow.id)
            )
            return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with Session(self.engine) as s:
            return {
                str(st): int(n)
                for st, n in s.execute(select(JobRow.status, func.count()).group_by(JobRow.status))
            }

    def waiting(self, lane: str, kind: str) -> bool:
        """Whether a job of ``kind`` is queued in ``lane`` (a request it would cover anyway)."""
        with Session(self.engine) as s:
            q = select(JobRow.id).where(
                JobRow.lane == lane[:120], JobRow.kind == kind, JobRow.status == "queued"
            )
            return s.scalar(q.limit(1)) is not None

    def queued(self, incident_id: str) -> int:
        with Session(self.engine) as s:
            return int(
                s.scalar(
                    select(func.count()).where(JobRow.status == "queued", JobRow.incident_id == incident_id)
                )
                or 0
            )
