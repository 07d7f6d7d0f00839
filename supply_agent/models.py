"""The shared vocabulary of supply-agent: pydantic models every part speaks.

The GPU health report a node-agent serves (built from NVML by `tools.nvml`), and the proposal /
decision / approval records that pass between the planners, the gate and the guarded executor.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class XidEvent(BaseModel):
    """One XID critical-error event, as delivered by the NVML event set."""

    gpu_index: int
    xid: int
    observed_at: datetime
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


class RemappedRows(BaseModel):
    """Row-remapping state (A100 and newer): counts, a remap awaiting a reset, a failed remap."""

    corrected: int
    uncorrected: int
    pending: bool
    failure: bool


class NvLinkState(BaseModel):
    """Whether one NVLink of a GPU is active."""

    link: int
    active: bool


class GpuHealth(BaseModel):
    """The health of one GPU; a field NVML could not read is None and named in `unsupported` or `errors`."""

    index: int
    uuid: str | None = None
    name: str | None = None
    lost: bool = Field(False, description="The GPU fell off the bus (NVML said GpuIsLost).")
    temperature_c: int | None = None
    ecc_mode_enabled: bool | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_uncorrected_aggregate: int | None = None
    remapped_rows: RemappedRows | None = None
    clock_event_mask: int | None = None
    clock_event_reasons: list[str] = Field(default_factory=list, description='e.g. "HwThermalSlowdown".')
    nvlinks: list[NvLinkState] | None = None
    xid_events: list[XidEvent] = Field(default_factory=list)
    unsupported: list[str] = Field(default_factory=list, description="Fields NVML said NotSupported.")
    errors: dict[str, str] = Field(default_factory=dict, description="Field name -> NVML error text.")


class GpuHealthReport(BaseModel):
    """What a node-agent reports about its node's GPUs at one moment."""

    node: str
    collected_at: datetime
    nvml_available: bool
    simulated: bool = False
    driver_version: str | None = None
    nvml_version: str | None = None
    error: str | None = Field(None, description="A human sentence when NVML is unavailable or failed.")
    gpus: list[GpuHealth] = Field(default_factory=list)


# -- proposals, decisions, approvals ----------------------------------------------------------------
class Targets(BaseModel):
    """What an action touches: the gate's blast-radius arithmetic runs on this, never on free text."""

    model_config = ConfigDict(frozen=True)

    nodes: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()  # "namespace/name"
    namespaces: tuple[str, ...] = ()
    customers: tuple[str, ...] = ()
    gpus: int = 0
    dollars: Decimal = Decimal("0")

    def empty(self) -> bool:
        return not (self.nodes or self.pods or self.namespaces or self.customers or self.dollars)


class Action(BaseModel):
    """One proposed tool call, bound to the incident and step that proposed it."""

    model_config = ConfigDict(frozen=True)

    tool: str
    params: dict[str, Any] = Field(default_factory=dict)
    incident_id: str
    step: int = Field(ge=0)
    playbook_id: str | None = None
    proposed_by: str = "runbook"
    reason: str = ""

    def digest(self) -> str:
        """The hash an approval or a decision is bound to: tool, parameters, incident and step."""
        canonical = json.dumps(
            {"tool": self.tool, "params": self.params, "incident": self.incident_id, "step": self.step},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def idempotency_key(self) -> str:
        """Derived from (incident, step, tool): a resumed or repeated step cannot act twice."""
        return hashlib.sha256(f"{self.incident_id}\x00{self.step}\x00{self.tool}".encode()).hexdigest()


class Verdict(StrEnum):
    ALLOW = "allow"
    ASK = "ask"
    DENY = "deny"


class Decision(BaseModel):
    """The gate's answer for one action: the verdict, every reason, and the limits it consulted."""

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    action_hash: str
    reasons: tuple[str, ...] = ()
    limits_consulted: tuple[str, ...] = ()
    targets: Targets = Field(default_factory=Targets)
    decided_at: datetime | None = None
    trips_breaker: bool = False  # this decision tripped the circuit breaker: latch it until a human resets it
    # The executor's world revision the decision was made on: it refuses the decision once the agent has
    # written since (the world the gate saw is gone).
    world_revision: str | None = None


class Approval(BaseModel):
    """A human's answer to an ``ask``: bound to one action hash, from one approver, until it expires."""

    model_config = ConfigDict(frozen=True)

    action_hash: str
    approver: str
    approved: bool
    decided_at: datetime
    expires_at: datetime
    channel: str = "terminal"

    def admits(self, action: Action, now: datetime, approvers: frozenset[str]) -> tuple[bool, str]:
        """Whether this approval lets ``action`` run now; the reason when it does not."""
        if self.action_hash != action.digest():
            return False, "the approval is for a different action"
        if not self.approved:
            return False, f"rejected by {self.approver}"
        if now >= self.expires_at:
            return False, f"the approval expired at {self.expires_at.isoformat()}"
        if self.approver not in approvers:
            return False, f"{self.approver} is not an authorised approver"
        return True, ""
