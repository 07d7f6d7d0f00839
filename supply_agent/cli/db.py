"""``supply-agent db``: the shared schema's migrations as a step of their own (a Kubernetes Job before a
rollout), and where a database stands. Every store also migrates on open, so this is never required."""

from __future__ import annotations

import click
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from supply_agent.schema import SchemaError, current, ensure_schema, head
from supply_agent.settings import load_settings


def register(cli_group: click.Group) -> None:
    """Add the ``db`` command group to ``cli_group``."""
    cli_group.add_command(db)


def _url(url: str | None) -> str:
    return url or load_settings().resolved_database_url()


@click.group("db")
def db() -> None:
    """The shared database's schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--url", help="SQLAlchemy URL (default: SUPPLY_AGENT_DATABASE_URL, or the SQLite file).")
def upgrade(url: str | None) -> None:
    """Migrate the database to the newest schema this release knows."""
    target = _url(url)
    engine = create_engine(target)
    shown = make_url(target).render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            before = current(conn)
        ensure_schema(engine)
    except SchemaError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    click.echo(f"{shown}: {before or 'never migrated'} -> {head()}")


@db.command("current")
@click.option("--url", help="SQLAlchemy URL (default: SUPPLY_AGENT_DATABASE_URL, or the SQLite file).")
def current_command(url: str | None) -> None:
    """Print the database's schema revision and the newest one this release knows; exit 1 when behind."""
    target = _url(url)
    engine = create_engine(target)
    try:
        with engine.connect() as conn:
            at = current(conn)
    finally:
        engine.dispose()
    click.echo(f"at {at or 'never migrated'}; newest {head()}")
    if at != head():
        raise SystemExit(1)
