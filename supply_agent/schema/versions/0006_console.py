"""What the console filters and pages on: each incident's affected entities (node, pool, customer, pod)
as rows of their own, indexed by kind and value, and the incidents by when they opened.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "incident_entities",
        sa.Column("incident_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=253), nullable=False),
        sa.PrimaryKeyConstraint("incident_id", "kind", "value"),
    )
    op.create_index("ix_incident_entities_kind_value", "incident_entities", ["kind", "value"])
    op.create_index("ix_incidents_opened", "incidents", ["opened_at", "id"])
    op.create_index("ix_incidents_status_opened", "incidents", ["status", "opened_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_incidents_status_opened", table_name="incidents")
    op.drop_index("ix_incidents_opened", table_name="incidents")
    op.drop_index("ix_incident_entities_kind_value", table_name="incident_entities")
    op.drop_table("incident_entities")
