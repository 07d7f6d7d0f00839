"""Approval prompts sent to humans (Slack): one per pending approval, bound to the action's hash.

A click is claimed atomically (pending -> deciding), so a double click, a replayed request or a click
on an answered or expired prompt changes nothing; the claim is stored before the graph resumes, so a
restart finishes what a claimed click began.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, DateTime, Integer, String, UniqueConstraint, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from supply_agent.incidents.store import as_utc
from supply_agent.schema import ensure_schema

Status = Literal["pending", "deciding", "approved", "rejected", "expired"]
# What a claimed prompt becomes once its answer is applied.
ANSWERED: dict[str, Status] = {"approve": "approved", "reject": "rejected", "expire": "expired"}


class _Base(DeclarativeBase):
    pass


class PromptRow(_Base):
    __tablename__ = "approval_prompts"
    __table_args__ = (UniqueConstraint("incident_id", "action_hash", name="uq_prompt_action"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    action_hash: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    asked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)  # approve | reject | expire
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The request asked, for a prompt with no graph thread behind it (an MCP caller's); else null.
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


@dataclass(frozen=True)
class Prompt:
    id: int
    incident_id: str
    action_hash: str
    step: int
    status: Status
    channel: str | None
    ts: str | None
    asked_at: datetime
    expires_at: datetime
    decision: str | None
    decided_by: str | None
    decided_at: datetime | None
    request: dict[str, Any] | None = None

    @property
    def standalone(self) -> bool:
        """No graph thread waits on it (it carries its own request): an answer only finishes it."""
        return self.request is not None


def _prompt(r: PromptRow) -> Prompt:
    return Prompt(
        id=r.id,
        incident_id=r.incident_id,
        action_hash=r.action_hash,
        step=r.step,
        status=r.status,  # type: ignore[arg-type]
        channel=r.channel,
        ts=r.ts,
        asked_at=as_utc(r.asked_at) or r.asked_at,
        expires_at=as_utc(r.expires_at) or r.expires_at,
        decision=r.decision,
        decided_by=r.decided_by,
        decided_at=as_utc(r.decided_at),
        request=r.request,
    )


class PromptStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        ensure_schema(engine)

    def add(
        self,
        incident_id: str,
        action_hash: str,
        step: int,
        asked_at: datetime,
        expires_at: datetime,
        request: dict[str, Any] | None = None,
    ) -> bool:
        """Record a prompt about to be sent; False when it was recorded before (sent already, or sending)."""
        try:
            with Session(self.engine) as s, s.begin():
                s.add(
                    PromptRow(
                        incident_id=incident_id,
                        action_hash=action_hash,
                        step=step,
                        status="pending",
                        asked_at=asked_at,
                        expires_at=expires_at,
                        request=request,
                    )
                )
        except IntegrityError:
            return False
        return True

    def set_message(self, incident_id: str, action_hash: str, channel: str, ts: str) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(
                update(PromptRow)
                .where(PromptRow.incident_id == incident_id, PromptRow.action_hash == action_hash)
                .values(channel=channel, ts=ts)
            )

    def get(self, incident_id: str, action_hash: str) -> Prompt | None:
        with Session(self.engine) as s:
            row = s.scalar(
                select(PromptRow).where(
                    PromptRow.incident_id == incident_id, PromptRow.action_hash == action_hash
                )
            )
            return _prompt(row) if row else None

    def by_id(self, prompt_id: int) -> Prompt | None:
        with Session(self.engine) as s:
            row = s.get(PromptRow, prompt_id)
            return _prompt(row) if row else None

    def claim(
        self, incident_id: str, action_hash: str, decision: str, who: str, at: datetime
    ) -> Prompt | None:
        """Take a pending prompt for one answer (atomic); None when it is not pending any more."""
        with Session(self.engine) as s, s.begin():
            res: Any = s.execute(
                update(PromptRow)
                .where(
                    PromptRow.incident_id == incident_id,
                    PromptRow.action_hash == action_hash,
                    PromptRow.status == "pending",
                )
                .values(status="deciding", decision=decision, decided_by=who, decided_at=at)
            )
            if res.rowcount != 1:
                return None
        return self.get(incident_id, action_hash)

    def finish(self, incident_id: str, action_hash: str, status: Status) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(
                update(PromptRow)
                .where(PromptRow.incident_id == incident_id, PromptRow.action_hash == action_hash)
                .values(status=status)
            )

    def with_status(self, *status: Status) -> list[Prompt]:
        with Session(self.engine) as s:
            rows = s.scalars(select(PromptRow).where(PromptRow.status.in_(status)).order_by(PromptRow.id))
            return [_prompt(r) for r in rows]
