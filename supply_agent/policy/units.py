"""Units the playbook YAML is written in: durations (``30s``, ``5m``, ``1h30m`` or a number of seconds),
fractions (0..1 or ``"10%"``), percentages (0..100 or ``"50%"``) and Cluster API's int-or-percent.

Each parser turns what an operator writes into one canonical value and rejects the rest with a message
that says what was expected: a fraction above 1.0 (100%) is an error, never silently clamped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _parse_duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise PydanticCustomError("duration", "a duration like 30s, 5m or 1h30m, or a number of seconds")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        parts = _DURATION_PART.findall(text)
        if text and "".join(n + u for n, u in parts) == text:
            return timedelta(seconds=sum(float(n) * _DURATION_UNITS[u] for n, u in parts))
    raise PydanticCustomError(
        "duration", f"a duration like 30s, 5m or 1h30m, or a number of seconds; got {value!r}"
    )


def _positive_duration(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise PydanticCustomError("duration", "must be longer than zero")
    return value


def at_most(limit: timedelta) -> Any:
    """A validator for a `Duration` field: at most ``limit``."""

    def check(value: timedelta) -> timedelta:
        if value > limit:
            raise PydanticCustomError("duration", f"must be at most {format_duration(limit)}")
        return value

    return AfterValidator(check)


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{value.total_seconds():g}s"


Duration = Annotated[timedelta, BeforeValidator(_parse_duration), AfterValidator(_positive_duration)]


def _number_or_percent(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise PydanticCustomError("number", f"{what}, not a boolean")
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            try:
                return float(text[:-1]) / 100.0
            except ValueError:
                pass
        raise PydanticCustomError("number", f"{what}; got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    raise PydanticCustomError("number", f"{what}; got {value!r}")


def _fraction(value: Any) -> float:
    """0..1, or a percentage string ("10%")."""
    frac = _number_or_percent(value, "a fraction 0..1 (0.1 means 10%) or a percentage like '10%'")
    if not 0.0 <= frac <= 1.0:
        raise PydanticCustomError(
            "fraction",
            f"a fraction must be within 0..1 (0.1 means 10%); {value!r} is above 100%"
            if frac > 1
            else f"a fraction must be within 0..1; {value!r} is negative",
        )
    return frac


def _percent(value: Any) -> float:
    """0..100 (a number or "50%")."""
    if isinstance(value, str):
        pct = _number_or_percent(value, "a percentage 0..100 like 50 or '50%'") * 100.0
    else:
        pct = _number_or_percent(value, "a percentage 0..100 like 50 or '50%'")
    if not 0.0 <= pct <= 100.0:
        raise PydanticCustomError("percent", f"a percentage must be within 0..100; {value!r} is out of range")
    return pct


Fraction = Annotated[float, BeforeValidator(_fraction)]
Percent = Annotated[float, BeforeValidator(_percent)]


@dataclass(frozen=True)
class IntOrPercent:
    """Cluster API's int-or-percent (``maxUnhealthy``): ``5`` or ``"40%"``; percentages round down."""

    value: int
    percent: bool

    def scaled(self, total: int) -> int:
        """The absolute count for ``total`` (40% of 25 -> 10; 40% of 6 -> 2)."""
        return total * self.value // 100 if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)

    @classmethod
    def parse(cls, value: Any) -> IntOrPercent:
        if isinstance(value, IntOrPercent):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise PydanticCustomError("int_or_percent", "a count must not be negative")
            return cls(value, False)
        if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*%\s*", value):
            pct = int(value.strip()[:-1])
            if pct > 100:
                raise PydanticCustomError(
                    "int_or_percent", f"a percentage must be within 0..100%; {value!r} is above 100%"
                )
            return cls(pct, True)
        raise PydanticCustomError(
            "int_or_percent",
            f"a node count like 5 or an integer percentage like '40%' (Cluster API maxUnhealthy); got {value!r}",
        )

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )
