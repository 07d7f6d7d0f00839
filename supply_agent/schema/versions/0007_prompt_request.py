"""An approval prompt may carry the request it asks about. Prompts of the agent's own incidents leave it
null (the thread's interrupt holds the request); a prompt with no thread behind it (an approval another
agent asked for over MCP) keeps its request here, so the click, the sweeper and the message update can
finish it without a graph.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("approval_prompts", sa.Column("request", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approval_prompts") as batch:
        batch.drop_column("request")
