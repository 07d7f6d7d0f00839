"""The ledger's SQLAlchemy tables, and the two column types that keep money and time exact.

One declarative schema serves a SQLite file and Postgres. Money is `NUMERIC` on Postgres; SQLite has
no decimal type (SQLAlchemy would go through float), so there `ExactDecimal` stores an integer count
of the column's smallest unit, which keeps sums exact in SQL as well. `UTCDateTime` stores naive UTC
everywhere and gives back aware UTC datetimes. The string widths here are the ones the request
models (models.py) hold a request to.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC(precision, scale) where the database has it; a scaled integer on SQLite."""

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int) -> None:
        super().__init__(precision, scale, asdecimal=True)
        self.precision, self.scale = precision, scale

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        exact = Decimal(value).quantize(Decimal(1).scaleb(-self.scale))
        if exact != value:
            raise ValueError(f"{value} has more than {self.scale} decimal places; round it first")
        return int(exact.scaleb(self.scale)) if dialect.name == "sqlite" else exact

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-self.scale)
        return Decimal(value).quantize(Decimal(1).scaleb(-self.scale))


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; stored as naive UTC on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: the ledger needs a timezone")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


# == tables ========================================================================================
class Base(DeclarativeBase):
    """The ledger's tables."""


class CustomerRow(Base):
    __tablename__ = "billing_customers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    price_per_gpu_hour: Mapped[Decimal] = mapped_column(ExactDecimal(12, 4))


class UsageRow(Base):
    __tablename__ = "billing_usage"
    __table_args__ = (
        UniqueConstraint("meter", "window_end", name="uq_billing_usage_meter_window_end"),
        Index("ix_billing_usage_pod", "namespace", "pod", "window_end"),
        Index("ix_billing_usage_customer", "customer", "window_end"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer: Mapped[str] = mapped_column(String(128))
    namespace: Mapped[str] = mapped_column(String(253))
    pod: Mapped[str] = mapped_column(String(253))
    pod_uid: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(253))
    meter: Mapped[str] = mapped_column(String(256), index=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime] = mapped_column(UTCDateTime())
    gpu_seconds: Mapped[Decimal] = mapped_column(ExactDecimal(18, 3))
    # False for usage metered while the pod's metering was paused: recorded, never billed.
    billed: Mapped[bool] = mapped_column(Boolean)


class MeterCursorRow(Base):
    """Where each meter's counter stood at its last ingest: the base of the next delta."""

    __tablename__ = "billing_meter_cursors"

    meter: Mapped[str] = mapped_column(String(256), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(253))
    pod: Mapped[str] = mapped_column(String(253))
    reading: Mapped[Decimal] = mapped_column(ExactDecimal(18, 3))
    read_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CreditRow(Base):
    __tablename__ = "billing_credits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer: Mapped[str] = mapped_column(String(128), ForeignKey("billing_customers.id"), index=True)
    amount_usd: Mapped[Decimal] = mapped_column(ExactDecimal(12, 2))
    reason: Mapped[str] = mapped_column(Text)
    incident_id: Mapped[str] = mapped_column(String(256), index=True)
    step: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PauseRow(Base):
    __tablename__ = "billing_metering_pauses"
    __table_args__ = (
        # At most one open pause per pod, enforced by the database against concurrent writers.
        Index(
            "uq_billing_pause_open",
            "namespace",
            "pod",
            unique=True,
            sqlite_where=text("resumed_at IS NULL"),
            postgresql_where=text("resumed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(253))
    pod: Mapped[str] = mapped_column(String(253))
    paused_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    incident_id: Mapped[str] = mapped_column(String(256), index=True)
    reason: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    resume_key: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)


class HoldRow(Base):
    __tablename__ = "billing_payout_holds"
    __table_args__ = (
        Index(
            "uq_billing_hold_open",
            "node",
            unique=True,
            sqlite_where=text("released_at IS NULL"),
            postgresql_where=text("released_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(253), index=True)
    host_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    held_at: Mapped[datetime] = mapped_column(UTCDateTime())
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    incident_id: Mapped[str] = mapped_column(String(256), index=True)
    reason: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    release_key: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
