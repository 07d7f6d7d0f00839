"""The billing ledger: customers, metered GPU usage, credits, metering pauses and payout holds.

One SQLAlchemy 2 schema serves a SQLite file (the default) and Postgres (by URL); money is `Decimal`
end to end. The package, one concept a module:

- `models`: the tool inputs the LLM and the gate see, the ledger's keyed requests built on them, and
  its results (pydantic only);
- `money`: Decimal quantities, their pydantic types and their rounding;
- `errors`: the ledger's exceptions;
- `tables`: the SQLAlchemy tables and the exact column types;
- `usage`: meter ingestion and usage sums;
- `ledger`: the `Ledger`, which owns transactions, retries, idempotency and logging.

Everything is importable from here. The models, money and errors load at once; the names that need
SQLAlchemy (the `Ledger`, the tables) load on first use, so importing the models stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from tools.billing.errors import IdempotencyConflict, LedgerError, LedgerWriteError, UnknownCustomer
from tools.billing.models import (
    Credit,
    CreditInput,
    CreditRequest,
    CreditResult,
    Customer,
    CustomerUsageQuery,
    HoldRequest,
    IncidentCredits,
    IngestResult,
    Keyed,
    MeterAnomaly,
    MeteringInput,
    MeteringState,
    MeterReading,
    PauseRequest,
    PayoutHold,
    PayoutInput,
    PodUsageQuery,
    ReleaseRequest,
    ResumeRequest,
    Step,
    Usage,
    UsageInput,
    idempotency_key,
)
from tools.billing.money import (
    CENT,
    CURRENCY,
    MILLI,
    SECONDS_PER_HOUR,
    Dollars,
    GpuSeconds,
    PositiveMoney,
    Price,
)

if TYPE_CHECKING:
    from tools.billing.ledger import DEFAULT_URL, Ledger
    from tools.billing.tables import (
        Base,
        CreditRow,
        CustomerRow,
        ExactDecimal,
        HoldRow,
        MeterCursorRow,
        PauseRow,
        UsageRow,
        UTCDateTime,
    )

# Name -> the module that defines it, imported when the name is first asked for.
_LAZY = {
    "DEFAULT_URL": "tools.billing.ledger",
    "Ledger": "tools.billing.ledger",
    **{
        name: "tools.billing.tables"
        for name in (
            "Base",
            "CreditRow",
            "CustomerRow",
            "ExactDecimal",
            "HoldRow",
            "MeterCursorRow",
            "PauseRow",
            "UsageRow",
            "UTCDateTime",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CENT",
    "CURRENCY",
    "DEFAULT_URL",
    "MILLI",
    "SECONDS_PER_HOUR",
    "Base",
    "Credit",
    "CreditInput",
    "CreditRequest",
    "CreditResult",
    "CreditRow",
    "Customer",
    "CustomerRow",
    "CustomerUsageQuery",
    "Dollars",
    "ExactDecimal",
    "GpuSeconds",
    "HoldRequest",
    "HoldRow",
    "IdempotencyConflict",
    "IncidentCredits",
    "IngestResult",
    "Keyed",
    "Ledger",
    "LedgerError",
    "LedgerWriteError",
    "MeterAnomaly",
    "MeterCursorRow",
    "MeterReading",
    "MeteringInput",
    "MeteringState",
    "PauseRequest",
    "PauseRow",
    "PayoutHold",
    "PayoutInput",
    "PodUsageQuery",
    "PositiveMoney",
    "Price",
    "ReleaseRequest",
    "ResumeRequest",
    "Step",
    "UTCDateTime",
    "UnknownCustomer",
    "Usage",
    "UsageInput",
    "UsageRow",
    "idempotency_key",
]
