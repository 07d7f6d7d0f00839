"""Customer notices: an outbox table, one notice per (incident, step), delivered by whatever channel
the operator wires (email, a status page, a ticket); the outbox is the record either way."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from supply_agent.schema import ensure_schema


class _Base(DeclarativeBase):
    pass


class _Notice(_Base):
    __tablename__ = "notify_outbox"
    __table_args__ = (UniqueConstraint("idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    incident_id: Mapped[str] = mapped_column(String(128), index=True)
    customer: Mapped[str] = mapped_column(String(128), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(64))


class Notice(BaseModel):
    id: int
    incident_id: str
    customer: str
    subject: str
    body: str
    created: bool


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        ensure_schema(engine)

    @classmethod
    def from_url(cls, url: str) -> Outbox:
        return cls(create_engine(url, pool_pre_ping=not url.startswith("sqlite")))

    def send(self, incident_id: str, customer: str, subject: str, body: str, idempotency_key: str) -> Notice:
        """Queue a notice; the same key again returns the first notice (``created=False``)."""
        with Session(self.engine) as session:
            existing = session.scalars(
                select(_Notice).where(_Notice.idempotency_key == idempotency_key)
            ).first()
            if existing is None:
                row = _Notice(
                    at=datetime.now(UTC),
                    incident_id=incident_id,
                    customer=customer,
                    subject=subject,
                    body=body,
                    idempotency_key=idempotency_key,
                )
                session.add(row)
                try:
                    session.commit()
                    return self._model(row, True)
                except IntegrityError:
                    session.rollback()
                    existing = session.scalars(
                        select(_Notice).where(_Notice.idempotency_key == idempotency_key)
                    ).one()
            return self._model(existing, False)

    def notices(self, incident_id: str | None = None) -> list[Notice]:
        with Session(self.engine) as session:
            q = select(_Notice).order_by(_Notice.id)
            if incident_id:
                q = q.where(_Notice.incident_id == incident_id)
            return [self._model(n, False) for n in session.scalars(q)]

    @staticmethod
    def _model(row: _Notice, created: bool) -> Notice:
        return Notice(
            id=row.id,
            incident_id=row.incident_id,
            customer=row.customer,
            subject=row.subject,
            body=row.body,
            created=created,
        )
