"""Named crash points, for the fault-injection suite to kill a real process at an exact step.

``SUPPLY_AGENT_CRASH_AT=<point>`` makes the process SIGKILL itself (no cleanup, no flush: what a power
cut or the OOM killer does) the first time it reaches that point; with ``SUPPLY_AGENT_CRASH_ONCE=<file>``
only if the file does not exist yet, and the file is created just before the kill, so the process the
supervisor starts again runs on past the point. Unset (always, outside tests), :func:`reached` is one
dictionary lookup. The points are listed here so a test cannot name one the code does not have.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

# After each graph node's update (``node:<name>``), and at the service's steps between stores.
POINTS = frozenset(
    {
        *(
            f"node:{n}"
            for n in (
                "triage",
                "investigate",
                "plan",
                "read",
                "gate",
                "approval",
                "execute",
                "verify",
                "resolve",
                "escalate",
                "summarise",
            )
        ),
        "fold",  # alerts folded into incidents, the events not yet marked handled
        "claim",  # a click claimed its approval, the resume not yet stored
        "prompt-posted",  # Slack took the prompt, its message id not yet stored
        "sent",  # a write-back delivered, its job not yet marked done
    }
)

_AT = os.environ.get("SUPPLY_AGENT_CRASH_AT", "")
_ARMED = frozenset(p.strip() for p in _AT.split(",") if p.strip())
_ONCE = os.environ.get("SUPPLY_AGENT_CRASH_ONCE", "")

unknown = _ARMED - POINTS
if unknown:
    raise ValueError(
        f"SUPPLY_AGENT_CRASH_AT names no crash point: {sorted(unknown)}; known: {sorted(POINTS)}"
    )


def reached(point: str) -> None:
    """Kill this process here if the point is armed (see the module's docstring)."""
    if point not in _ARMED:
        return
    if _ONCE:
        marker = Path(_ONCE)
        if marker.exists():
            return
        marker.write_text(point)
    os.kill(os.getpid(), signal.SIGKILL)
