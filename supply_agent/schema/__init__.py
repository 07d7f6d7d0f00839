"""The shared schema, under Alembic migrations: every store's tables (events, jobs, incidents, audit,
approvals, ledger, outbox) in one database, brought to the newest revision before a store uses it.

Each store calls :func:`ensure_schema` on its engine when it opens. The first call for a database runs
the migrations it lacks (none, on one already at head: one query); a database made by a release before
migrations is taken in by revision 0001, which makes only what is missing. Replicas that start together
migrate one at a time: on PostgreSQL under an advisory lock, on a SQLite file under a file lock. The
LangGraph checkpoint tables are not here: the checkpointer's ``setup()`` migrates its own.

``supply-agent db upgrade`` runs the same migrations as a step of its own (a Kubernetes Job before a
rollout), and ``alembic -c supply_agent/schema/alembic.ini -x url=...`` works as usual.
"""

from __future__ import annotations

import fcntl
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
# pg_advisory_lock's key for migrating: any constant no other user of the database takes.
_LOCK_KEY = 0x5A_6D_16_01
_lock = threading.Lock()
_ready: weakref.WeakSet[Engine] = weakref.WeakSet()
_script: ScriptDirectory | None = None


class SchemaError(RuntimeError):
    """The database's schema is newer than this release knows, or cannot be migrated: says which."""


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    return cfg


def _scripts() -> ScriptDirectory:
    global _script
    if _script is None:
        _script = ScriptDirectory.from_config(config())
    return _script


def head() -> str:
    rev = _scripts().get_current_head()
    assert rev is not None
    return rev


def current(conn: Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    return MigrationContext.configure(conn).get_current_revision()


def ensure_schema(engine: Engine) -> None:
    """Bring the database of ``engine`` to the newest revision (once per engine per process)."""
    if engine in _ready:
        return
    with _lock:
        if engine in _ready:
            return
        with _exclusive(engine), engine.connect() as conn:
            at = current(conn)
            if at != head():
                known = {s.revision for s in _scripts().walk_revisions()}
                if at is not None and at not in known:
                    raise SchemaError(
                        f"the database at {engine.url.render_as_string(hide_password=True)} is at schema "
                        f"revision {at}, which this release does not know (newest known: {head()}): "
                        "it was migrated by a newer release; run that release, or restore a backup"
                    )
                cfg = config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
        _ready.add(engine)


@contextmanager
def _exclusive(engine: Engine) -> Iterator[None]:
    """One migrator at a time per database, across processes."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as lock:
            lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            try:
                yield
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                lock.commit()
        return
    path = engine.url.database
    if engine.dialect.name != "sqlite" or not path or path == ":memory:":
        yield
        return
    with open(f"{path}.migrate.lock", "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
