"""What a model call costs: prices per model, and the dollars for one call's tokens.

It exists apart from the loop because prices are data that changes on the providers' schedule, not
the planner's: an entry per model (dated snapshots match by their longest known prefix) and a
conservative default, so an unknown model is never priced as free.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

__all__ = ["CACHE_WRITE_PREMIUM", "DEFAULT_PRICE", "PRICES", "Price", "cost_usd", "price_for"]


# -- prices ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: Decimal
    output: Decimal
    cache_read: Decimal


def _p(i: str, o: str, c: str) -> Price:
    return Price(Decimal(i), Decimal(o), Decimal(c))


PRICES: dict[str, Price] = {
    "claude-opus-4-1": _p("15", "75", "1.50"),
    "claude-opus-4": _p("15", "75", "1.50"),
    "claude-opus-4-5": _p("5", "25", "0.50"),
    "claude-opus-4-6": _p("5", "25", "0.50"),
    "claude-sonnet-4-6": _p("3", "15", "0.30"),
    "claude-sonnet-4-5": _p("3", "15", "0.30"),
    "claude-sonnet-4": _p("3", "15", "0.30"),
    "claude-3-7-sonnet": _p("3", "15", "0.30"),
    "claude-haiku-4-5": _p("1", "5", "0.10"),
    "claude-3-5-haiku": _p("0.80", "4", "0.08"),
    "gpt-4.1": _p("2", "8", "0.50"),
    "gpt-4.1-mini": _p("0.40", "1.60", "0.10"),
    "gpt-4.1-nano": _p("0.10", "0.40", "0.025"),
    "gpt-4o": _p("2.50", "10", "1.25"),
    "gpt-4o-mini": _p("0.15", "0.60", "0.075"),
    "gpt-5": _p("1.25", "10", "0.125"),
    "gpt-5-mini": _p("0.25", "2", "0.025"),
    "o3": _p("2", "8", "0.50"),
    "o4-mini": _p("1.10", "4.40", "0.275"),
}
DEFAULT_PRICE = _p("15", "75", "1.50")  # an unknown model is priced as the dearest known one
_MILLION = Decimal(1_000_000)
_CENT_FRACTION = Decimal("0.000001")


def price_for(model: str) -> Price:
    """The price of ``model``: an exact entry, else the longest known prefix (dated snapshots such as
    ``claude-sonnet-4-5-20250929``), else the conservative default."""
    if model in PRICES:
        return PRICES[model]
    prefixes = [k for k in PRICES if model.startswith(k + "-")]
    return PRICES[max(prefixes, key=len)] if prefixes else DEFAULT_PRICE


CACHE_WRITE_PREMIUM = Decimal("0.25")  # Anthropic bills a 5-minute cache write at 1.25x the input price


def cost_usd(
    model: str, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0, cache_write_tokens: int = 0
) -> Decimal:
    """Dollars for one call. ``input_tokens`` are the input tokens not read from the cache (cache
    writes included); ``cache_write_tokens`` (a part of them) add the cache-write premium."""
    p = price_for(model)
    total = input_tokens * p.input + output_tokens * p.output + cache_read_tokens * p.cache_read
    total += cache_write_tokens * p.input * CACHE_WRITE_PREMIUM
    return (total / _MILLION).quantize(_CENT_FRACTION)
