"""Leases with fencing tokens: which replica owns a piece of work (an incident's thread) until when.

A lease is a row: its name, its owner, when it lapses, and a token that grows by one each time the lease
changes hands (or is taken again after it lapsed). The owner renews it well before it lapses; a replica
that dies or freezes stops renewing, and once the lease lapsed any replica may take it, with the next
token. Times are the database's clock on PostgreSQL (replicas' clocks may disagree; the database's is
the one they share), the process's on SQLite (one machine).

On PostgreSQL each owner also holds a **liveness lock** (:class:`Liveness`): a session advisory lock on a
connection of its own, for its process's life, its key stored on every lease it takes. A process that
dies takes its connections with it, and the server frees the lock at once; a lease whose owner's lock
is free may be taken before it lapses, so the work of a killed replica moves within a second, not a
lease time. A frozen replica, or one cut off by the network, keeps its connection open on the server:
its leases lapse as before. Either way the token fences what the old owner may still try.

The token is the fence (Kleppmann, "How to do distributed locking", 2016): a write is made with the
token its maker holds, and :meth:`LeaseTable.holds` refuses it when the lease moved on since, however
long the maker was frozen. The executor checks it in the same transaction as the audit row it writes
before running an action, so a replica that wakes after its lease moved runs nothing more.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    String,
    case,
    cast,
    false,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from supply_agent.schema import ensure_schema

log = structlog.get_logger("sandbox.executor.fencing")
# The first key of every liveness lock (the two-key form: apart from the budget's one-key lock).
LIVE_NS = 0x5A17


class LeaseBase(DeclarativeBase):
    pass


class LeaseRow(LeaseBase):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    token: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[float] = mapped_column(Float)
    acquired_at: Mapped[float] = mapped_column(Float)
    # The owner's liveness lock (see Liveness); null: its owner keeps none, its lease lapses only.
    live_key: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


@dataclass(frozen=True)
class Lease:
    """A lease as its owner holds it: the token is what its writes are fenced with."""

    name: str
    owner: str
    token: int
    expires_at: float


class Liveness:
    """This process's liveness lock on PostgreSQL: ``pg_try_advisory_lock(LIVE_NS, key)`` held on a
    connection of its own (not the pool's) with a random key. :meth:`key` gives the key while the lock
    is held, taking it again, with a new key, on a new connection when the old one broke."""

    PING_S = 1.0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._raw: Any = None
        self._key: int | None = None
        self._pinged = 0.0
        self._lock = threading.Lock()

    def key(self) -> int | None:
        with self._lock:
            if self._raw is not None and time.monotonic() - self._pinged < self.PING_S:
                return self._key
            if self._raw is not None:
                try:
                    self._raw.dbapi_connection.execute("SELECT 1")
                    self._pinged = time.monotonic()
                    return self._key
                except Exception:
                    log.warning("the liveness lock's connection broke: taking it again")
                    self._close()
            try:
                raw = self.engine.raw_connection()
                raw.detach()  # its own for the process's life: its end is the signal
                db: Any = raw.dbapi_connection
                db.autocommit = True
                for _ in range(8):
                    key = secrets.randbelow(2**31 - 2) + 1
                    if db.execute(
                        "SELECT pg_try_advisory_lock(%s::int4, %s::int4)", (LIVE_NS, key)
                    ).fetchone()[0]:
                        self._raw, self._key, self._pinged = raw, key, time.monotonic()
                        return key
                raw.close()
            except Exception as exc:  # no liveness lock: this owner's leases lapse only
                log.warning("cannot take the liveness lock", error=str(exc)[:300])
            return None

    def _close(self) -> None:
        raw, self._raw, self._key = self._raw, None, None
        if raw is not None:
            try:
                raw.close()
            except Exception:
                log.debug("the liveness lock's connection would not close")

    def close(self) -> None:
        with self._lock:
            self._close()


def owner_gone(key: Any) -> ColumnElement[bool]:
    """True when the owner's liveness lock (``key``) is free: its process is gone. Taken for the
    transaction only (released at its end), so asking takes nothing from anyone."""
    return func.pg_try_advisory_xact_lock(literal(LIVE_NS, Integer), cast(key, Integer))


class StaleFence(RuntimeError):
    """A write made with a lease that moved on (or lapsed): says whose it is now."""


class LeaseTable:
    """The ``leases`` table. ``clock`` (epoch seconds) replaces the database's clock (tests)."""

    def __init__(self, engine: Engine, ttl_s: float = 15.0, clock: Callable[[], float] | None = None) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self._clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        self.liveness = Liveness(engine) if self._postgres else None
        ensure_schema(engine)

    def _gone(self) -> ColumnElement[bool]:
        """The lease's owner is gone (its liveness lock free); never on SQLite."""
        if not self._postgres:
            return false()
        return LeaseRow.live_key.is_not(None) & owner_gone(LeaseRow.live_key)

    def close(self) -> None:
        """Give the liveness lock up (the process's leases then look like a dead one's)."""
        if self.liveness is not None:
            self.liveness.close()

    def now(self, conn: Connection) -> float:
        if self._clock is not None:
            return self._clock()
        if self._postgres:
            return float(conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
        return time.time()

    def acquire(self, name: str, owner: str) -> Lease | None:
        """Take the lease, or renew it when ``owner`` holds it; None while another owner's lease runs.
        The token grows unless ``owner`` held it without a lapse. A lease whose owner is gone (its
        liveness lock free) is taken as a lapsed one is."""
        insert = pg_insert if self._postgres else sqlite_insert
        live_key = self.liveness.key() if self.liveness is not None else None
        with self.engine.begin() as conn:
            now = self.now(conn)
            ins = insert(LeaseRow).values(
                name=name,
                owner=owner,
                token=1,
                expires_at=now + self.ttl_s,
                acquired_at=now,
                live_key=live_key,
            )
            held = (LeaseRow.owner == owner) & (LeaseRow.expires_at >= now)
            stmt = ins.on_conflict_do_update(
                index_elements=["name"],
                set_={
                    "token": _case(held, LeaseRow.token, LeaseRow.token + 1),
                    "acquired_at": _case(held, LeaseRow.acquired_at, now),
                    "owner": owner,
                    "expires_at": now + self.ttl_s,
                    "live_key": live_key,
                },
                where=(LeaseRow.owner == owner) | (LeaseRow.expires_at < now) | self._gone(),
            ).returning(LeaseRow.token, LeaseRow.expires_at)
            row = conn.execute(stmt).first()
        return None if row is None else Lease(name, owner, int(row[0]), float(row[1]))

    def renew(self, lease: Lease) -> Lease | None:
        """Extend a lease its owner still holds; None when it lapsed or moved (the owner stops its work).
        It carries the owner's liveness lock as it is now (taken again after a broken connection)."""
        live: dict[str, Any] = {}
        if self.liveness is not None and (key := self.liveness.key()) is not None:
            live["live_key"] = key
        with self.engine.begin() as conn:
            now = self.now(conn)
            row = conn.execute(
                update(LeaseRow)
                .where(_same(lease), LeaseRow.expires_at >= now)
                .values(expires_at=now + self.ttl_s, **live)
                .returning(LeaseRow.expires_at)
            ).first()
        return None if row is None else Lease(lease.name, lease.owner, lease.token, float(row[0]))

    def release(self, lease: Lease) -> None:
        """Give the lease up now (another replica may take it at once); the token stays, to grow."""
        with self.engine.begin() as conn:
            now = self.now(conn)
            conn.execute(update(LeaseRow).where(_same(lease)).values(expires_at=now - 1e-6))

    def holder(self, name: str) -> Lease | None:
        """Who holds the lease now (None: nobody, it lapsed, or its owner is gone)."""
        with self.engine.connect() as conn:
            now = self.now(conn)
            row = conn.execute(
                select(LeaseRow.owner, LeaseRow.token, LeaseRow.expires_at, self._gone()).where(
                    LeaseRow.name == name
                )
            ).first()
            if row is None or float(row[2]) < now or row[3]:
                return None
            return Lease(name, str(row[0]), int(row[1]), float(row[2]))

    def check(self, conn: Connection, lease: Lease) -> None:
        """Raise :class:`StaleFence` unless ``lease`` is still held, unlapsed, with its token: inside the
        transaction of ``conn``, whose write then commits only if the lease did not move first (on
        PostgreSQL the row is locked until that transaction ends, so a takeover waits for it)."""
        q = select(LeaseRow.owner, LeaseRow.token, LeaseRow.expires_at).where(LeaseRow.name == lease.name)
        if self._postgres:
            q = q.with_for_update()
        row = conn.execute(q).first()
        now = self.now(conn)
        if row is None:
            raise StaleFence(f"lease {lease.name}: no such lease (token {lease.token})")
        owner, token, expires = str(row[0]), int(row[1]), float(row[2])
        if token != lease.token or owner != lease.owner:
            raise StaleFence(
                f"lease {lease.name} moved: held by {owner} with token {token}, this write has token "
                f"{lease.token} of {lease.owner}"
            )
        if expires < now:
            raise StaleFence(
                f"lease {lease.name} of {owner} lapsed {now - expires:.1f} s ago: renew it first"
            )


def _same(lease: Lease) -> ColumnElement[bool]:
    return (LeaseRow.name == lease.name) & (LeaseRow.owner == lease.owner) & (LeaseRow.token == lease.token)


def _case(cond: ColumnElement[bool], then: Any, other: Any) -> Any:
    return case((cond, then), else_=other)


class LeaseLost(RuntimeError):
    """The work this thread does is no longer this replica's (its lease lapsed or moved): it stops,
    records nothing as done, and the lease's new owner carries the work on."""


class Fence:
    """The lease each thread's work runs under, for the executor to fence its writes with: an
    incident's lease for a job of that incident, a singleton's for the sweeper or the watchdog."""

    def __init__(self, table: LeaseTable) -> None:
        self.table = table
        self._local = threading.local()

    @contextmanager
    def under(self, lease: Lease) -> Iterator[Lease]:
        before = getattr(self._local, "lease", None)
        self._local.lease = lease
        try:
            yield lease
        finally:
            self._local.lease = before

    def current(self) -> Lease | None:
        return getattr(self._local, "lease", None)
