"""A SQLite store made by today's code, turned back into what the last release before migrations left:
the tables and columns the migrations made since are dropped, and the revision with them."""

from __future__ import annotations

import sqlite3

# What migrations 0003 onward added (0002 changed a length, which SQLite does not keep).
MADE_SINCE_TABLES = ("alembic_version", "leases", "incident_entities", "audit_nodes_out")
MADE_SINCE_INDEXES = ("ix_incidents_opened", "ix_incidents_status_opened", "ix_audit_at")
MADE_SINCE_COLUMNS = (("audit", "fence_owner"), ("audit", "fence_token"), ("approval_prompts", "request"))


def as_release_before_migrations(con: sqlite3.Connection) -> None:
    for table in MADE_SINCE_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {table}")
    for index in MADE_SINCE_INDEXES:
        con.execute(f"DROP INDEX IF EXISTS {index}")
    for table, column in MADE_SINCE_COLUMNS:
        con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
