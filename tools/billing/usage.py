"""Metered usage: turning the fleet's meter counters into usage records, and summing them back up.

Each meter is a cumulative GPU-seconds counter (`GET /sandbox/v1/meters` in the sandbox, a billing
exporter in production). An ingest records the delta since the previous ingest of that meter, split
where a metering pause begins or ends so that paused time is recorded but not billed; within one
record the rate is taken as uniform. A usage query sums the records in a window, pro rata for
records that cross its edges, and prices the billed part.

These are functions over an open session: the Ledger owns transactions, retries and logging.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any, TypeVar

from sqlalchemy import and_, func, or_, select, tuple_
from sqlalchemy.orm import Session

from tools.billing.errors import LedgerError
from tools.billing.models import IngestResult, MeterAnomaly, MeterReading, Usage
from tools.billing.money import cost, gpu_seconds
from tools.billing.tables import CustomerRow, MeterCursorRow, PauseRow, UsageRow

# Bound parameters per IN (...) query: far below SQLite's and Postgres's limits.
_CHUNK = 500

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _seconds(delta: timedelta) -> Decimal:
    return Decimal(delta.days * 86_400 + delta.seconds) + Decimal(delta.microseconds).scaleb(-6)


def paused_segments(
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


# == ingest ========================================================================================
def check_distinct(rows: Sequence[MeterReading]) -> None:
    """Refuse a set of readings that names one meter twice: which of the two counts is unknowable."""
    seen: set[str] = set()
    for r in rows:
        if r.meter in seen:
            raise LedgerError(f"meter {r.meter!r} appears twice in one set of readings")
        seen.add(r.meter)


def ingest(
    s: Session,
    rows: Sequence[MeterReading],
    when: datetime,
    default_price_per_gpu_hour: Decimal | None,
) -> IngestResult:
    """Record each meter's GPU-seconds since its last ingest, in the caller's transaction."""
    cursors: dict[str, MeterCursorRow] = {}
    for chunk in _chunks([r.meter for r in rows]):
        cursors.update(
            (c.meter, c) for c in s.scalars(select(MeterCursorRow).where(MeterCursorRow.meter.in_(chunk)))
        )
    new_customers: list[str] = []
    if default_price_per_gpu_hour is not None:
        wanted = sorted({r.customer for r in rows if r.customer})
        known: set[str] = set()
        for chunk in _chunks(wanted):
            known.update(s.scalars(select(CustomerRow.id).where(CustomerRow.id.in_(chunk))))
        for cid in wanted:
            if cid not in known:
                s.add(CustomerRow(id=cid, name=cid, price_per_gpu_hour=default_price_per_gpu_hour))
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
                    meter=r.meter, namespace=r.namespace, pod=r.pod, reading=r.gpu_seconds, read_at=when
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
        segments = paused_segments(start, when, pauses.get((r.namespace, r.pod), []))
        total = _seconds(when - start)
        left = delta
        for i, (a, b, is_paused) in enumerate(segments):
            share = left if i == len(segments) - 1 else gpu_seconds(delta * _seconds(b - a) / total)
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
        billed_gpu_seconds=gpu_seconds(billed),
        unbilled_gpu_seconds=gpu_seconds(unbilled),
        already_ingested=stale,
        paused=paused,
        resets=resets,
        new_customers=new_customers,
    )


# == usage in a window =============================================================================
def usage(
    s: Session,
    where: Any,
    start: datetime,
    end: datetime,
    customer: str | None,
    namespace: str | None = None,
    pod: str | None = None,
) -> Usage:
    """The usage records matching `where` in [start, end], summed and priced."""
    sums, meters = _sums(s, where, start, end)
    return _summarise(s, sums, meters, start, end, customer, namespace, pod)


def _sums(
    s: Session, where: Any, start: datetime, end: datetime
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
    s: Session,
    sums: dict[str, list[Decimal]],
    meters: list[str],
    start: datetime,
    end: datetime,
    customer: str | None,
    namespace: str | None,
    pod: str | None,
) -> Usage:
    ids = sorted(set(sums) | ({customer} if customer is not None else set()))
    prices = {
        row.id: row.price_per_gpu_hour
        for row in s.scalars(select(CustomerRow).where(CustomerRow.id.in_(ids)))
    }
    billed = gpu_seconds(sum((v[0] for v in sums.values()), Decimal(0)))
    unbilled = gpu_seconds(sum((v[1] for v in sums.values()), Decimal(0)))
    total: Decimal | None = None
    if all(c in prices for c in ids):
        total = sum((cost(gpu_seconds(b), prices[c]) for c, (b, _) in sums.items()), Decimal("0.00"))
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
        cost_usd=total,
        meters=meters,
    )


# == double metering ===============================================================================
Pod = tuple[str, str, str]  # namespace, pod, pod uid


def doubled_pods(readings: Iterable[MeterReading]) -> dict[Pod, list[MeterReading]]:
    """The pods with more than one running meter, and all their meters."""
    pods: dict[Pod, list[MeterReading]] = defaultdict(list)
    for r in readings:
        pods[(r.namespace, r.pod, r.pod_uid)].append(r)
    return {k: v for k, v in pods.items() if sum(m.running for m in v) > 1}


def anomalies(s: Session, doubled: dict[Pod, list[MeterReading]]) -> list[MeterAnomaly]:
    """Each doubled pod's over-billed GPU-seconds, what the ledger billed on them, and the credit."""
    out: list[MeterAnomaly] = []
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
                suggested_credit_usd=cost(billed, price) if price is not None else None,
            )
        )
    return out
