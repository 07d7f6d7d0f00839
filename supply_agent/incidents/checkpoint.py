"""The graph's checkpointer: SQLite by default, Postgres by URL (``langgraph-checkpoint-postgres``).

Checkpoints are written with ``durability="sync"``: a crash loses at most the node that was running,
and that node is safe to run again. Only our own state types are accepted when a checkpoint is read
back (LangGraph's msgpack allowlist), so a tampered checkpoint cannot name arbitrary classes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from supply_agent import models
from supply_agent.models.incident import STATE_TYPES

_TYPES: tuple[type, ...] = (
    *STATE_TYPES,
    models.Action,
    models.Decision,
    models.Approval,
    models.Targets,
    models.Verdict,
)


def serializer() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=[(t.__module__, t.__qualname__) for t in _TYPES])


def is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://", "postgresql+psycopg://"))


@contextmanager
def open_checkpointer(url: str) -> Iterator[BaseCheckpointSaver[Any]]:
    """A checkpointer for ``url``: ``postgresql://…`` for Postgres, else a SQLite file path
    (``sqlite:///path`` or a bare path)."""
    os.environ.setdefault("LANGGRAPH_STRICT_MSGPACK", "true")
    if is_postgres(url):
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row

        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.Connection.connect(
            conninfo, autocommit=True, prepare_threshold=0, row_factory=dict_row
        ) as conn:
            pg = PostgresSaver(conn, serde=serializer())
            pg.setup()
            yield pg
        return
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = Path(url.removeprefix("sqlite:///")) if url else Path("var/checkpoints.sqlite")
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=5000")
        # WAL with synchronous=NORMAL survives a killed process (the crash the graph must resume from);
        # only a power loss can lose the last commits.
        db.execute("PRAGMA synchronous=NORMAL")
        lite = SqliteSaver(db, serde=serializer())
        lite.setup()
        yield lite
    finally:
        db.close()
