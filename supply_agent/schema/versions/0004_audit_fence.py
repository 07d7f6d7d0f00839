"""Each audit row says which replica wrote it and under which lease token (null outside ``serve``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit", sa.Column("fence_owner", sa.String(length=200), nullable=True))
    op.add_column("audit", sa.Column("fence_token", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("fence_token")
        batch.drop_column("fence_owner")
