"""Money and GPU-seconds as Decimals, each with one rounding rule.

The request models, the ingest, the usage sums and the double-metering credits must all round the
same way, so the quantities, their pydantic types and their rounding live here once. Pydantic only:
the catalogue imports the models, and they import this.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

CURRENCY = "USD"
CENT = Decimal("0.01")
MILLI = Decimal("0.001")
SECONDS_PER_HOUR = Decimal(3600)


def no_float(value: Any) -> Any:
    """Refuse floats for money: a float has already lost the cents it was meant to carry."""
    if isinstance(value, float):
        raise ValueError(f"money must be a Decimal or a string such as '12.34', not the float {value!r}")
    return value


def _reading(value: Any) -> Any:
    """Meter readings arrive as JSON numbers; take their shortest decimal form, not the binary one."""
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


# A credit's amount: positive whole cents. The LLM's CreditInput takes it as is (a JSON number is fine
# there); the ledger's PositiveMoney also refuses Python floats.
Dollars = Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)]
PositiveMoney = Annotated[Dollars, BeforeValidator(no_float)]
Price = Annotated[Decimal, BeforeValidator(no_float), Field(ge=0, max_digits=12, decimal_places=4)]
GpuSeconds = Annotated[Decimal, BeforeValidator(_reading), Field(ge=0)]


def gpu_seconds(value: Decimal) -> Decimal:
    """GPU-seconds to the millisecond, half to even (the unit the ledger stores)."""
    return value.quantize(MILLI, rounding=ROUND_HALF_EVEN)


def cost(seconds: Decimal, price_per_gpu_hour: Decimal) -> Decimal:
    """What `seconds` GPU-seconds cost at a price per GPU-hour, to the cent, half up."""
    return (seconds * price_per_gpu_hour / SECONDS_PER_HOUR).quantize(CENT, rounding=ROUND_HALF_UP)
