"""The nodes the agent has out of service now, kept with the audit row that took each out, so a decision
reads them (and the audit rows of its budget windows and of its own incident) instead of the whole log;
and an index on the audit log's time for those windows.

A node is added when a write that takes nodes out of service (cordon, drain, a NoSchedule taint) is
audited as executed, and removed when an uncordon of it is. The table is filled here from the log as it
stands, in the order it was written.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The catalogue's out-of-service tools when this revision was written (a migration never follows later
# code: what it computed is what the store held then).
OUT = ("k8s.cordon_node", "k8s.drain_node", "k8s.taint_node")
BACK = "k8s.uncordon_node"


def _nodes(targets: Any, params: Any) -> list[str]:
    if isinstance(targets, dict) and targets.get("nodes"):
        return [str(n) for n in targets["nodes"]]
    if isinstance(params, dict) and isinstance(params.get("node"), str):
        return [params["node"]]
    return []


def upgrade() -> None:
    nodes_out = op.create_table(
        "audit_nodes_out",
        sa.Column("node", sa.String(253), primary_key=True),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.String(128), nullable=False),
        sa.Column("tool", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_audit_at", "audit", ["at"])
    audit = sa.table(
        "audit",
        sa.column("id", sa.Integer()),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("phase", sa.String()),
        sa.column("outcome", sa.String()),
        sa.column("incident_id", sa.String()),
        sa.column("tool", sa.String()),
        sa.column("params", sa.JSON()),
        sa.column("targets", sa.JSON()),
    )
    bind = op.get_bind()
    out: dict[str, dict[str, Any]] = {}
    rows = bind.execute(
        sa.select(audit)
        .where(audit.c.phase == "after", audit.c.outcome == "executed", audit.c.tool.in_((*OUT, BACK)))
        .order_by(audit.c.id)
    )
    for r in rows:
        for node in _nodes(r.targets, r.params):
            if r.tool == BACK:
                out.pop(node, None)
            else:
                out[node] = {
                    "node": node,
                    "audit_id": r.id,
                    "incident_id": r.incident_id,
                    "tool": r.tool,
                    "at": r.at,
                }
    if out:
        op.bulk_insert(nodes_out, list(out.values()))


def downgrade() -> None:
    op.drop_index("ix_audit_at", table_name="audit")
    op.drop_table("audit_nodes_out")
