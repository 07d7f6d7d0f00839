"""The control latches: the kill switch and the circuit breaker, each a ConfigMap in the agent's
namespace. One module says where they live, what their data means, how they are read (failing closed)
and what a latch, a reset, a freeze and an unfreeze write; the tool table's control rows write through
it and the world reader reads through it. When to trip the breaker is policy (``policy.limits`` and
the gate); what a tripped breaker *is* is here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tools.kubernetes import KubeTools

CONTROL_NAMESPACE = "supply-agent-system"
FREEZE_CONFIGMAP = "supply-agent-freeze"
BREAKER_CONFIGMAP = "supply-agent-circuit-breaker"


def freeze_data(frozen: bool, reason: str, by: str) -> dict[str, str]:
    return {"frozen": "true" if frozen else "false", "reason": reason, "by": by}


def breaker_data(tripped: bool, reason: str, by: str) -> dict[str, str]:
    return {"status": "TRIPPED" if tripped else "CLOSED", "reason": reason, "by": by}


def frozen_of(data: dict[str, str]) -> tuple[bool, str]:
    frozen = data.get("frozen", "false").lower() in ("true", "1", "yes")
    return frozen, data.get("reason", "") if frozen else ""


def tripped_of(data: dict[str, str]) -> tuple[bool, str]:
    return data.get("status") == "TRIPPED", data.get("reason", "")


def _read(kube: KubeTools, name: str, what: str) -> dict[str, str] | str:
    """A latch's data ({} when absent), or why it could not be read (callers fail closed)."""
    from tools.kubernetes import ToolError

    try:
        return kube.read_config_map(CONTROL_NAMESPACE, name)
    except ToolError as exc:
        return {} if exc.status == 404 else f"cannot read the {what} ({exc}): failing closed"


def read_freeze(kube: KubeTools) -> tuple[bool, str]:
    """The kill switch: ``frozen: "true"`` stops every write. Unreadable means frozen."""
    data = _read(kube, FREEZE_CONFIGMAP, "kill switch")
    return (True, data) if isinstance(data, str) else frozen_of(data)


def read_breaker(kube: KubeTools) -> tuple[bool, str]:
    """The circuit breaker (NVSentinel keeps it in a ConfigMap too): TRIPPED until a human resets it.
    Unreadable means tripped."""
    data = _read(kube, BREAKER_CONFIGMAP, "circuit breaker")
    return (True, data) if isinstance(data, str) else tripped_of(data)
