"""The Ledger: one object over one SQLAlchemy engine, and every read and write the agent makes.

It owns what the other modules leave out: transactions, retries, idempotency and logging. Reads
retry transient database errors with jittered back-off. Writes never retry: each runs in one
transaction that rolls back and raises on failure, and each write an incident makes carries an
idempotency key derived from (incident, step, action), so a resumed or repeated step finds its first
result instead of acting twice. Meter ingestion and usage sums are in usage.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AwareDatetime, BaseModel, TypeAdapter
from sqlalchemy import Engine, and_, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import (
    retry,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from supply_agent.logging import get_logger
from supply_agent.schema import ensure_schema
from tools.billing import usage
from tools.billing.errors import IdempotencyConflict, LedgerError, LedgerWriteError, UnknownCustomer
from tools.billing.models import (
    Credit,
    CreditRequest,
    CreditResult,
    Customer,
    CustomerUsageQuery,
    HoldRequest,
    IncidentCredits,
    IngestResult,
    MeterAnomaly,
    MeteringState,
    MeterReading,
    PauseRequest,
    PayoutHold,
    PodUsageQuery,
    ReleaseRequest,
    ResumeRequest,
    Usage,
)
from tools.billing.money import CURRENCY, PositiveMoney, Price
from tools.billing.tables import CreditRow, CustomerRow, HoldRow, PauseRow, UsageRow

DEFAULT_URL = "sqlite:///supply-agent-billing.db"

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_aware: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)
_positive_money: TypeAdapter[Decimal] = TypeAdapter(PositiveMoney)
_price: TypeAdapter[Decimal] = TypeAdapter(Price)


def _log() -> Any:
    # Bound per call: a logger bound at import time would keep structlog's defaults forever.
    return get_logger(component="billing")


def _utc(at: datetime | None) -> datetime:
    return (_aware.validate_python(at) if at is not None else datetime.now(UTC)).astimezone(UTC)


def _validated(model: type[M], value: BaseModel | Mapping[str, Any], **context: Any) -> M:
    if isinstance(value, model) and not context:
        return value
    data = value.model_dump() if isinstance(value, BaseModel) else dict(value)
    return model.model_validate(data, context=context or None)


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


# == rows to results ==============================================================================
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


# == the ledger ====================================================================================
# A ledger on PostgreSQL answers or fails within bounds: a server that never accepts, a query that
# never ends, a row lock never released would otherwise hold the incident's step (and its thread).
POSTGRES_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": 10,
    "options": "-c statement_timeout=30s -c lock_timeout=10s",
}


class Ledger:
    """The billing ledger over one SQLAlchemy engine."""

    def __init__(self, engine: Engine, *, default_price_per_gpu_hour: Decimal | None = None) -> None:
        self.engine = engine
        self.default_price_per_gpu_hour = (
            _price.validate_python(default_price_per_gpu_hour)
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
        elif parsed.get_backend_name() == "postgresql":
            engine_kwargs.setdefault("connect_args", dict(POSTGRES_TIMEOUTS))
            engine_kwargs.setdefault("pool_pre_ping", True)  # a connection the server ended is replaced
        engine = create_engine(url, **engine_kwargs)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        ensure_schema(engine)
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
        self,
        readings: Iterable[MeterReading | Mapping[str, Any]],
        at: datetime,
        new_customer_price: Decimal | None = None,
    ) -> IngestResult:
        """Record each meter's GPU-seconds since its last ingest; reading the same `at` again adds nothing.
        A customer not known yet is added at ``new_customer_price`` (else the default), in one transaction."""
        rows = [_validated(MeterReading, r) for r in readings]
        when = _utc(at)
        usage.check_distinct(rows)
        result = self._write(
            f"ingest of {len(rows)} meter readings at {when.isoformat()}",
            lambda s: usage.ingest(s, rows, when, new_customer_price or self.default_price_per_gpu_hour),
        )
        _log().info(
            "billing.ingested",
            at=when.isoformat(),
            records=result.records,
            billed=str(result.billed_gpu_seconds),
            unbilled=str(result.unbilled_gpu_seconds),
        )
        return result

    @_read_retry
    def usage_by_pod(self, namespace: str, pod: str, start: datetime, end: datetime) -> Usage:
        """A pod's GPU-seconds in [start, end] and their cost at its customer's price."""
        q = PodUsageQuery(namespace=namespace, pod=pod, start=start, end=end)
        with self._sessions() as s:
            where = and_(UsageRow.namespace == q.namespace, UsageRow.pod == q.pod)
            return usage.usage(s, where, q.start, q.end, None, q.namespace, q.pod)

    @_read_retry
    def usage_by_customer(self, customer: str, start: datetime, end: datetime) -> Usage:
        """A customer's GPU-seconds in [start, end] and their cost at the customer's price."""
        q = CustomerUsageQuery(customer=customer, start=start, end=end)
        with self._sessions() as s:
            return usage.usage(s, UsageRow.customer == q.customer, q.start, q.end, q.customer)

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
        doubled = usage.doubled_pods(_validated(MeterReading, x) for x in readings)
        if not doubled:
            return []
        with self._sessions() as s:
            return usage.anomalies(s, doubled)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
