"""The billing ledger: customers, metered GPU usage, credits, metering pauses and payout holds.

One SQLAlchemy 2 schema serves a SQLite file (the default) and Postgres (by URL). Money is
`Decimal` end to end: on Postgres it is `NUMERIC`; SQLite has no decimal type (SQLAlchemy would go
through float), so there it is stored as an integer count of the column's smallest unit, which keeps
sums exact in SQL as well.

Usage comes from the fleet's meters (`GET /sandbox/v1/meters` in the sandbox, a billing exporter in
production): each meter is a cumulative GPU-seconds counter, and an ingest records the delta since
the previous ingest of that meter, split where a metering pause begins or ends so that paused time
is recorded but not billed. Within one record the rate is taken as uniform.

Reads retry transient database errors with jittered back-off. Writes never retry: each runs in one
transaction that rolls back and raises on failure, and each write an incident makes carries an
idempotency key derived from (incident, step, action), so a resumed or repeated step finds its first
result instead of acting twice.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
    create_engine,
    event,
    func,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from tenacity import (
    retry,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from supply_agent.logging import get_logger

DEFAULT_URL = "sqlite:///supply-agent-billing.db"
CURRENCY = "USD"
CENT = Decimal("0.01")
MILLI = Decimal("0.001")
SECONDS_PER_HOUR = Decimal(3600)
# Bound parameters per IN (...) query: far below SQLite's and Postgres's limits.
_CHUNK = 500

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def _log() -> Any:
    # Bound per call: a logger bound at import time would keep structlog's defaults forever.
    return get_logger(component="billing")


def idempotency_key(incident_id: str, step: int | str, action: str) -> str:
    """SHA-256 hex of the JSON array ``[incident_id, str(step), action]`` (step 3 and "3" agree)."""
    payload = json.dumps([incident_id, str(step), action], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


# == errors ========================================================================================
class LedgerError(Exception):
    """A ledger operation that could not be done; the message says what and why."""


class IdempotencyConflict(LedgerError):
    """An idempotency key already used for a different operation (other amount, customer or target)."""


class UnknownCustomer(LedgerError):
    """A customer the ledger has no record of."""


class LedgerWriteError(LedgerError):
    """A write that failed in the database; its transaction was rolled back and was not retried."""


# == value types ===================================================================================
def _no_float(value: Any) -> Any:
    """Refuse floats for money: a float has already lost the cents it was meant to carry."""
    if isinstance(value, float):
        raise ValueError(f"money must be a Decimal or a string such as '12.34', not the float {value!r}")
    return value


def _reading(value: Any) -> Any:
    """Meter readings arrive as JSON numbers; take their shortest decimal form, not the binary one."""
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


PositiveMoney = Annotated[Decimal, BeforeValidator(_no_float), Field(gt=0, max_digits=12, decimal_places=2)]
Price = Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0, max_digits=12, decimal_places=4)]
GpuSeconds = Annotated[Decimal, BeforeValidator(_reading), Field(ge=0)]
Step = int | str

_positive_money: TypeAdapter[Decimal] = TypeAdapter(PositiveMoney)
_aware: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


def _utc(at: datetime | None) -> datetime:
    return (_aware.validate_python(at) if at is not None else datetime.now(UTC)).astimezone(UTC)


def _gpu_seconds(value: Decimal) -> Decimal:
    return value.quantize(MILLI, rounding=ROUND_HALF_EVEN)


def _cost(gpu_seconds: Decimal, price_per_gpu_hour: Decimal) -> Decimal:
    return (gpu_seconds * price_per_gpu_hour / SECONDS_PER_HOUR).quantize(CENT, rounding=ROUND_HALF_UP)


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


# == inputs and results ============================================================================
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Customer(_Model):
    """A customer and their list price per GPU-hour."""

    id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=256)
    price_per_gpu_hour: Price


class MeterReading(BaseModel):
    """One row of the fleet's meters: a cumulative GPU-seconds counter for one pod."""

    model_config = ConfigDict(extra="ignore")

    meter: str = Field(min_length=1, max_length=256)
    namespace: str = Field(min_length=1)
    pod: str = Field(min_length=1)
    pod_uid: str = ""
    customer: str = ""
    node: str = ""
    gpus: int = Field(ge=0)
    running: bool
    gpu_seconds: GpuSeconds

    @field_validator("gpu_seconds")
    @classmethod
    def _to_millis(cls, value: Decimal) -> Decimal:
        return _gpu_seconds(value)


class IngestResult(_Model):
    """What one ingest recorded."""

    at: datetime
    meters: int
    records: int
    billed_gpu_seconds: Decimal
    unbilled_gpu_seconds: Decimal
    already_ingested: list[str] = Field(description="Meters read at or before `at` already: skipped.")
    paused: list[str] = Field(
        description="Meters with usage recorded unbilled: their pod's metering is paused."
    )
    resets: list[str] = Field(description="Meters whose counter went backwards: counted from zero.")
    new_customers: list[str]


class _Window(_Model):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> _Window:
        if self.end <= self.start:
            raise ValueError(
                f"the window ends ({self.end.isoformat()}) before it starts ({self.start.isoformat()})"
            )
        return self


class PodUsageQuery(_Window):
    """Usage of one pod in a window."""

    namespace: str = Field(min_length=1)
    pod: str = Field(min_length=1)


class CustomerUsageQuery(_Window):
    """Usage of one customer in a window."""

    customer: str = Field(min_length=1)


class Usage(_Model):
    """GPU-seconds in a window, billed and paused, and the cost of the billed part."""

    start: datetime
    end: datetime
    customer: str | None
    namespace: str | None = None
    pod: str | None = None
    gpu_seconds: Decimal = Field(description="Billed GPU-seconds.")
    unbilled_gpu_seconds: Decimal = Field(description="GPU-seconds metered while metering was paused.")
    price_per_gpu_hour: Decimal | None
    cost_usd: Decimal | None = Field(description="None where the customer has no price in the ledger.")
    meters: list[str]


class CreditRequest(_Model):
    """A credit to issue; the idempotency key defaults to the one for (incident, step, billing.issue_credit)."""

    customer: str = Field(min_length=1, max_length=128)
    amount_usd: PositiveMoney
    reason: str = Field(min_length=1)
    incident_id: str = Field(min_length=1, max_length=256)
    step: Step
    idempotency_key: str = Field("", max_length=64)
    at: AwareDatetime | None = None

    @field_validator("amount_usd")
    @classmethod
    def _at_most_the_max(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        limit = (info.context or {}).get("max_amount_usd")
        if limit is not None and value > limit:
            raise ValueError(
                f"a credit of {value} {CURRENCY} is above the {limit} {CURRENCY} this call allows"
            )
        return value

    @model_validator(mode="after")
    def _default_key(self) -> CreditRequest:
        if not self.idempotency_key:
            self.idempotency_key = idempotency_key(self.incident_id, self.step, "billing.issue_credit")
        return self


class Credit(_Model):
    """A credit in the ledger."""

    id: int
    customer: str
    amount_usd: Decimal
    currency: Literal["USD"] = "USD"
    reason: str
    incident_id: str
    step: str
    idempotency_key: str
    created_at: datetime


class CreditResult(Credit):
    """A credit, and whether this call created it (False: the key had already been used for it)."""

    created: bool


class IncidentCredits(_Model):
    """Every credit issued for one incident, with totals."""

    incident_id: str
    credits: list[Credit]
    total_usd: Decimal
    by_customer: dict[str, Decimal]


class _Keyed(_Model):
    incident_id: str = Field(min_length=1, max_length=256)
    step: Step
    idempotency_key: str = Field("", max_length=64)
    at: AwareDatetime | None = None

    def _fill_key(self, action: str) -> None:
        if not self.idempotency_key:
            self.idempotency_key = idempotency_key(self.incident_id, self.step, action)


class PauseRequest(_Keyed):
    """Stop billing a pod's metered usage from `at` (default now) until it is resumed."""

    namespace: str = Field(min_length=1, max_length=253)
    pod: str = Field(min_length=1, max_length=253)
    reason: str = ""

    @model_validator(mode="after")
    def _default_key(self) -> PauseRequest:
        self._fill_key("billing.pause_metering")
        return self


class ResumeRequest(_Keyed):
    """Bill a pod's metered usage again from `at` (default now)."""

    namespace: str = Field(min_length=1, max_length=253)
    pod: str = Field(min_length=1, max_length=253)

    @model_validator(mode="after")
    def _default_key(self) -> ResumeRequest:
        self._fill_key("billing.resume_metering")
        return self


class MeteringState(_Model):
    """Whether a pod's metering is paused, the pause concerned, and whether this call changed it."""

    namespace: str
    pod: str
    paused: bool
    changed: bool
    pause_id: int | None = None
    paused_at: datetime | None = None
    resumed_at: datetime | None = None
    incident_id: str | None = None
    reason: str = ""


class HoldRequest(_Keyed):
    """Hold the host's payout for a node from `at` (default now) until it is released."""

    node: str = Field(min_length=1, max_length=253)
    host_id: str | None = Field(None, max_length=256)
    reason: str = ""

    @model_validator(mode="after")
    def _default_key(self) -> HoldRequest:
        self._fill_key("billing.hold_payout")
        return self


class ReleaseRequest(_Keyed):
    """Release the payout hold on a node from `at` (default now)."""

    node: str = Field(min_length=1, max_length=253)

    @model_validator(mode="after")
    def _default_key(self) -> ReleaseRequest:
        self._fill_key("billing.release_payout")
        return self


class PayoutHold(_Model):
    """Whether a node's payout is held, the hold concerned, and whether this call changed it."""

    node: str
    held: bool
    changed: bool
    hold_id: int | None = None
    host_id: str | None = None
    held_at: datetime | None = None
    released_at: datetime | None = None
    incident_id: str | None = None
    reason: str = ""


class MeterAnomaly(_Model):
    """A pod metered by more than one running meter: every meter but the primary over-bills."""

    namespace: str
    pod: str
    pod_uid: str
    customer: str
    node: str
    primary_meter: str
    duplicate_meters: list[str]
    overbilled_gpu_seconds: Decimal = Field(description="The duplicate meters' counters, as read.")
    billed_duplicate_gpu_seconds: Decimal = Field(description="What the ledger billed on the duplicates.")
    price_per_gpu_hour: Decimal | None
    suggested_credit_usd: Decimal | None = Field(description="The billed duplicates at the customer's price.")

    def credit_request(self, incident_id: str, step: Step, reason: str | None = None) -> CreditRequest:
        """The credit that refunds what the duplicate meters billed."""
        if not self.suggested_credit_usd:
            raise LedgerError(f"nothing billed on {', '.join(self.duplicate_meters)} yet: no credit to issue")
        return CreditRequest(
            customer=self.customer,
            amount_usd=self.suggested_credit_usd,
            reason=reason
            or f"double metering of {self.namespace}/{self.pod}: {self.billed_duplicate_gpu_seconds} GPU-seconds",
            incident_id=incident_id,
            step=step,
        )


# == retries =======================================================================================
def _connection_invalidated(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


# Reads only: a read repeated is harmless. Writes go through `Ledger._write`, which never retries.
_read_retry = retry(
    retry=retry_if_exception_type(OperationalError) | retry_if_exception(_connection_invalidated),
    wait=wait_random_exponential(multiplier=0.05, max=2.0),
    stop=stop_after_attempt(4),
    reraise=True,
)


# == helpers =======================================================================================
def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _paused_segments(
    start: datetime, end: datetime, pauses: Sequence[tuple[datetime, datetime | None]]
) -> list[tuple[datetime, datetime, bool]]:
    """[start, end] cut where a pause begins or ends, each piece marked paused or not."""
    if end <= start:
        paused = any(p0 <= end and (p1 is None or end < p1) for p0, p1 in pauses)
        return [(start, end, paused)]
    cuts = sorted(
        {start, end, *(t for p0, p1 in pauses for t in (p0, p1) if t is not None and start < t < end)}
    )
    out: list[tuple[datetime, datetime, bool]] = []
    for a, b in pairwise(cuts):
        paused = any(p0 <= a and (p1 is None or b <= p1) for p0, p1 in pauses)
        if out and out[-1][2] == paused:
            out[-1] = (out[-1][0], b, paused)
        else:
            out.append((a, b, paused))
    return out


def _seconds(delta: timedelta) -> Decimal:
    return Decimal(delta.days * 86_400 + delta.seconds) + Decimal(delta.microseconds).scaleb(-6)


def _credit(row: CreditRow) -> Credit:
    return Credit(
        id=row.id,
        customer=row.customer,
        amount_usd=row.amount_usd,
        reason=row.reason,
        incident_id=row.incident_id,
        step=row.step,
        idempotency_key=row.idempotency_key,
        created_at=row.created_at,
    )


def _pause_state(row: PauseRow, changed: bool) -> MeteringState:
    return MeteringState(
        namespace=row.namespace,
        pod=row.pod,
        paused=row.resumed_at is None,
        changed=changed,
        pause_id=row.id,
        paused_at=row.paused_at,
        resumed_at=row.resumed_at,
        incident_id=row.incident_id,
        reason=row.reason,
    )


def _hold_state(row: HoldRow, changed: bool) -> PayoutHold:
    return PayoutHold(
        node=row.node,
        held=row.released_at is None,
        changed=changed,
        hold_id=row.id,
        host_id=row.host_id,
        held_at=row.held_at,
        released_at=row.released_at,
        incident_id=row.incident_id,
        reason=row.reason,
    )


def _validated(model: type[M], value: BaseModel | Mapping[str, Any], **context: Any) -> M:
    if isinstance(value, model) and not context:
        return value
    data = value.model_dump() if isinstance(value, BaseModel) else dict(value)
    return model.model_validate(data, context=context or None)


# == the ledger ====================================================================================
class Ledger:
    """The billing ledger over one SQLAlchemy engine."""

    def __init__(self, engine: Engine, *, default_price_per_gpu_hour: Decimal | None = None) -> None:
        self.engine = engine
        self.default_price_per_gpu_hour = (
            TypeAdapter(Price).validate_python(default_price_per_gpu_hour)
            if default_price_per_gpu_hour is not None
            else None
        )
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(
        cls,
        url: str = DEFAULT_URL,
        *,
        default_price_per_gpu_hour: Decimal | None = None,
        **engine_kwargs: Any,
    ) -> Ledger:
        """A ledger on a SQLite file or a Postgres database, its tables created if missing."""
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(url, **engine_kwargs)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(engine)
        return cls(engine, default_price_per_gpu_hour=default_price_per_gpu_hour)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, what: str, fn: Callable[[Session], T]) -> T:
        """Run `fn` in one transaction: commit, or roll back and raise. Never retried."""
        try:
            with self._sessions.begin() as session:
                return fn(session)
        except LedgerError:
            raise
        except (SQLAlchemyError, ValueError) as exc:
            _log().warning("billing.write_failed", what=what, error=str(exc))
            raise LedgerWriteError(
                f"{what} failed and was rolled back (writes are not retried): {exc}"
            ) from exc

    # -- customers -------------------------------------------------------------------------------
    def upsert_customer(self, customer: Customer | Mapping[str, Any]) -> Customer:
        """Add a customer or change its name and price."""
        c = _validated(Customer, customer)

        def write(s: Session) -> Customer:
            row = s.get(CustomerRow, c.id)
            if row is None:
                s.add(CustomerRow(id=c.id, name=c.name, price_per_gpu_hour=c.price_per_gpu_hour))
            else:
                row.name, row.price_per_gpu_hour = c.name, c.price_per_gpu_hour
            return c

        return self._write(f"upsert of customer {c.id!r}", write)

    @_read_retry
    def customer(self, customer_id: str) -> Customer | None:
        """The customer with this id, or None."""
        with self._sessions() as s:
            row = s.get(CustomerRow, customer_id)
            if row is None:
                return None
            return Customer(id=row.id, name=row.name, price_per_gpu_hour=row.price_per_gpu_hour)

    # -- usage -----------------------------------------------------------------------------------
    def ingest_meters(
        self, readings: Iterable[MeterReading | Mapping[str, Any]], at: datetime
    ) -> IngestResult:
        """Record each meter's GPU-seconds since its last ingest; reading the same `at` again adds nothing."""
        rows = [_validated(MeterReading, r) for r in readings]
        when = _utc(at)
        seen: set[str] = set()
        for r in rows:
            if r.meter in seen:
                raise LedgerError(f"meter {r.meter!r} appears twice in one set of readings")
            seen.add(r.meter)

        def write(s: Session) -> IngestResult:
            cursors: dict[str, MeterCursorRow] = {}
            for chunk in _chunks([r.meter for r in rows]):
                cursors.update(
                    (c.meter, c)
                    for c in s.scalars(select(MeterCursorRow).where(MeterCursorRow.meter.in_(chunk)))
                )
            new_customers: list[str] = []
            if self.default_price_per_gpu_hour is not None:
                wanted = sorted({r.customer for r in rows if r.customer})
                known: set[str] = set()
                for chunk in _chunks(wanted):
                    known.update(s.scalars(select(CustomerRow.id).where(CustomerRow.id.in_(chunk))))
                for cid in wanted:
                    if cid not in known:
                        s.add(
                            CustomerRow(id=cid, name=cid, price_per_gpu_hour=self.default_price_per_gpu_hour)
                        )
                        new_customers.append(cid)
            pauses: dict[tuple[str, str], list[tuple[datetime, datetime | None]]] = defaultdict(list)
            pods = sorted({(r.namespace, r.pod) for r in rows})
            for pod_chunk in _chunks(pods):
                for p in s.scalars(
                    select(PauseRow).where(
                        tuple_(PauseRow.namespace, PauseRow.pod).in_(pod_chunk), PauseRow.paused_at <= when
                    )
                ):
                    pauses[(p.namespace, p.pod)].append((p.paused_at, p.resumed_at))

            billed, unbilled, records = Decimal(0), Decimal(0), 0
            stale: list[str] = []
            paused: list[str] = []
            resets: list[str] = []
            for r in rows:
                cur = cursors.get(r.meter)
                if cur is not None and when <= cur.read_at:
                    stale.append(r.meter)
                    continue
                if cur is None:
                    delta = r.gpu_seconds
                    # First sight: the counter's usage ends now; on all its GPUs it began this long ago.
                    ran = timedelta(seconds=float(delta / r.gpus)) if r.gpus else timedelta(0)
                    start = when - ran
                    s.add(
                        MeterCursorRow(
                            meter=r.meter,
                            namespace=r.namespace,
                            pod=r.pod,
                            reading=r.gpu_seconds,
                            read_at=when,
                        )
                    )
                else:
                    start = cur.read_at
                    if r.gpu_seconds < cur.reading:
                        resets.append(r.meter)
                        delta = r.gpu_seconds
                    else:
                        delta = r.gpu_seconds - cur.reading
                    cur.reading, cur.read_at = r.gpu_seconds, when
                if not delta:
                    continue
                segments = _paused_segments(start, when, pauses.get((r.namespace, r.pod), []))
                total = _seconds(when - start)
                left = delta
                for i, (a, b, is_paused) in enumerate(segments):
                    share = left if i == len(segments) - 1 else _gpu_seconds(delta * _seconds(b - a) / total)
                    left -= share
                    if not share:
                        continue
                    s.add(
                        UsageRow(
                            customer=r.customer,
                            namespace=r.namespace,
                            pod=r.pod,
                            pod_uid=r.pod_uid,
                            node=r.node,
                            meter=r.meter,
                            window_start=a,
                            window_end=b,
                            gpu_seconds=share,
                            billed=not is_paused,
                        )
                    )
                    records += 1
                    if is_paused:
                        unbilled += share
                        if r.meter not in paused:
                            paused.append(r.meter)
                    else:
                        billed += share
            return IngestResult(
                at=when,
                meters=len(rows),
                records=records,
                billed_gpu_seconds=_gpu_seconds(billed),
                unbilled_gpu_seconds=_gpu_seconds(unbilled),
                already_ingested=stale,
                paused=paused,
                resets=resets,
                new_customers=new_customers,
            )

        result = self._write(f"ingest of {len(rows)} meter readings at {when.isoformat()}", write)
        _log().info(
            "billing.ingested",
            at=when.isoformat(),
            records=result.records,
            billed=str(result.billed_gpu_seconds),
            unbilled=str(result.unbilled_gpu_seconds),
        )
        return result

    def _usage(
        self, s: Session, where: Any, start: datetime, end: datetime
    ) -> tuple[dict[str, list[Decimal]], list[str]]:
        """Billed and unbilled GPU-seconds per customer in [start, end], pro rata for records across an edge."""
        sums: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        inside = and_(
            where, UsageRow.window_start >= start, UsageRow.window_end <= end, UsageRow.window_end > start
        )
        for customer, is_billed, total in s.execute(
            select(UsageRow.customer, UsageRow.billed, func.sum(UsageRow.gpu_seconds))
            .where(inside)
            .group_by(UsageRow.customer, UsageRow.billed)
        ):
            sums[customer][0 if is_billed else 1] += total
        across = and_(
            where,
            UsageRow.window_start < end,
            UsageRow.window_end > start,
            or_(UsageRow.window_start < start, UsageRow.window_end > end),
        )
        for row in s.scalars(select(UsageRow).where(across)):
            overlap = _seconds(min(row.window_end, end) - max(row.window_start, start))
            sums[row.customer][0 if row.billed else 1] += (
                row.gpu_seconds * overlap / _seconds(row.window_end - row.window_start)
            )
        meters = sorted(
            s.scalars(
                select(UsageRow.meter)
                .where(where, UsageRow.window_start < end, UsageRow.window_end > start)
                .distinct()
            )
        )
        return sums, meters

    def _summarise(
        self,
        s: Session,
        sums: dict[str, list[Decimal]],
        meters: list[str],
        start: datetime,
        end: datetime,
        customer: str | None,
        namespace: str | None = None,
        pod: str | None = None,
    ) -> Usage:
        ids = sorted(set(sums) | ({customer} if customer is not None else set()))
        prices = {
            row.id: row.price_per_gpu_hour
            for row in s.scalars(select(CustomerRow).where(CustomerRow.id.in_(ids)))
        }
        billed = _gpu_seconds(sum((v[0] for v in sums.values()), Decimal(0)))
        unbilled = _gpu_seconds(sum((v[1] for v in sums.values()), Decimal(0)))
        cost: Decimal | None = None
        if all(c in prices for c in ids):
            cost = sum((_cost(_gpu_seconds(b), prices[c]) for c, (b, _) in sums.items()), Decimal("0.00"))
        if customer is None and len(sums) == 1:
            customer = next(iter(sums))
        price = prices.get(customer) if customer is not None else None
        return Usage(
            start=start,
            end=end,
            customer=customer,
            namespace=namespace,
            pod=pod,
            gpu_seconds=billed,
            unbilled_gpu_seconds=unbilled,
            price_per_gpu_hour=price,
            cost_usd=cost,
            meters=meters,
        )

    @_read_retry
    def usage_by_pod(self, namespace: str, pod: str, start: datetime, end: datetime) -> Usage:
        """A pod's GPU-seconds in [start, end] and their cost at its customer's price."""
        q = PodUsageQuery(namespace=namespace, pod=pod, start=start, end=end)
        with self._sessions() as s:
            where = and_(UsageRow.namespace == q.namespace, UsageRow.pod == q.pod)
            sums, meters = self._usage(s, where, q.start, q.end)
            return self._summarise(s, sums, meters, q.start, q.end, None, q.namespace, q.pod)

    @_read_retry
    def usage_by_customer(self, customer: str, start: datetime, end: datetime) -> Usage:
        """A customer's GPU-seconds in [start, end] and their cost at the customer's price."""
        q = CustomerUsageQuery(customer=customer, start=start, end=end)
        with self._sessions() as s:
            sums, meters = self._usage(s, UsageRow.customer == q.customer, q.start, q.end)
            return self._summarise(s, sums, meters, q.start, q.end, q.customer)

    # -- credits ---------------------------------------------------------------------------------
    def issue_credit(
        self, request: CreditRequest | Mapping[str, Any], *, max_amount_usd: Decimal
    ) -> CreditResult:
        """Credit a customer once per idempotency key; a repeat returns the first credit with created=False."""
        limit = _positive_money.validate_python(max_amount_usd)
        req = _validated(CreditRequest, request, max_amount_usd=limit)

        def same(row: CreditRow) -> CreditResult:
            if (row.customer, row.amount_usd, row.incident_id) != (
                req.customer,
                req.amount_usd,
                req.incident_id,
            ):
                raise IdempotencyConflict(
                    f"idempotency key {req.idempotency_key[:12]}… already credited {row.amount_usd} {CURRENCY} "
                    f"to {row.customer!r} for incident {row.incident_id!r}; this request asks {req.amount_usd} "
                    f"{CURRENCY} to {req.customer!r} for {req.incident_id!r}"
                )
            return CreditResult(**_credit(row).model_dump(), created=False)

        def write(s: Session) -> CreditResult:
            row = s.scalar(select(CreditRow).where(CreditRow.idempotency_key == req.idempotency_key))
            if row is not None:
                return same(row)
            if s.get(CustomerRow, req.customer) is None:
                raise UnknownCustomer(
                    f"no customer {req.customer!r} in the ledger: add it with upsert_customer"
                )
            row = CreditRow(
                customer=req.customer,
                amount_usd=req.amount_usd,
                reason=req.reason,
                incident_id=req.incident_id,
                step=str(req.step),
                idempotency_key=req.idempotency_key,
                created_at=_utc(req.at),
            )
            s.add(row)
            s.flush()
            return CreditResult(**_credit(row).model_dump(), created=True)

        try:
            result = self._write(f"credit of {req.amount_usd} {CURRENCY} to {req.customer!r}", write)
        except LedgerWriteError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
            # Another writer used the key first: read its credit; inserting again is never right.
            with self._sessions() as s:
                row = s.scalar(select(CreditRow).where(CreditRow.idempotency_key == req.idempotency_key))
                if row is None:
                    raise
                return same(row)
        if result.created:
            _log().info(
                "billing.credit_issued",
                customer=result.customer,
                amount_usd=str(result.amount_usd),
                incident_id=result.incident_id,
                step=result.step,
            )
        return result

    @_read_retry
    def credits_for_incident(self, incident_id: str) -> IncidentCredits:
        """Every credit issued for an incident, oldest first, with totals per customer."""
        with self._sessions() as s:
            rows = s.scalars(
                select(CreditRow).where(CreditRow.incident_id == incident_id).order_by(CreditRow.id)
            )
            credits = [_credit(r) for r in rows]
        by_customer: dict[str, Decimal] = defaultdict(lambda: Decimal("0.00"))
        for c in credits:
            by_customer[c.customer] += c.amount_usd
        return IncidentCredits(
            incident_id=incident_id,
            credits=credits,
            total_usd=sum((c.amount_usd for c in credits), Decimal("0.00")),
            by_customer=dict(by_customer),
        )

    # -- metering pauses -------------------------------------------------------------------------
    def pause_metering(self, request: PauseRequest | Mapping[str, Any]) -> MeteringState:
        """Pause billing a pod; a repeat, or a pod already paused, changes nothing."""
        req = _validated(PauseRequest, request)
        when = _utc(req.at)

        def write(s: Session) -> MeteringState:
            row = s.scalar(select(PauseRow).where(PauseRow.idempotency_key == req.idempotency_key))
            if row is not None:
                if (row.namespace, row.pod) != (req.namespace, req.pod):
                    raise IdempotencyConflict(
                        f"idempotency key {req.idempotency_key[:12]}… already paused {row.namespace}/{row.pod}, "
                        f"not {req.namespace}/{req.pod}"
                    )
                return _pause_state(row, changed=False)
            open_ = s.scalar(
                select(PauseRow).where(
                    PauseRow.namespace == req.namespace,
                    PauseRow.pod == req.pod,
                    PauseRow.resumed_at.is_(None),
                )
            )
            if open_ is not None:
                return _pause_state(open_, changed=False)
            row = PauseRow(
                namespace=req.namespace,
                pod=req.pod,
                paused_at=when,
                incident_id=req.incident_id,
                reason=req.reason,
                idempotency_key=req.idempotency_key,
            )
            s.add(row)
            s.flush()
            return _pause_state(row, changed=True)

        return self._write(f"pause of metering for {req.namespace}/{req.pod}", write)

    def resume_metering(self, request: ResumeRequest | Mapping[str, Any]) -> MeteringState:
        """Resume billing a pod; a repeat, or a pod not paused, changes nothing."""
        req = _validated(ResumeRequest, request)
        when = _utc(req.at)

        def write(s: Session) -> MeteringState:
            row = s.scalar(select(PauseRow).where(PauseRow.resume_key == req.idempotency_key))
            if row is not None:
                if (row.namespace, row.pod) != (req.namespace, req.pod):
                    raise IdempotencyConflict(
                        f"idempotency key {req.idempotency_key[:12]}… already resumed {row.namespace}/{row.pod}, "
                        f"not {req.namespace}/{req.pod}"
                    )
                return _pause_state(row, changed=False)
            row = s.scalar(
                select(PauseRow).where(
                    PauseRow.namespace == req.namespace,
                    PauseRow.pod == req.pod,
                    PauseRow.resumed_at.is_(None),
                )
            )
            if row is None:
                return MeteringState(namespace=req.namespace, pod=req.pod, paused=False, changed=False)
            if when < row.paused_at:
                raise LedgerError(
                    f"cannot resume {req.namespace}/{req.pod} at {when.isoformat()}: "
                    f"it was paused later, at {row.paused_at.isoformat()}"
                )
            row.resumed_at, row.resume_key = when, req.idempotency_key
            s.flush()
            return _pause_state(row, changed=True)

        return self._write(f"resume of metering for {req.namespace}/{req.pod}", write)

    @_read_retry
    def metering_state(self, namespace: str, pod: str) -> MeteringState:
        """Whether a pod's metering is paused now, with its latest pause."""
        with self._sessions() as s:
            row = s.scalar(
                select(PauseRow)
                .where(PauseRow.namespace == namespace, PauseRow.pod == pod)
                .order_by(PauseRow.id.desc())
                .limit(1)
            )
            if row is None:
                return MeteringState(namespace=namespace, pod=pod, paused=False, changed=False)
            return _pause_state(row, changed=False)

    # -- payout holds ----------------------------------------------------------------------------
    def hold_payout(self, request: HoldRequest | Mapping[str, Any]) -> PayoutHold:
        """Hold a node's host payout; a repeat, or a node already held, changes nothing."""
        req = _validated(HoldRequest, request)
        when = _utc(req.at)

        def write(s: Session) -> PayoutHold:
            row = s.scalar(select(HoldRow).where(HoldRow.idempotency_key == req.idempotency_key))
            if row is not None:
                if row.node != req.node:
                    raise IdempotencyConflict(
                        f"idempotency key {req.idempotency_key[:12]}… already held node {row.node}, not {req.node}"
                    )
                return _hold_state(row, changed=False)
            open_ = s.scalar(select(HoldRow).where(HoldRow.node == req.node, HoldRow.released_at.is_(None)))
            if open_ is not None:
                return _hold_state(open_, changed=False)
            row = HoldRow(
                node=req.node,
                host_id=req.host_id,
                held_at=when,
                incident_id=req.incident_id,
                reason=req.reason,
                idempotency_key=req.idempotency_key,
            )
            s.add(row)
            s.flush()
            return _hold_state(row, changed=True)

        return self._write(f"payout hold on node {req.node}", write)

    def release_payout(self, request: ReleaseRequest | Mapping[str, Any]) -> PayoutHold:
        """Release a node's payout hold; a repeat, or a node not held, changes nothing."""
        req = _validated(ReleaseRequest, request)
        when = _utc(req.at)

        def write(s: Session) -> PayoutHold:
            row = s.scalar(select(HoldRow).where(HoldRow.release_key == req.idempotency_key))
            if row is not None:
                if row.node != req.node:
                    raise IdempotencyConflict(
                        f"idempotency key {req.idempotency_key[:12]}… already released node {row.node}, "
                        f"not {req.node}"
                    )
                return _hold_state(row, changed=False)
            row = s.scalar(select(HoldRow).where(HoldRow.node == req.node, HoldRow.released_at.is_(None)))
            if row is None:
                return PayoutHold(node=req.node, held=False, changed=False)
            if when < row.held_at:
                raise LedgerError(
                    f"cannot release node {req.node} at {when.isoformat()}: "
                    f"it was held later, at {row.held_at.isoformat()}"
                )
            row.released_at, row.release_key = when, req.idempotency_key
            s.flush()
            return _hold_state(row, changed=True)

        return self._write(f"payout release on node {req.node}", write)

    @_read_retry
    def payout_hold(self, node: str) -> PayoutHold:
        """Whether a node's payout is held now, with its latest hold."""
        with self._sessions() as s:
            row = s.scalar(select(HoldRow).where(HoldRow.node == node).order_by(HoldRow.id.desc()).limit(1))
            if row is None:
                return PayoutHold(node=node, held=False, changed=False)
            return _hold_state(row, changed=False)

    # -- anomalies -------------------------------------------------------------------------------
    @_read_retry
    def meter_anomalies(self, readings: Iterable[MeterReading | Mapping[str, Any]]) -> list[MeterAnomaly]:
        """Pods with more than one running meter, the over-billed GPU-seconds and the credit that refunds them."""
        pods: dict[tuple[str, str, str], list[MeterReading]] = defaultdict(list)
        for r in (_validated(MeterReading, x) for x in readings):
            pods[(r.namespace, r.pod, r.pod_uid)].append(r)
        doubled = {k: v for k, v in pods.items() if sum(m.running for m in v) > 1}
        if not doubled:
            return []
        out: list[MeterAnomaly] = []
        with self._sessions() as s:
            for (namespace, pod, pod_uid), meters in sorted(doubled.items()):
                # The primary is the meter that has counted longest; ties go to the shorter, older-style id.
                ordered = sorted(meters, key=lambda m: (-m.gpu_seconds, len(m.meter), m.meter))
                primary, dups = ordered[0], ordered[1:]
                dup_ids = [m.meter for m in dups]
                billed = s.scalar(
                    select(func.sum(UsageRow.gpu_seconds)).where(
                        UsageRow.meter.in_(dup_ids), UsageRow.billed.is_(True)
                    )
                ) or Decimal("0.000")
                row = s.get(CustomerRow, primary.customer)
                price = row.price_per_gpu_hour if row is not None else None
                out.append(
                    MeterAnomaly(
                        namespace=namespace,
                        pod=pod,
                        pod_uid=pod_uid,
                        customer=primary.customer,
                        node=primary.node,
                        primary_meter=primary.meter,
                        duplicate_meters=dup_ids,
                        overbilled_gpu_seconds=sum((m.gpu_seconds for m in dups), Decimal("0.000")),
                        billed_duplicate_gpu_seconds=billed,
                        price_per_gpu_hour=price,
                        suggested_credit_usd=_cost(billed, price) if price is not None else None,
                    )
                )
        return out


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
