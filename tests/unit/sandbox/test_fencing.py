"""Leases and fencing tokens, as properties: whatever the order of takes, renewals, releases, lapses
and writes, at most one owner's write passes the fence at a time, and a token never goes back."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import create_engine

from sandbox.executor.fencing import Lease, LeaseTable, StaleFence
from tests.support.pg_fixture import fresh_database

OWNERS = ("replica-a", "replica-b", "replica-c")
NAME = "incident:pd-Q1"
TTL = 15.0


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def _passes(table: LeaseTable, lease: Lease) -> bool:
    with table.engine.begin() as conn:
        try:
            table.check(conn, lease)
        except StaleFence:
            return False
        return True


class Leases(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.table = LeaseTable(create_engine("sqlite://"), ttl_s=TTL, clock=self.clock)
        self.held: dict[str, Lease] = {}  # the last lease each owner was given (it may have lost it since)
        self.given: list[Lease] = []  # every lease ever given: only the current one may pass the fence
        self.tokens: list[int] = []  # every token handed out, in order
        # The model: who holds the lease and until when.
        self.owner: str | None = None
        self.until = 0.0
        self.token = 0

    def _live(self) -> bool:
        return self.owner is not None and self.until >= self.clock.t

    @rule(owner=st.sampled_from(OWNERS))
    def acquire(self, owner: str) -> None:
        got = self.table.acquire(NAME, owner)
        if self._live() and self.owner != owner:
            assert got is None  # another owner's lease runs: refused
            return
        assert got is not None
        if self._live() and self.owner == owner:
            assert got.token == self.token  # renewed without a lapse: the same token
        else:
            assert got.token == self.token + 1  # a takeover, or taken again after a lapse
        self.owner, self.until, self.token = owner, self.clock.t + TTL, got.token
        self.held[owner] = got
        self.given.append(got)
        self.tokens.append(got.token)

    @rule(owner=st.sampled_from(OWNERS))
    def renew(self, owner: str) -> None:
        lease = self.held.get(owner)
        if lease is None:
            return
        got = self.table.renew(lease)
        mine = self._live() and self.owner == owner and self.token == lease.token
        assert (got is not None) == mine
        if got is not None:
            self.until = self.clock.t + TTL

    @rule(owner=st.sampled_from(OWNERS))
    def release(self, owner: str) -> None:
        lease = self.held.get(owner)
        if lease is None:
            return
        self.table.release(lease)
        if self.owner == owner and self.token == lease.token:
            self.until = self.clock.t - 1e-6

    @rule(dt=st.sampled_from([0.5, 5.0, 14.9, 15.0, 15.1, 40.0]))
    def advance(self, dt: float) -> None:
        self.clock.t += dt

    @invariant()
    def one_writer_at_a_time(self) -> None:
        passing = {(lease.owner, lease.token) for lease in self.given if _passes(self.table, lease)}
        assert len(passing) <= 1
        if passing:
            assert self._live() and passing == {(self.owner, self.token)}
        else:
            assert (
                not self._live() or self.owner not in self.held or self.held[self.owner].token != self.token
            )

    @invariant()
    def tokens_never_go_back(self) -> None:
        assert self.tokens == sorted(self.tokens)


TestLeases = Leases.TestCase
TestLeases.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_a_frozen_owner_that_wakes_after_its_lease_moved_is_fenced(tmp_path: Path) -> None:
    clock = Clock()
    table = LeaseTable(create_engine(f"sqlite:///{tmp_path / 'l.sqlite'}"), ttl_s=TTL, clock=clock)
    a = table.acquire(NAME, "replica-a")
    assert a is not None and _passes(table, a)
    clock.t += TTL + 0.1  # replica-a frozen past its lease
    assert _passes(table, a) is False  # lapsed: even before anyone took it over
    b = table.acquire(NAME, "replica-b")
    assert b is not None and b.token == a.token + 1
    assert table.renew(a) is None  # waking up, a finds it lost the lease
    with table.engine.begin() as conn, pytest.raises(StaleFence, match="held by replica-b with token 2"):
        table.check(conn, a)
    assert _passes(table, b)
    assert table.holder(NAME) == b


def test_on_postgres_racing_replicas_take_a_lapsed_lease_once_and_a_fenced_write_holds_off_a_takeover(
    postgres_url: str,
) -> None:
    engine = create_engine(
        fresh_database(postgres_url, "fencing").replace("postgresql://", "postgresql+psycopg://")
    )
    table = LeaseTable(engine, ttl_s=0.5)  # the database's clock
    first = table.acquire(NAME, "replica-0")
    assert first is not None
    import time

    time.sleep(0.6)
    won: list[Lease] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        got = table.acquire(NAME, f"replica-{i + 1}")
        if got is not None:
            won.append(got)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and won[0].token == first.token + 1
    # A write fenced by the holder locks the lease row until it commits: a takeover after the lapse
    # waits for that write and then gets the next token, so the write is never made under a moved lease.
    holder = won[0]
    taken: list[Lease | None] = []
    with engine.begin() as conn:
        table.check(conn, holder)
        time.sleep(0.6)  # the lease lapses while the write's transaction is open
        thief = threading.Thread(target=lambda: taken.append(table.acquire(NAME, "replica-late")))
        thief.start()
        thief.join(0.3)
        assert thief.is_alive()  # waiting on the row lock
    thief.join(5)
    assert taken and taken[0] is not None and taken[0].token == holder.token + 1
    engine.dispose()


_HOLDER = """
import sys, time
from sqlalchemy import create_engine
from sandbox.executor.fencing import LeaseTable
table = LeaseTable(create_engine(sys.argv[1]), ttl_s=60.0)
lease = table.acquire("incident-7", "replica-doomed")
print(lease.token, flush=True)
time.sleep(600)
"""


def test_on_postgres_a_killed_owners_lease_is_taken_at_once_and_a_frozen_ones_only_when_it_lapses(
    postgres_url: str,
) -> None:
    """The liveness lock: a process killed (SIGKILL) loses its leases with its connections, before they
    lapse; a frozen one (SIGSTOP) keeps its connection, so its lease is taken only after the lease time."""
    import os
    import signal
    import subprocess
    import sys
    import time

    url = fresh_database(postgres_url, "liveness").replace("postgresql://", "postgresql+psycopg://")
    engine = create_engine(url)
    table = LeaseTable(engine, ttl_s=60.0)
    root = Path(__file__).resolve().parents[3]

    def holder() -> tuple[subprocess.Popen[str], int]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, url], stdout=subprocess.PIPE, text=True, cwd=root
        )
        assert proc.stdout is not None
        return proc, int(proc.stdout.readline())

    try:
        frozen, token = holder()
        try:
            os.kill(frozen.pid, signal.SIGSTOP)
            time.sleep(1.5)
            assert table.acquire("incident-7", "replica-survivor") is None  # frozen is not dead: wait
            assert table.holder("incident-7") is not None
        finally:
            frozen.kill()
            frozen.wait(10)
        killed_at = time.monotonic()
        got = None
        while got is None and time.monotonic() - killed_at < 10:
            got = table.acquire("incident-7", "replica-survivor")
            time.sleep(0.05)
        assert got is not None and got.token == token + 1  # within seconds of the kill, a minute early
        assert time.monotonic() - killed_at < 10
        # The survivor's own lease looks alive to the others while it runs, and lapses only.
        other = LeaseTable(engine, ttl_s=60.0)
        assert other.acquire("incident-7", "replica-other") is None
        assert other.holder("incident-7") == got
        other.close()
    finally:
        table.close()
        engine.dispose()
