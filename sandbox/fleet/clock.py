"""The fleet's clock: real time for the demo, advanced by hand for deterministic replays."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Literal

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class SimClock:
    def __init__(self, mode: Literal["real", "manual"] = "manual", start: datetime | None = None) -> None:
        self.mode = mode
        self.start = start or (datetime.now(UTC).replace(microsecond=0) if mode == "real" else EPOCH)
        self._offset = 0.0
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        elapsed = self._offset + (time.monotonic() - self._t0 if self.mode == "real" else 0.0)
        return self.start + timedelta(seconds=elapsed)

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("the clock does not go backwards")
        self._offset += seconds
        return self.now()

    def to_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "now": self.now().isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SimClock:
        return cls(
            "real" if data.get("mode") == "real" else "manual", datetime.fromisoformat(str(data["now"]))
        )


def ts(dt: datetime) -> str:
    """RFC 3339 with whole seconds and Z, as Kubernetes writes its timestamps."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
