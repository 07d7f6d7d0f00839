"""The append-only audit log of every write the agent attempted: a SQL table and a structlog line."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

if TYPE_CHECKING:
    from sandbox.executor.fencing import Lease, LeaseTable

from supply_agent.logging import get_logger
from supply_agent.schema import ensure_schema
from tools.catalogue import OUT_OF_SERVICE

HAND_BACK = "k8s.uncordon_node"  # the write that hands a node back

_POSTGRES_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": 10,
    # A session idle in a transaction 5 s (a replica frozen mid-append, holding the budget lock) is
    # ended by the server: the lock goes, the row is never written, and the others go on.
    "options": "-c statement_timeout=30s -c lock_timeout=10s -c idle_in_transaction_session_timeout=5s",
}


# pg_advisory_xact_lock's key for claiming a budget: one scope, the fleet (every budget is fleet-wide).
BUDGET_LOCK = 0x5A_6D_16_02


class StaleBudget(RuntimeError):
    """A gated write began after the decision was made: decide again, on what it spent."""


class AuditBase(DeclarativeBase):
    pass


class AuditRecord(AuditBase):
    """One row per phase of one attempt: ``before``, then ``after`` (or ``refused``). Never updated."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    phase: Mapped[str] = mapped_column(String(16))  # before | after | refused
    # pending | executed | failed | timed_out | refused | duplicate
    outcome: Mapped[str] = mapped_column(String(16))
    incident_id: Mapped[str] = mapped_column(String(128), index=True)
    step: Mapped[int] = mapped_column(Integer)
    tool: Mapped[str] = mapped_column(String(64))
    action_hash: Mapped[str] = mapped_column(String(64), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    verdict: Mapped[str] = mapped_column(String(8))
    approver: Mapped[str | None] = mapped_column(String(128), nullable=True)
    dry_run_ok: Mapped[bool | None] = mapped_column(nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What the action touched as the gate resolved it when deciding (the decision's targets): the
    # budgets count past writes by this, not by what the world shows after them (a drained node has no
    # tenant pods left). None on rows written before the column existed, and on control actions.
    targets: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # ``serve``: the replica that wrote the row and the token of the lease it held (its work's fence).
    fence_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    fence_token: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class NodeOutRow(AuditBase):
    """A node the agent has out of service now, and the audit row that took it out: kept with the log
    (added by an executed out-of-service write, removed by an executed uncordon, in one transaction with
    that row), so a decision reads the nodes out, not every write ever made."""

    __tablename__ = "audit_nodes_out"

    node: Mapped[str] = mapped_column(String(253), primary_key=True)
    audit_id: Mapped[int] = mapped_column(Integer)
    incident_id: Mapped[str] = mapped_column(String(128))
    tool: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _row_nodes(record: AuditRecord) -> list[str]:
    """The nodes an audit row's write touched: its decision's targets, else its ``node`` parameter."""
    targets = record.targets
    if isinstance(targets, dict) and targets.get("nodes"):
        return [str(n) for n in targets["nodes"]]
    node = (record.params or {}).get("node")
    return [node] if isinstance(node, str) else []


def _keep_nodes_out(session: Session, record: AuditRecord) -> None:
    """Bring ``audit_nodes_out`` in step with an executed row (called in the row's own transaction)."""
    if record.phase != "after" or record.outcome != "executed":
        return
    if record.tool not in OUT_OF_SERVICE and record.tool != HAND_BACK:
        return
    nodes = _row_nodes(record)
    if not nodes:
        return
    session.execute(delete(NodeOutRow).where(NodeOutRow.node.in_(nodes)))
    if record.tool in OUT_OF_SERVICE:
        session.flush()  # the row's id
        for node in nodes:
            session.add(
                NodeOutRow(
                    node=node,
                    audit_id=record.id,
                    incident_id=record.incident_id,
                    tool=record.tool,
                    at=record.at,
                )
            )


class AuditLog:
    def __init__(self, engine: Engine, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.clock = clock  # the executor's clock: a sandbox's simulated time, so windows line up
        ensure_schema(engine)
        self.log = get_logger(component="audit")

    @classmethod
    def from_url(cls, url: str) -> AuditLog:
        # Every write's before and after rows go through here: on PostgreSQL an unreachable server or a
        # held lock fails the append within bounds instead of holding the executor.
        postgres = make_url(url).get_backend_name() == "postgresql"
        return cls(
            create_engine(
                url,
                connect_args=dict(_POSTGRES_TIMEOUTS) if postgres else {},
                pool_pre_ping=postgres,  # a connection the server ended is replaced, not failed on
            )
        )

    def budget_seq(self, conn: Connection | None = None) -> int:
        """The newest ``before`` row of a gated write (control actions and write-back left out): a
        decision records it, and one made before a later write spent a budget it did not see."""
        q = select(func.max(AuditRecord.id)).where(
            AuditRecord.phase == "before", AuditRecord.verdict != "control"
        )
        if conn is not None:
            return int(conn.execute(q).scalar() or 0)
        with self.engine.connect() as c:
            return int(c.execute(q).scalar() or 0)

    def append(
        self,
        *,
        fence: tuple[LeaseTable, Lease] | None = None,
        budget_seq: int | None = None,
        **fields: Any,
    ) -> AuditRecord:
        """Append a row. With ``fence`` (the lease table, the lease the writer holds), the row is written
        only while that lease is still the writer's, checked in the same transaction
        (:class:`~sandbox.executor.fencing.StaleFence` otherwise). With ``budget_seq`` (the budget
        sequence its decision saw), only if no gated write began since, checked under a lock every
        replica takes for it (:class:`StaleBudget` otherwise): deciding and claiming a budget are one
        step across replicas, not only within a process."""
        fields.setdefault("at", self.clock())
        record = AuditRecord(**fields)
        with Session(self.engine, expire_on_commit=False) as session:
            if budget_seq is not None:
                conn = session.connection()
                if self.engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": BUDGET_LOCK})
                now = self.budget_seq(conn)
                if now != budget_seq:
                    raise StaleBudget(
                        f"a gated write began since the decision (audit row {now}, the decision saw {budget_seq})"
                    )
            if fence is not None:
                fence[0].check(session.connection(), fence[1])
                record.fence_owner, record.fence_token = fence[1].owner, fence[1].token
            session.add(record)
            _keep_nodes_out(session, record)
            session.commit()
        self.log.info(
            "audit",
            incident_id=record.incident_id,
            step=record.step,
            tool=record.tool,
            phase=record.phase,
            outcome=record.outcome,
            action_hash=record.action_hash[:16],
            error=record.error,
        )
        return record

    def completed(self, idempotency_key: str) -> AuditRecord | None:
        """The successful ``after`` row for a key: a repeated or resumed step returns it, never re-runs."""
        with Session(self.engine, expire_on_commit=False) as session:
            return session.scalars(
                select(AuditRecord)
                .where(AuditRecord.idempotency_key == idempotency_key)
                .where(AuditRecord.phase == "after")
                .where(AuditRecord.outcome == "executed")
                .order_by(AuditRecord.id)
                .limit(1)
            ).first()

    def interrupted(self, idempotency_key: str) -> bool:
        """Whether the last run under this key began (a ``before`` row) and never recorded how it ended:
        the process died mid-call, so the other side may or may not have acted."""
        with Session(self.engine, expire_on_commit=False) as session:
            last = session.scalar(
                select(AuditRecord.phase)
                .where(AuditRecord.idempotency_key == idempotency_key)
                .order_by(AuditRecord.id.desc())
                .limit(1)
            )
        return last == "before"

    def for_decision(self, since: datetime, incident_id: str) -> tuple[list[AuditRecord], list[NodeOutRow]]:
        """What a decision counts, whatever the log's length: the rows of its budget windows (``at`` from
        ``since``) and of its own incident (any age), in the order written, and the nodes out now. Two
        reads on two indexes (an ``OR`` of them would scan the log)."""
        with Session(self.engine, expire_on_commit=False) as session:
            recent = session.scalars(select(AuditRecord).where(AuditRecord.at >= since))
            older = session.scalars(
                select(AuditRecord).where(AuditRecord.incident_id == incident_id, AuditRecord.at < since)
            )
            rows = sorted([*recent, *older], key=lambda r: r.id)
            return rows, list(session.scalars(select(NodeOutRow).order_by(NodeOutRow.audit_id)))

    def nodes_out(self) -> list[NodeOutRow]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(select(NodeOutRow).order_by(NodeOutRow.audit_id)))

    def records(self, incident_id: str | None = None) -> list[AuditRecord]:
        with Session(self.engine, expire_on_commit=False) as session:
            q = select(AuditRecord).order_by(AuditRecord.id)
            if incident_id is not None:
                q = q.where(AuditRecord.incident_id == incident_id)
            return list(session.scalars(q))


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
