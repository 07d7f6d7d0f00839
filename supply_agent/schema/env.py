"""Alembic's environment for the shared schema (the ``alembic`` command and :func:`ensure_schema` alike).

The migrations are plain DDL and import no store: the stores sit in layers below the schema's user,
and a migration must say what the schema *was* at its revision, not what today's models say."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

config = context.config
connection = config.attributes.get("connection")


def _run(conn: Connection) -> None:
    context.configure(connection=conn, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:  # the alembic command line: the URL from alembic.ini or -x url=...
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: pass -x url=postgresql://... (or set sqlalchemy.url)")
    with create_engine(url).connect() as conn:
        _run(conn)
