"""The proposal / decision / approval records that pass between the planners, the gate and the guarded
executor."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class WorkloadHit(BaseModel):
    """A gang workload an action stops (every pod of it goes when one does), as the gate saw it."""

    model_config = ConfigDict(frozen=True)

    key: str  # "JobSet/namespace/name", or "LeaderWorkerSet/namespace/name/group"
    customer: str | None = None
    nodes: int = 0
    gpus: int = 0
    since_checkpoint_s: float | None = None  # the work a restart loses now (None: no checkpoint known)
    checkpoint_every_s: int | None = None  # its checkpoint cadence (None: not known)

    def describe(self) -> str:
        """``jobset tenant-acme/llm-pretrain: 32 nodes, 256 GPUs, checkpointed 41 min ago``."""
        kind, _, rest = self.key.partition("/")
        ns, _, name = rest.partition("/")
        what = f"{kind.lower()} {ns}/{name.replace('/', ' group ')}"
        when = (
            "no checkpoint known"
            if self.since_checkpoint_s is None
            else f"checkpointed {_ago(self.since_checkpoint_s)} ago"
        )
        return f"{what}: {self.nodes} node{'s' * (self.nodes != 1)}, {self.gpus} GPUs, {when}"


def _ago(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"


class Targets(BaseModel):
    """What an action touches: the gate's blast-radius arithmetic runs on this, never on free text."""

    model_config = ConfigDict(frozen=True)

    nodes: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()  # "namespace/name"
    namespaces: tuple[str, ...] = ()
    customers: tuple[str, ...] = ()
    gpus: int = 0
    dollars: Decimal = Decimal("0")
    workloads: tuple[WorkloadHit, ...] = ()  # the gang jobs it stops, whole

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
