"""The event log's writer on both databases: a burst stored in one transaction, a re-delivery one event
(unless its row failed: then it is revived), finishing and retrying; on PostgreSQL, a writer whose
connection the server kills refuses that batch and stores the next one on a new connection."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from supply_agent.intake.events import Classified, EventLog
from tests.support.pg_fixture import fresh_database


def _event(key: str) -> Classified:
    return Classified(source="pagerduty", dedup_key=key, event_type="incident.triggered", handled=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventLog]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'intake.db'}"
    else:
        server = request.getfixturevalue("postgres_url")
        url = fresh_database(server, "event_log_stores").replace("postgresql://", "postgresql+psycopg://")
    events = EventLog.from_url(url, track_pending=True)
    try:
        yield events
    finally:
        events.close()


def test_a_burst_is_stored_once_per_delivery_and_a_failed_one_revived(log: EventLog) -> None:
    # Many callers at once, some delivering the same event twice: the writer batches them.
    futures = [log.submit(_event(f"k{i % 150}"), b'{"n": %d}' % i) for i in range(300)]
    ids = [f.result(timeout=30) for f in futures]
    stored = [i for i in ids if i is not None]
    assert len(stored) == 150 and len(set(stored)) == 150  # each key once, the repeat a duplicate
    assert ids[:150] == stored  # the first delivery of each key is the one stored
    assert log.get(stored[0]) is not None and log.get(stored[0]).body == b'{"n": 0}'  # type: ignore[union-attr]
    log.finish(stored[0], "failed", "boom")
    log.finish(stored[1], "handled")
    log.retry_many([(stored[2], "later", time.time() + 60)])
    assert log.counts()["failed"] == 1
    assert log.add(_event("k0"), b"again") == stored[0]  # a failed row revived by its re-delivery
    assert log.add(_event("k1"), b"again") is None  # a handled one stays handled
    assert stored[2] not in log.pending()  # due later
    assert log.counts() == {"pending": 149, "handled": 1}
    time.sleep(0.7)
    log.add(_event("k-last"), b"{}")  # the next batch recounts (every half second)
    assert log.pending_estimate() == 150


def test_a_killed_connection_refuses_its_batch_and_the_next_is_stored(postgres_url: str) -> None:
    url = fresh_database(postgres_url, "event_log_kill")
    events = EventLog.from_url(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        assert events.add(_event("before"), b"{}") is not None
        admin = make_url(url).set(database="postgres").render_as_string(False)
        with psycopg.connect(admin, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'event_log_kill'"
            ).fetchall()
        assert killed
        outcomes: list[str] = []
        # The writer learns of the kill at its next batch: that batch's callers hear an error (intake
        # answers 503 and the sender delivers again); none waits for ever, and the next batch is stored.
        for i in range(3):
            try:
                got = events.submit(_event(f"after-{i}"), b"{}").result(timeout=30)
                outcomes.append("stored" if got is not None else "duplicate")
            except Exception:
                outcomes.append("refused")
        assert outcomes[-1] == "stored" and "duplicate" not in outcomes, outcomes
        assert outcomes.count("refused") <= 1
        stored = {e for e in (events.get(i) for i in events.pending()) if e is not None}
        assert len(stored) == 1 + outcomes.count("stored")
    finally:
        events.close()


def test_every_store_outlives_the_server_ending_its_connections(postgres_url: str) -> None:
    """PostgreSQL restarted or a connection ended by the server: the next use of each store opens a new
    connection (checked before use) instead of failing once for each connection its pool kept."""
    from sandbox.executor.audit import AuditLog
    from supply_agent.incidents.store import IncidentStore
    from tools.billing.ledger import Ledger
    from tools.notify import Outbox

    url = fresh_database(postgres_url, "stores_reconnect").replace("postgresql://", "postgresql+psycopg://")
    audit, ledger, outbox = AuditLog.from_url(url), Ledger.from_url(url), Outbox.from_url(url)
    store = IncidentStore.from_url(url)
    reads = {
        "audit": lambda: audit.records(),
        "ledger": lambda: ledger.credits_for_incident("inc-1"),
        "outbox": lambda: outbox.notices(),
        "incidents": lambda: store.incidents(limit=5),
    }
    try:
        for read in reads.values():
            read()  # each pool now holds an open connection
        admin = make_url(url).set(drivername="postgresql", database="postgres").render_as_string(False)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'stores_reconnect'"
            )
        for name, read in reads.items():
            try:
                read()
            except Exception as exc:
                pytest.fail(f"{name}: the first use after the server ended its connection failed: {exc}")
    finally:
        for engine in (audit.engine, ledger.engine, outbox.engine, store.engine):
            engine.dispose()


_HOLD = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process (as the worker is) holding the intake file's write lock for ``seconds``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_sqlite_writer_waits_for_another_process_lock_and_gives_up_past_its_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "intake.db"
    events = EventLog.from_url(f"sqlite:///{path}")
    try:
        assert events.add(_event("before"), b"{}") is not None  # the file and the writer's connection
        holder = _hold_lock(path, 0.3)
        stored = events.submit(_event("during"), b"{}")
        assert stored.result(timeout=10) is not None  # stored once the other process let go
        assert holder.wait(10) == 0
        # A lock held past the writer's wait: that batch's callers hear it (the intake answers 503).
        monkeypatch.setattr("supply_agent.intake.events._LOCK_WAIT_S", 0.2)
        holder = _hold_lock(path, 3.0)
        refused = events.submit(_event("refused"), b"{}")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            refused.result(timeout=10)
        holder.wait(10)
        assert events.add(_event("refused"), b"{}") is not None  # the sender's retry is stored
    finally:
        events.close()
