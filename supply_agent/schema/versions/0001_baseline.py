"""The schema of the releases before migrations: every table the stores made with ``create_all``.

A database made by such a release has these tables already, perhaps without a column added later (they
were added at start with ``ALTER TABLE``): this revision makes what is missing and leaves what is
there, so a release's database and an empty one both end at this revision's schema.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Columns the releases before migrations added to a table made without them: (table, column, type).
_ADDED = (
    ("incidents", "component", sa.String(length=300)),
    ("incidents", "folded_into", sa.String(length=64)),
    ("intake_events", "attempts", sa.Integer()),
    ("intake_events", "next_at", sa.Float()),
    ("audit", "targets", sa.JSON()),
)


def _exact(precision: int, scale: int) -> Any:
    """The ledger's exact decimals: NUMERIC where the database has it, a scaled integer on SQLite."""
    return sa.Numeric(precision, scale).with_variant(sa.BigInteger(), "sqlite")


def _table(name: str, *columns: Any, **kw: Any) -> None:
    if not sa.inspect(op.get_bind()).has_table(name):
        op.create_table(name, *columns, **kw)


def _index(name: str, table: str, columns: list[str], **kw: Any) -> None:
    if name not in {i["name"] for i in sa.inspect(op.get_bind()).get_indexes(table)}:
        op.create_index(name, table, columns, **kw)


def upgrade() -> None:
    _table(
        "alert_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("alertname", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("node", sa.String(length=253), nullable=True),
        sa.Column("incident_id", sa.String(length=64), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key", name="uq_alert_events_dedup"),
    )
    _index("ix_alert_events_fingerprint", "alert_events", ["fingerprint"], unique=False)
    _index("ix_alert_events_incident_id", "alert_events", ["incident_id"], unique=False)
    _table(
        "incident_timeline",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("node", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("incident_id", "seq", name="uq_timeline_seq"),
    )
    _index("ix_incident_timeline_incident_id", "incident_timeline", ["incident_id"], unique=False)
    _table(
        "incidents",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("alertname", sa.String(length=200), nullable=False),
        sa.Column("playbook_id", sa.String(length=100), nullable=True),
        sa.Column("severity", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("root_cause", sa.String(length=200), nullable=True),
        sa.Column("escalation_reason", sa.Text(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("human_owner", sa.String(length=200), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("component", sa.String(length=300), nullable=True),
        sa.Column("folded_into", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    _table(
        "service_jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("lane", sa.String(length=120), nullable=False),
        sa.Column("incident_id", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("first_failed_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    _index("ix_service_jobs_incident_id", "service_jobs", ["incident_id"], unique=False)
    _index("ix_service_jobs_lane", "service_jobs", ["lane"], unique=False)
    _index("ix_service_jobs_status", "service_jobs", ["status"], unique=False)
    _table(
        "approval_prompts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(length=64), nullable=False),
        sa.Column("action_hash", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=True),
        sa.Column("ts", sa.String(length=32), nullable=True),
        sa.Column("asked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("incident_id", "action_hash", name="uq_prompt_action"),
    )
    _index("ix_approval_prompts_incident_id", "approval_prompts", ["incident_id"], unique=False)
    _index("ix_approval_prompts_status", "approval_prompts", ["status"], unique=False)
    _table(
        "intake_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dedup_key", sa.String(length=120), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    _index("ix_intake_events_status", "intake_events", ["status"], unique=False)
    _table(
        "billing_customers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("price_per_gpu_hour", _exact(12, 4), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _table(
        "billing_meter_cursors",
        sa.Column("meter", sa.String(length=256), nullable=False),
        sa.Column("namespace", sa.String(length=253), nullable=False),
        sa.Column("pod", sa.String(length=253), nullable=False),
        sa.Column("reading", _exact(18, 3), nullable=False),
        sa.Column("read_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("meter"),
    )
    _table(
        "billing_metering_pauses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("namespace", sa.String(length=253), nullable=False),
        sa.Column("pod", sa.String(length=253), nullable=False),
        sa.Column("paused_at", sa.DateTime(), nullable=False),
        sa.Column("resumed_at", sa.DateTime(), nullable=True),
        sa.Column("incident_id", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("resume_key", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
        sa.UniqueConstraint("resume_key"),
    )
    _index(
        ("ix_billing_metering_pauses_incident_id"), "billing_metering_pauses", ["incident_id"], unique=False
    )
    _index(
        "uq_billing_pause_open",
        "billing_metering_pauses",
        ["namespace", "pod"],
        unique=True,
        sqlite_where=sa.text("resumed_at IS NULL"),
        postgresql_where=sa.text("resumed_at IS NULL"),
    )
    _table(
        "billing_payout_holds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node", sa.String(length=253), nullable=False),
        sa.Column("host_id", sa.String(length=256), nullable=True),
        sa.Column("held_at", sa.DateTime(), nullable=False),
        sa.Column("released_at", sa.DateTime(), nullable=True),
        sa.Column("incident_id", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("release_key", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
        sa.UniqueConstraint("release_key"),
    )
    _index("ix_billing_payout_holds_incident_id", "billing_payout_holds", ["incident_id"], unique=False)
    _index("ix_billing_payout_holds_node", "billing_payout_holds", ["node"], unique=False)
    _index(
        "uq_billing_hold_open",
        "billing_payout_holds",
        ["node"],
        unique=True,
        sqlite_where=sa.text("released_at IS NULL"),
        postgresql_where=sa.text("released_at IS NULL"),
    )
    _table(
        "billing_usage",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer", sa.String(length=128), nullable=False),
        sa.Column("namespace", sa.String(length=253), nullable=False),
        sa.Column("pod", sa.String(length=253), nullable=False),
        sa.Column("pod_uid", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=253), nullable=False),
        sa.Column("meter", sa.String(length=256), nullable=False),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.Column("window_end", sa.DateTime(), nullable=False),
        sa.Column("gpu_seconds", _exact(18, 3), nullable=False),
        sa.Column("billed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("meter", "window_end", name="uq_billing_usage_meter_window_end"),
    )
    _index("ix_billing_usage_customer", "billing_usage", ["customer", "window_end"], unique=False)
    _index("ix_billing_usage_meter", "billing_usage", ["meter"], unique=False)
    _index("ix_billing_usage_pod", "billing_usage", ["namespace", "pod", "window_end"], unique=False)
    _table(
        "billing_credits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer", sa.String(length=128), nullable=False),
        sa.Column("amount_usd", _exact(12, 2), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("incident_id", sa.String(length=256), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer"],
            ["billing_customers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    _index("ix_billing_credits_customer", "billing_credits", ["customer"], unique=False)
    _index("ix_billing_credits_incident_id", "billing_credits", ["incident_id"], unique=False)
    _table(
        "notify_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("incident_id", sa.String(length=128), nullable=False),
        sa.Column("customer", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    _index("ix_notify_outbox_customer", "notify_outbox", ["customer"], unique=False)
    _index("ix_notify_outbox_incident_id", "notify_outbox", ["incident_id"], unique=False)
    _table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("incident_id", sa.String(length=128), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("tool", sa.String(length=64), nullable=False),
        sa.Column("action_hash", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=False),
        sa.Column("approver", sa.String(length=128), nullable=True),
        sa.Column("dry_run_ok", sa.Boolean(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("targets", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("ix_audit_action_hash", "audit", ["action_hash"], unique=False)
    _index("ix_audit_idempotency_key", "audit", ["idempotency_key"], unique=False)
    _index("ix_audit_incident_id", "audit", ["incident_id"], unique=False)
    inspector = sa.inspect(op.get_bind())
    for table, column, type_ in _ADDED:
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            if column == "attempts":
                op.add_column(table, sa.Column(column, type_, nullable=False, server_default="0"))
            else:
                op.add_column(table, sa.Column(column, type_, nullable=True))


def downgrade() -> None:
    raise RuntimeError("0001 is the first schema under migrations: there is nothing to go back to")
