"""A runbook step: the catalogue tool it runs, its parameters, how its effect is read back (`Verify`)
and what happens when that read-back fails (`OnFailure`).

It exists to hold the rules that make a step safe to follow without a human: every write says how to
verify it, every retry is bounded, and a rollback is allowed only where the tool has an inverse.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from supply_agent.policy.base import Slug, Strict, fail
from supply_agent.policy.conditions import CHECKS, Condition
from supply_agent.policy.templates import ParamValue
from supply_agent.policy.tools import WRITE_TOOLS, ToolName
from supply_agent.policy.units import Duration, at_most
from supply_agent.policy.waiting import WaitForCheckpoint
from tools.catalogue import DISRUPTING, INVERSES, TOOLS, Effect

MAX_RETRIES = 5
# The keys of a ``verify`` mapping that are Verify's own; the others are its condition's.
VERIFY_KEYS: tuple[str, ...] = ("timeout", "interval")


class Verify(Strict):
    """How to read back a step's effect: ``condition`` must hold within ``timeout``, polled every
    ``interval``. In YAML the condition's keys sit beside ``timeout``:
    ``verify: {check: node_unschedulable, timeout: 1m}``."""

    condition: Condition
    timeout: Annotated[Duration, at_most(timedelta(hours=2))] = timedelta(minutes=2)
    interval: Annotated[Duration, at_most(timedelta(minutes=5))] = timedelta(seconds=5)

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"condition": data}
        if isinstance(data, Mapping) and "condition" not in data:
            own = {k: v for k, v in data.items() if k in VERIFY_KEYS}
            return {**own, "condition": {k: v for k, v in data.items() if k not in VERIFY_KEYS}}
        return data


class OnFailure(Strict):
    """What to do when a step's verification fails: ``escalate`` to a human; ``retry`` at most
    ``retries`` times (then ``then``); or ``rollback`` with the tool's inverse (``tools.catalogue.INVERSES``),
    then escalate. Every path that gives up ends with a human."""

    action: Literal["escalate", "retry", "rollback"] = "escalate"
    retries: int | None = Field(None, ge=1, le=MAX_RETRIES)
    backoff: Annotated[Duration, at_most(timedelta(minutes=30))] = timedelta(seconds=30)
    then: Literal["escalate", "rollback"] = "escalate"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"action": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _bounded(self) -> OnFailure:
        if self.action == "retry" and self.retries is None:
            raise fail(f"retry must be bounded: set retries (1..{MAX_RETRIES})", "action")
        if self.action != "retry" and self.retries is not None:
            raise fail("retries applies only to action: retry", "retries")
        if self.action != "retry" and self.then != "escalate":
            raise fail("then applies only to action: retry (what to do when the retries run out)", "then")
        return self

    @property
    def rolls_back(self) -> bool:
        return self.action == "rollback" or (self.action == "retry" and self.then == "rollback")


class Step(Strict):
    """One runbook step: a tool from the catalogue, its parameters (templates: ``${labels.node}``,
    ``${annotations.summary}``, ``${incident.id}``, ``${playbook.id}``, ``${steps.NAME.FIELD}`` for an
    earlier step's result), how to verify it and what to do when verification fails."""

    name: Slug
    tool: ToolName
    description: str = ""
    params: dict[str, ParamValue] = Field(default_factory=dict)
    verify: Verify | None = Field(None, validate_default=True)
    on_failure: OnFailure = OnFailure()
    requires_approval: bool = False
    when: Literal["job_died", "gang_job"] | None = Field(
        None,
        description="Run the step only if this holds, else pass over it: job_died = a pod on the alert's "
        "GPU (as its node-agent reports) restarted or ended with an error. For an XID NVIDIA says needs "
        "no action, whose job may still have died: its customer is told only then. gang_job = a running "
        "pod on the alert's node is a rank of a gang workload (a JobSet or a LeaderWorkerSet group, as "
        "the node's latest pod listing shows): every rank of it waits for the slowest, so a slowed GPU "
        "slows all of them, where a pod of its own only slows itself.",
    )

    wait_for_checkpoint: WaitForCheckpoint | None = Field(
        None,
        description="Where the fault lets work go on: run the step just after the next checkpoint of the "
        "gang jobs it stops, or at a deadline, whichever is first (supply_agent.policy.waiting).",
    )

    @field_validator("wait_for_checkpoint")
    @classmethod
    def _waits_on_disruption(
        cls, option: WaitForCheckpoint | None, info: ValidationInfo
    ) -> WaitForCheckpoint | None:
        tool = info.data.get("tool")
        if option is not None and tool not in DISRUPTING:
            raise fail(
                f"{tool} stops no workload: only a step that does ({', '.join(sorted(DISRUPTING))}) "
                "waits for a checkpoint"
            )
        return option

    @field_validator("verify")
    @classmethod
    def _verified(cls, verify: Verify | None, info: ValidationInfo) -> Verify | None:
        tool = info.data.get("tool")
        if verify is None and tool in WRITE_TOOLS:
            raise fail(
                f"{tool} changes the world: say how to read the change back with verify (checks: {', '.join(CHECKS)})"
            )
        return verify

    @field_validator("on_failure")
    @classmethod
    def _rollback_has_inverse(cls, on_failure: OnFailure, info: ValidationInfo) -> OnFailure:
        tool = info.data.get("tool")
        if tool is not None and on_failure.rolls_back and tool not in INVERSES:
            where = "action" if on_failure.action == "rollback" else "then"
            raise fail(
                f"rollback needs an inverse of {tool}, and it has none (tools.catalogue.INVERSES); "
                "use escalate or retry",
                where,
            )
        return on_failure

    @property
    def effect(self) -> Effect:
        return TOOLS[self.tool]

    @property
    def rollback_tool(self) -> str | None:
        """The inverse tool a rollback runs, when ``on_failure`` rolls back."""
        return INVERSES.get(self.tool) if self.on_failure.rolls_back else None
