"""Each lease names its owner's liveness lock: a PostgreSQL advisory lock its owner holds on a connection
of its own for as long as its process lives. A lease whose owner's lock is free again (the process died,
and its connections with it) may be taken at once, before it lapses. Null: an owner that keeps no such
lock (SQLite, or a release before this one): its lease is taken only once it lapsed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("leases", sa.Column("live_key", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("live_key")
