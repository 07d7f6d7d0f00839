"""The shared schema under Alembic: the migrations make what the stores' models say, a database made by
the previous release (before migrations) is upgraded with its rows kept, and replicas that start
together migrate once. On SQLite and on a real PostgreSQL alike."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.engine import Engine

from sandbox.executor.audit import AuditBase, AuditLog
from sandbox.executor.fencing import LeaseBase
from supply_agent.incidents.store import _Base as IncidentsBase
from supply_agent.intake.events import _Base as EventsBase
from supply_agent.policy.gate import agent_out_nodes, history_from_audit
from supply_agent.policy.world import NodeView, WorldView
from supply_agent.schema import SchemaError, current, ensure_schema, head
from supply_agent.service.jobs import _Base as JobsBase
from supply_agent.service.prompts import _Base as PromptsBase
from tests.support.pg_fixture import fresh_database
from tools.billing.tables import Base as LedgerBase
from tools.notify import _Base as NotifyBase

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "schema"
RELEASE = "997f92b"  # the last release before migrations; its dumps were made by a serve run on it
MODELS: list[MetaData] = [
    b.metadata
    for b in (IncidentsBase, EventsBase, JobsBase, PromptsBase, LedgerBase, NotifyBase, AuditBase, LeaseBase)
]
TABLES = sorted(t for m in MODELS for t in m.tables)


def _diff(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, _merged()))


def _merged() -> MetaData:
    merged = MetaData()
    for m in MODELS:
        for t in m.tables.values():
            t.to_metadata(merged)
    return merged


def _rows(engine: Engine) -> dict[str, int]:
    """Rows per table of the stores that the database has."""
    have = set(inspect(engine).get_table_names()) & set(TABLES)
    with engine.connect() as conn:
        return {t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in sorted(have)}


DERIVED = {"audit_nodes_out"}  # filled by its revision from the audit log


def _kept(engine: Engine, before: dict[str, int]) -> None:
    """Every row the database had is there; the tables added since are there, empty, but those derived
    from the log, which hold what the log says (the nodes its writes left out of service)."""
    after = _rows(engine)
    assert set(after) == set(TABLES)
    assert {t: n for t, n in after.items() if t not in DERIVED} == {
        t: before.get(t, 0) for t in TABLES if t not in DERIVED
    }
    audit = AuditLog(engine)
    named = {str(r.params["node"]) for r in audit.records() if isinstance(r.params.get("node"), str)}
    nodes = {n: NodeView(name=n, pool="p", gpus=8) for n in named}  # rows without targets: resolved here
    world = WorldView(now=datetime(2026, 1, 1, tzinfo=UTC), nodes=nodes)
    expected = agent_out_nodes(history_from_audit(audit.records(), world))
    assert {r.node for r in audit.nodes_out()} == expected


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return current(conn)


def _pg(postgres_url: str, name: str) -> Engine:
    return create_engine(fresh_database(postgres_url, name).replace("postgresql://", "postgresql+psycopg://"))


def _load_sqlite(path: Path) -> Engine:
    conn = sqlite3.connect(path)
    conn.executescript((VECTORS / f"release-{RELEASE}.sqlite.sql").read_text())
    conn.close()
    return create_engine(f"sqlite:///{path}")


def _load_postgres(postgres_url: str, name: str) -> Engine:
    import psycopg

    url = fresh_database(postgres_url, name)
    # pg_dump's output, on a connection of its own: it empties the search_path for its session.
    with psycopg.connect(url) as conn:
        conn.execute((VECTORS / f"release-{RELEASE}.postgres.sql").read_text().encode())
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


def test_an_empty_sqlite_database_is_migrated_to_exactly_the_models(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ensure_schema(engine)
    assert _revision(engine) == head()
    assert set(TABLES) <= set(inspect(engine).get_table_names())
    assert _diff(engine) == []


def test_an_empty_postgres_database_is_migrated_to_exactly_the_models(postgres_url: str) -> None:
    engine = _pg(postgres_url, "schema_empty")
    ensure_schema(engine)
    assert _revision(engine) == head()
    assert _diff(engine) == []
    engine.dispose()


def test_the_previous_releases_sqlite_database_is_upgraded_with_its_rows(tmp_path: Path) -> None:
    engine = _load_sqlite(tmp_path / "release.sqlite")
    before = _rows(engine)
    assert _revision(engine) is None and before["audit"] > 0 and before["incidents"] > 0
    assert _diff(engine) != []  # the release's schema is not today's
    ensure_schema(engine)
    assert _revision(engine) == head()
    assert _diff(engine) == []
    _kept(engine, before)
    assert _rows(engine)["audit_nodes_out"] > 0  # the release's log cordoned a node it never handed back
    # The stores read what the release wrote.
    audit = AuditLog(engine)
    assert len(audit.records()) == before["audit"]


def test_the_previous_releases_postgres_database_is_upgraded_and_takes_a_long_key(postgres_url: str) -> None:
    engine = _load_postgres(postgres_url, "schema_release")
    before = _rows(engine)
    assert _revision(engine) is None and before["audit"] > 0
    audit_row = {
        "phase": "before",
        "outcome": "pending",
        "incident_id": "pd-Q1",
        "step": 0,
        "tool": "slack.post",
        "action_hash": "a" * 64,
        "idempotency_key": "slack.post:pd-QR03P6KN9G6PXM:" + "a" * 64,
        "params": {},
        "verdict": "allow",
    }
    # What the release did to every Slack prompt's audit row.
    with pytest.raises(Exception, match="too long"), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit (at, phase, outcome, incident_id, step, tool, action_hash, "
                "idempotency_key, params, verdict) VALUES (now(), :phase, :outcome, :incident_id, "
                ":step, :tool, :action_hash, :idempotency_key, '{}', :verdict)"
            ),
            {k: v for k, v in audit_row.items() if k != "params"},
        )
    ensure_schema(engine)
    assert _revision(engine) == head()
    assert _diff(engine) == []
    _kept(engine, before)
    audit = AuditLog(engine)
    audit.append(**audit_row)
    assert audit.records()[-1].idempotency_key == audit_row["idempotency_key"]
    engine.dispose()


def test_a_database_from_before_the_added_columns_is_upgraded(tmp_path: Path) -> None:
    """Older releases added columns at start; a database from before them gets them from revision 0001."""
    engine = _load_sqlite(tmp_path / "older.sqlite")
    with engine.begin() as conn:
        for table, column in (
            ("incidents", "component"),
            ("incidents", "folded_into"),
            ("intake_events", "attempts"),
            ("intake_events", "next_at"),
            ("audit", "targets"),
        ):
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    before = _rows(engine)
    ensure_schema(engine)
    assert _diff(engine) == []
    _kept(engine, before)
    with engine.connect() as conn:  # the default a release's rows get for a NOT NULL column
        assert conn.execute(text("SELECT DISTINCT attempts FROM intake_events")).scalars().all() == [0]


def test_a_database_migrated_by_a_newer_release_is_refused_with_its_revision(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'newer.sqlite'}")
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    other = create_engine(f"sqlite:///{tmp_path / 'newer.sqlite'}")
    with pytest.raises(SchemaError, match=r"revision 9999.*newer release"):
        ensure_schema(other)


_MIGRATE = """
import sys
from sqlalchemy import create_engine
from supply_agent.schema import ensure_schema
ensure_schema(create_engine(sys.argv[1]))
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_replicas_starting_together_migrate_once(backend: str, tmp_path: Path, postgres_url: str) -> None:
    if backend == "postgres":
        url = fresh_database(postgres_url, "schema_race").replace("postgresql://", "postgresql+psycopg://")
    else:
        url = f"sqlite:///{tmp_path / 'race.sqlite'}"
    procs = [
        subprocess.Popen([sys.executable, "-c", _MIGRATE, url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    engine = create_engine(url)
    assert _revision(engine) == head()
    assert _diff(engine) == []
    engine.dispose()


def test_the_db_command_upgrades_the_previous_release_and_says_where_it_stands(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from supply_agent.cli import main

    _load_sqlite(tmp_path / "release.sqlite").dispose()
    url = f"sqlite:///{tmp_path / 'release.sqlite'}"
    runner = CliRunner()
    behind = runner.invoke(main, ["db", "current", "--url", url])
    assert behind.exit_code == 1 and "at never migrated" in behind.output
    up = runner.invoke(main, ["db", "upgrade", "--url", url])
    assert up.exit_code == 0, up.output
    assert f"never migrated -> {head()}" in up.output
    now = runner.invoke(main, ["db", "current", "--url", url])
    assert now.exit_code == 0 and f"at {head()}" in now.output
