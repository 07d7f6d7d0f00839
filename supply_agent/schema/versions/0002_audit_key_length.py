"""The audit's idempotency key holds 200 characters, not 64.

A Slack prompt's key (``slack.post:<incident>:<action hash>``) is longer than 64: SQLite does not check
a VARCHAR's length, so the embedded store took it, and PostgreSQL refused every prompt with
``StringDataRightTruncation`` (found by running ``serve`` on PostgreSQL end to end).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.alter_column(
            "idempotency_key", type_=sa.String(length=200), existing_type=sa.String(length=64), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.alter_column(
            "idempotency_key", type_=sa.String(length=64), existing_type=sa.String(length=200), nullable=False
        )
