"""The ledger and the audit log on PostgreSQL fail within bounds: a connect timeout, and a statement and
lock timeout on every session, so a stuck server or a held row lock cannot hold an incident's step."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from sandbox.executor.audit import AuditLog
from tools.billing import Ledger


@pytest.fixture
def url(postgres_url: str) -> str:
    return postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)


def _settings(engine: object) -> tuple[str, str]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return (
            conn.execute(text("SHOW statement_timeout")).scalar_one(),
            conn.execute(text("SHOW lock_timeout")).scalar_one(),
        )


def test_the_ledger_and_the_audit_log_bound_every_statement(url: str) -> None:
    ledger = Ledger.from_url(url)
    assert _settings(ledger.engine) == ("30s", "10s")
    ledger.close()
    audit = AuditLog.from_url(url)
    assert _settings(audit.engine) == ("30s", "10s")
    audit.engine.dispose()
