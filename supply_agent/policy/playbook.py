"""One playbook: an incident class, what it matches, its containment rules and the runbook the
deterministic planner follows; plus the cross-step checks that only make sense for a whole runbook
(unique step names, templates that name earlier steps, tools and rollbacks the containment permits).

It exists to keep those whole-playbook rules apart from the parts they are made of (steps, conditions,
matches), and to report every problem in one pass, even when some steps are invalid.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from supply_agent.policy.base import NonEmptyStr, Slug, Strict, fail
from supply_agent.policy.conditions import Condition
from supply_agent.policy.matching import Match, match_key
from supply_agent.policy.steps import OnFailure, Step
from supply_agent.policy.templates import step_reference, template_refs
from supply_agent.policy.tools import NODE_WRITE_TOOLS, WRITE_TOOLS, ToolOrGroup, expand_tools
from tools.catalogue import INVERSES, TOOLS


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, Mapping) else value


class GroupContainment(Strict):
    """What differs for a playbook on one node group's nodes (a group ``_global.yaml`` names): tighter
    per-incident counts, tools it may not use there, and tools a human approves there."""

    max_nodes: int | None = Field(None, ge=0)
    max_gpus: int | None = Field(None, ge=0)
    forbidden_tools: list[ToolOrGroup] = Field(default_factory=list)
    ask_for: list[ToolOrGroup] = Field(
        default_factory=list, description="Write tools a human approves on this group's nodes."
    )

    @field_validator("forbidden_tools", "ask_for")
    @classmethod
    def _expand(cls, names: list[str]) -> list[str]:
        return expand_tools(names)


class Containment(Strict):
    """Per-playbook limits, checked by the gate on top of the global ones. ``preconditions`` must all
    hold before any write step runs. ``allowed_tools`` (when given) and ``forbidden_tools`` take tool
    names or groups (reads, writes, node-writes, workload-writes, billing-writes), expanded on load."""

    max_nodes: int = Field(1, ge=0, description="Nodes written to per incident.")
    max_gpus: int = Field(8, ge=0, description="GPUs taken out of service per incident.")
    max_credit_usd: float = Field(0.0, ge=0, description="Dollars credited per incident.")
    preconditions: list[Condition] = Field(default_factory=list)
    allowed_tools: list[ToolOrGroup] | None = None
    forbidden_tools: list[ToolOrGroup] = Field(default_factory=list)
    node_groups: dict[Slug, GroupContainment] = Field(
        default_factory=dict,
        description="Per node group of _global.yaml (by name): what differs on that group's nodes.",
    )

    @field_validator("allowed_tools")
    @classmethod
    def _expand_allowed(cls, names: list[str] | None) -> list[str] | None:
        return None if names is None else expand_tools(names)

    @field_validator("forbidden_tools")
    @classmethod
    def _expand_forbidden(cls, names: list[str], info: ValidationInfo) -> list[str]:
        expanded = expand_tools(names)
        allowed = info.data.get("allowed_tools")
        both = sorted(set(expanded) & set(allowed or ()))
        if both:
            raise fail(f"both allowed and forbidden: {', '.join(both)}")
        return expanded

    def permits(self, tool: str) -> bool:
        if tool in self.forbidden_tools:
            return False
        return self.allowed_tools is None or tool in self.allowed_tools


def _again(err: Any) -> InitErrorDetails:
    """A pydantic error, ready to be raised again with others."""
    return InitErrorDetails(
        type=PydanticCustomError(err["type"], err["msg"], err.get("ctx")), loc=err["loc"], input=err["input"]
    )


@dataclass(frozen=True)
class _StepFacts:
    """What the cross-step checks need from one step, taken from the raw YAML when the step itself is
    invalid, so that one pass reports every error."""

    index: int
    name: str | None
    tool: str | None
    params: Mapping[str, Any]
    rollback_tool: str | None

    @classmethod
    def of(cls, index: int, raw: Any) -> _StepFacts | None:
        with contextlib.suppress(ValidationError):
            step = Step.model_validate(raw)
            return cls(index, step.name, step.tool, step.params, step.rollback_tool)
        if not isinstance(raw, Mapping):
            return None
        name = raw.get("name") if isinstance(raw.get("name"), str) else None
        tool = raw.get("tool") if raw.get("tool") in TOOLS else None
        raw_params = raw.get("params")
        params: Mapping[str, Any] = raw_params if isinstance(raw_params, Mapping) else {}
        rollback = None
        with contextlib.suppress(ValidationError):
            on_failure = OnFailure.model_validate(raw.get("on_failure", "escalate"))
            rollback = INVERSES.get(tool or "") if on_failure.rolls_back else None
        return cls(index, name, tool, params, rollback)


def _runbook_problems(
    steps: Sequence[_StepFacts], containment: Containment | None
) -> Iterator[tuple[str, tuple[str | int, ...]]]:
    seen: dict[str, int] = {}
    for step in steps:
        i = step.index
        if step.name is not None and step.name in seen:
            yield f"step name {step.name!r} is already used by step {seen[step.name]}", (i, "name")
        for path, ref in template_refs(step.params):
            earlier = step_reference(ref)
            if earlier is not None and earlier not in seen:
                yield f"${{{ref}}} names no earlier step", (i, "params", *path)
        if step.name is not None:
            seen.setdefault(step.name, i)
        if containment is None or step.tool is None:
            continue
        if not containment.permits(step.tool):
            yield f"{step.tool} is not permitted by this playbook's containment", (i, "tool")
        if step.rollback_tool and not containment.permits(step.rollback_tool):
            yield (
                f"rollback would run {step.rollback_tool}, which this playbook's containment forbids",
                (i, "on_failure"),
            )
        if step.tool in NODE_WRITE_TOOLS and containment.max_nodes == 0:
            yield f"{step.tool} writes to a node but containment.max_nodes is 0", (i, "tool")
        if step.tool == "billing.issue_credit" and containment.max_credit_usd == 0:
            yield "billing.issue_credit credits money but containment.max_credit_usd is 0", (i, "tool")


class Playbook(Strict):
    """One incident class: what it matches, its containment rules and the runbook the deterministic
    planner follows. ``source`` names where its guidance (XID meaning, recommended action) comes from."""

    id: Slug
    title: NonEmptyStr
    description: str = ""
    source: NonEmptyStr = Field(description="Citation: where this playbook's guidance comes from.")
    severity: Literal["critical", "warning", "info"]
    root_cause: Slug | None = Field(
        None, description="The class reported as the root cause; default the id (playbooks may share one)."
    )
    match: Annotated[list[Match], BeforeValidator(_one_or_many), Field(min_length=1)]
    # Validated before `runbook`, which is checked against it.
    containment: Containment = Containment()
    goal: list[Condition] = Field(
        default_factory=list,
        description="What must hold in the world, read back when the runbook is done, before the incident is "
        "called mitigated (the symptom gone: the pod running, the condition cleared), checked with the "
        "incident's alert as the step; if any does not, the incident escalates saying what is left.",
    )
    runbook: Annotated[list[Step], Field(min_length=1)]

    @field_validator("source")
    @classmethod
    def _source(cls, source: str) -> str:
        if not source.strip():
            raise fail("cite where this playbook's guidance comes from")
        return source

    @field_validator("runbook", mode="wrap")
    @classmethod
    def _runbook(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> list[Step]:
        # Cross-step checks run on the steps that are valid even when others are not, so that one
        # pass reports every error.
        errors: list[InitErrorDetails] = []
        steps: list[Step] = []
        try:
            steps = handler(value)
            facts = [_StepFacts(i, s.name, s.tool, s.params, s.rollback_tool) for i, s in enumerate(steps)]
        except ValidationError as exc:
            errors = [_again(e) for e in exc.errors()]
            raw_steps = value if isinstance(value, list) else []
            facts = [f for i, raw in enumerate(raw_steps) if (f := _StepFacts.of(i, raw)) is not None]
        for message, at in _runbook_problems(facts, info.data.get("containment")):
            errors.append(InitErrorDetails(type=fail(message, *at), loc=(), input=value))
        if errors:
            raise ValidationError.from_exception_data("runbook", errors)
        return steps

    @property
    def write_tools(self) -> list[str]:
        return sorted({s.tool for s in self.runbook if s.tool in WRITE_TOOLS})

    @property
    def cause(self) -> str:
        """The root-cause class this playbook reports."""
        return self.root_cause or self.id

    def match_key(
        self,
        alertname: str,
        labels: Mapping[str, str],
        conditions: Mapping[str, str] | None = None,
        events: Sequence[str] | None = None,
        uncatalogued: str | None = None,
        component: str | None = None,
        group: str | None = None,
    ) -> tuple[int, int] | None:
        """The sort key of the most specific clause that matches, or None (`matching.match_key`)."""
        return match_key(self.match, alertname, labels, conditions, events, uncatalogued, component, group)

    @property
    def topology(self) -> frozenset[str]:
        """The component kinds this playbook answers for (empty: a node's or a pod's playbook)."""
        return frozenset(k for m in self.match for k in m.topology)
