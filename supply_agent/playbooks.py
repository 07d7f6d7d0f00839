"""Playbooks: per incident class, what it matches, the runbook to follow, how each step is verified,
what to do when verification fails, and the containment rules; plus the fleet-wide limits of
``_global.yaml``.

Playbooks are data (YAML) validated by the pydantic models here. Every error names the file, the line and
the field, and a check reports every error in every file, never only the first: an operator fixing a
playbook at 3 a.m. should get the whole list at once.

Semantics the gate relies on, in one place:

* A *fraction* is 0..1 (``"10%"`` is accepted and means 0.1); anything above 1.0 (100%) is an error.
* An `IntOrPercent` threshold has Cluster API ``maxUnhealthy`` semantics: an absolute count or an
  integer percentage, percentages rounding *down* (40% of 25 allows 10, stops at 11).
* A soft limit is exceeded -> ``ask``; a hard limit is exceeded -> ``deny`` (`SoftHardLimit.verdict`).
* A match that names no alert, label or XID would match every alert; it is an error, as is any empty or
  unbounded target (Google SRE, "Automation: Enabling Failure at Scale": the empty set is not "everything").
* The circuit breaker (NVSentinel) never resets itself: a human resets it.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from tools.names import INVERSES, TOOLS, Effect

__all__ = [
    "CHECKS",
    "GLOBAL_FILE",
    "TOOL_GROUPS",
    "Approvals",
    "BlastRadius",
    "CircuitBreaker",
    "Condition",
    "Containment",
    "CountLimit",
    "CreditExists",
    "CustomerNotified",
    "DeniedAction",
    "Deny",
    "DeploymentAvailable",
    "FractionLimit",
    "GlobalLimits",
    "GpuFaultConfirmed",
    "IntOrPercent",
    "MassFailure",
    "Match",
    "MeteringPaused",
    "MoneyLimit",
    "NodeAgentReachable",
    "NodeCondition",
    "NodeEvent",
    "NodeTaint",
    "NodeUnschedulable",
    "OnFailure",
    "PayoutHeld",
    "Playbook",
    "PlaybookError",
    "PlaybookSet",
    "PlaybookSetError",
    "PodAbsent",
    "PodsOnNode",
    "RateLimits",
    "SoftHardLimit",
    "Step",
    "Verify",
    "check",
    "format_duration",
    "load_playbooks",
]

GLOBAL_FILE = "_global.yaml"
MAX_RETRIES = 5

# Namespaces and verbs the agent never touches, whatever a `_global.yaml` says: they may be extended,
# never shortened.
MANDATORY_DENY_NAMESPACES: tuple[str, ...] = ("kube-system", "supply-agent-system")
MANDATORY_DENIED_ACTIONS: tuple[tuple[str, str], ...] = (
    ("delete", "nodes"),
    ("delete", "namespaces"),
    ("delete", "persistentvolumeclaims"),
    ("delete", "secrets"),
)
_RESOURCE_ALIASES = {
    "node": "nodes",
    "no": "nodes",
    "namespace": "namespaces",
    "ns": "namespaces",
    "pvc": "persistentvolumeclaims",
    "pvcs": "persistentvolumeclaims",
    "persistentvolumeclaim": "persistentvolumeclaims",
    "secret": "secrets",
    "pod": "pods",
    "po": "pods",
    "deployment": "deployments",
    "deploy": "deployments",
    "pv": "persistentvolumes",
    "persistentvolume": "persistentvolumes",
}

WRITE_TOOLS: frozenset[str] = frozenset(name for name, eff in TOOLS.items() if eff is not Effect.READ)
NODE_WRITE_TOOLS: frozenset[str] = frozenset(
    {"k8s.cordon_node", "k8s.uncordon_node", "k8s.taint_node", "k8s.untaint_node", "k8s.drain_node"}
)
WORKLOAD_WRITE_TOOLS: frozenset[str] = frozenset(
    {"k8s.delete_pod", "k8s.rollout_restart", "k8s.scale_deployment"}
)
BILLING_WRITE_TOOLS: frozenset[str] = frozenset(name for name in WRITE_TOOLS if name.startswith("billing."))
READ_TOOLS: frozenset[str] = frozenset(TOOLS) - WRITE_TOOLS
# Names a containment list may use for a family of tools; expanded when the playbook is loaded.
TOOL_GROUPS: dict[str, frozenset[str]] = {
    "reads": READ_TOOLS,
    "writes": WRITE_TOOLS,
    "node-writes": NODE_WRITE_TOOLS,
    "workload-writes": WORKLOAD_WRITE_TOOLS,
    "billing-writes": BILLING_WRITE_TOOLS,
}


# -- errors ------------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class PlaybookError:
    """One problem in one file: ``FILE:LINE: FIELD: MESSAGE``. ``line`` is 1-based; 0 means the file as
    a whole."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class PlaybookSetError(ValueError):
    """`load_playbooks` found errors; ``errors`` holds every one of them."""

    def __init__(self, errors: Sequence[PlaybookError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(str(e) for e in self.errors)
        super().__init__(f"{len(self.errors)} playbook error(s):\n{lines}")


def _fail(message: str, *at: str | int) -> PydanticCustomError:
    """An error whose location is ``at`` below the field or model that raised it."""
    return PydanticCustomError("playbook", message, {"at": at})


# -- small value types -------------------------------------------------------------------------------
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


def _at_most(limit: timedelta) -> Any:
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
NonEmptyStr = Annotated[str, Field(min_length=1)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=63)]


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


def _tool_name(value: str) -> str:
    if value not in TOOLS:
        hint = difflib.get_close_matches(value, TOOLS, n=1)
        raise PydanticCustomError(
            "unknown_tool",
            f"unknown tool {value!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + " (see tools/names.py)",
        )
    return value


def _tool_or_group(value: str) -> str:
    if value in TOOL_GROUPS:
        return value
    if value not in TOOLS:
        names = [*TOOLS, *TOOL_GROUPS]
        hint = difflib.get_close_matches(value, names, n=1)
        raise PydanticCustomError(
            "unknown_tool",
            f"unknown tool or group {value!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f" (groups: {', '.join(TOOL_GROUPS)}; tools: see tools/names.py)",
        )
    return value


ToolName = Annotated[str, AfterValidator(_tool_name)]
ToolOrGroup = Annotated[str, AfterValidator(_tool_or_group)]


def _expand_tools(names: Sequence[str]) -> list[str]:
    out: set[str] = set()
    for name in names:
        out |= TOOL_GROUPS.get(name, {name})
    return sorted(out)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- conditions on the world: preconditions and verification -----------------------------------------
ConditionStatus = Literal["True", "False", "Unknown"]


def _status(value: Any) -> Any:
    # YAML reads an unquoted True/False as a boolean; Kubernetes condition statuses are strings.
    if isinstance(value, bool):
        return "True" if value else "False"
    return value


Status = Annotated[ConditionStatus, BeforeValidator(_status)]


class NodeUnschedulable(_Strict):
    """The node's ``spec.unschedulable`` equals ``value`` (true after a cordon)."""

    check: Literal["node_unschedulable"]
    value: bool = True


class NodeTaint(_Strict):
    """The node has (``present: true``) or lacks a taint with this key (and effect, when given)."""

    check: Literal["node_taint"]
    key: NonEmptyStr
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    present: bool = True


class NodeCondition(_Strict):
    """The node's condition ``condition`` (Ready, GpuHealthy, DiskPressure, ...) has ``status``."""

    check: Literal["node_condition"]
    condition: NonEmptyStr
    status: Status


class NodeEvent(_Strict):
    """An event with this reason was (``present: true``) or was not recorded on the node ``within`` the
    window; e.g. the out-of-band ``HostUnresponsive`` (dead host) or ``ControlPlanePathDown`` (partition)."""

    check: Literal["node_event"]
    reason: NonEmptyStr
    present: bool = True
    within: Duration = timedelta(hours=1)


class NodeAgentReachable(_Strict):
    """The node-agent answered a health request through ``pods/proxy`` (``value: false``: it did not)."""

    check: Literal["node_agent_reachable"]
    value: bool = True


class GpuFaultConfirmed(_Strict):
    """The node-agent itself (a fresh NVML report, not an alert or a cached condition) confirms the
    fault: the alert's XID among the GPU's events, the GPU lost, or uncorrected ECC errors."""

    check: Literal["gpu_fault_confirmed"]
    max_age: Duration = timedelta(minutes=5)


class PodsOnNode(_Strict):
    """At most ``max`` pods remain on the node (DaemonSet pods not counted when ``except_daemonsets``)."""

    check: Literal["pods_on_node"]
    max: int = Field(0, ge=0)
    except_daemonsets: bool = True


class PodAbsent(_Strict):
    """The step's pod no longer exists."""

    check: Literal["pod_absent"]


class DeploymentAvailable(_Strict):
    """The step's deployment reports all desired replicas updated and available."""

    check: Literal["deployment_available"]


class CreditExists(_Strict):
    """A credit for this incident (and the step's customer) is recorded in billing."""

    check: Literal["credit_exists"]


class MeteringPaused(_Strict):
    """Metering for the step's target is paused (``value: false``: running)."""

    check: Literal["metering_paused"]
    value: bool = True


class PayoutHeld(_Strict):
    """The payout for the step's target is held (``value: false``: released)."""

    check: Literal["payout_held"]
    value: bool = True


class CustomerNotified(_Strict):
    """A notification for this incident reached the step's customer."""

    check: Literal["customer_notified"]


_CONDITION_TYPES: tuple[type[_Strict], ...] = (
    NodeUnschedulable,
    NodeTaint,
    NodeCondition,
    NodeEvent,
    NodeAgentReachable,
    GpuFaultConfirmed,
    PodsOnNode,
    PodAbsent,
    DeploymentAvailable,
    CreditExists,
    MeteringPaused,
    PayoutHeld,
    CustomerNotified,
)
CHECKS: tuple[str, ...] = tuple(get_args(t.model_fields["check"].annotation)[0] for t in _CONDITION_TYPES)


def _condition_shorthand(value: Any) -> Any:
    # `verify: customer_notified` is `verify: {check: customer_notified}`.
    return {"check": value} if isinstance(value, str) else value


Condition = Annotated[
    NodeUnschedulable
    | NodeTaint
    | NodeCondition
    | NodeEvent
    | NodeAgentReachable
    | GpuFaultConfirmed
    | PodsOnNode
    | PodAbsent
    | DeploymentAvailable
    | CreditExists
    | MeteringPaused
    | PayoutHeld
    | CustomerNotified,
    Field(discriminator="check"),
    BeforeValidator(_condition_shorthand),
]


class Verify(_Strict):
    """How to read back a step's effect: ``condition`` must hold within ``timeout``, polled every
    ``interval``. In YAML the condition's keys sit beside ``timeout``:
    ``verify: {check: node_unschedulable, timeout: 1m}``."""

    _OWN: ClassVar[tuple[str, ...]] = ("timeout", "interval")

    condition: Condition
    timeout: Annotated[Duration, _at_most(timedelta(hours=2))] = timedelta(minutes=2)
    interval: Annotated[Duration, _at_most(timedelta(minutes=5))] = timedelta(seconds=5)

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"condition": data}
        if isinstance(data, Mapping) and "condition" not in data:
            own = {k: v for k, v in data.items() if k in cls._OWN}
            return {**own, "condition": {k: v for k, v in data.items() if k not in cls._OWN}}
        return data


class OnFailure(_Strict):
    """What to do when a step's verification fails: ``escalate`` to a human; ``retry`` at most
    ``retries`` times (then ``then``); or ``rollback`` with the tool's inverse (``tools.names.INVERSES``),
    then escalate. Every path that gives up ends with a human."""

    action: Literal["escalate", "retry", "rollback"] = "escalate"
    retries: int | None = Field(None, ge=1, le=MAX_RETRIES)
    backoff: Annotated[Duration, _at_most(timedelta(minutes=30))] = timedelta(seconds=30)
    then: Literal["escalate", "rollback"] = "escalate"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"action": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _bounded(self) -> OnFailure:
        if self.action == "retry" and self.retries is None:
            raise _fail(f"retry must be bounded: set retries (1..{MAX_RETRIES})", "action")
        if self.action != "retry" and self.retries is not None:
            raise _fail("retries applies only to action: retry", "retries")
        if self.action != "retry" and self.then != "escalate":
            raise _fail("then applies only to action: retry (what to do when the retries run out)", "then")
        return self

    @property
    def rolls_back(self) -> bool:
        return self.action == "rollback" or (self.action == "retry" and self.then == "rollback")


_TEMPLATE = re.compile(r"\$\{([^}]*)\}")
_TEMPLATE_REF = re.compile(
    r"(?:labels|annotations)\.[A-Za-z_][A-Za-z0-9_]*"
    r"|incident\.(?:id|title|url|started_at|now)"
    r"|playbook\.(?:id|title)"
    r"|steps\.[a-z0-9][a-z0-9-]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+"
)
_PARAM_SCALARS = (str, int, float, bool, type(None))


def _walk_params(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    yield path, value
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk_params(v, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk_params(v, (*path, i))


def _template_refs(params: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    for path, value in _walk_params(params, ()):
        if isinstance(value, str):
            for ref in _TEMPLATE.findall(value):
                yield path, ref.strip()


def _check_param(value: Any) -> Any:
    """One parameter: JSON-like, no empty or wildcard strings, well-formed templates."""
    for path, item in _walk_params(value, ()):
        if not isinstance(item, (*_PARAM_SCALARS, list, Mapping)):
            raise _fail(f"a parameter is a string, number, boolean, list or mapping; got {item!r}", *path)
        if not isinstance(item, str):
            continue
        if not item.strip() or item.strip() == "*":
            raise _fail(
                "an empty or wildcard parameter is an unbounded target (the SRE lesson: the empty set "
                "is not 'everything')",
                *path,
            )
        if item.count("${") != len(_TEMPLATE.findall(item)):
            raise _fail(f"unclosed template in {item!r}: write ${{labels.node}}", *path)
        for ref in _TEMPLATE.findall(item):
            if not _TEMPLATE_REF.fullmatch(ref.strip()):
                raise _fail(
                    f"unknown template reference ${{{ref}}}: use labels.NAME, annotations.NAME, "
                    "incident.id|title|url|started_at|now, playbook.id|title or steps.STEP.FIELD",
                    *path,
                )
    return value


ParamValue = Annotated[Any, AfterValidator(_check_param)]


class Step(_Strict):
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

    @field_validator("verify")
    @classmethod
    def _verified(cls, verify: Verify | None, info: ValidationInfo) -> Verify | None:
        tool = info.data.get("tool")
        if verify is None and tool in WRITE_TOOLS:
            raise _fail(
                f"{tool} changes the world: say how to read the change back with verify (checks: {', '.join(CHECKS)})"
            )
        return verify

    @field_validator("on_failure")
    @classmethod
    def _rollback_has_inverse(cls, on_failure: OnFailure, info: ValidationInfo) -> OnFailure:
        tool = info.data.get("tool")
        if tool is not None and on_failure.rolls_back and tool not in INVERSES:
            where = "action" if on_failure.action == "rollback" else "then"
            raise _fail(
                f"rollback needs an inverse of {tool}, and it has none (tools.names.INVERSES); "
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


# -- matching ----------------------------------------------------------------------------------------
def _label_value(value: Any) -> Any:
    # `xid: 79` in YAML is an int; alert label values are strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


LabelValue = Annotated[NonEmptyStr, BeforeValidator(_label_value)]


def _xid_of(labels: Mapping[str, str]) -> int | None:
    raw = labels.get("xid") or labels.get("err_code")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


class Match(_Strict):
    """Which alerts a playbook handles. Every field given must hold (AND); within a list any entry may
    (OR). ``xids`` reads the ``xid`` label (``err_code`` as a fallback). ``node_conditions`` and
    ``node_events`` refine a match once the node has been read: they are checked only when the caller
    passes what it observed."""

    alertnames: list[NonEmptyStr] = Field(default_factory=list)
    labels: dict[str, LabelValue] = Field(default_factory=dict)
    exclude_labels: dict[str, list[LabelValue]] = Field(default_factory=dict)
    xids: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=list)
    node_conditions: dict[str, Status] = Field(default_factory=dict)
    node_events: list[NonEmptyStr] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        if not (self.alertnames or self.labels or self.xids):
            raise _fail(
                "an empty match matches every alert (the SRE lesson: the empty set is not 'everything'); "
                "name alertnames, labels or xids"
            )
        return self

    def matches(
        self,
        alertname: str,
        labels: Mapping[str, str],
        conditions: Mapping[str, str] | None = None,
        events: Sequence[str] | None = None,
    ) -> bool:
        if self.alertnames and alertname not in self.alertnames:
            return False
        if any(labels.get(k) != v for k, v in self.labels.items()):
            return False
        if any(labels.get(k) in vs for k, vs in self.exclude_labels.items()):
            return False
        if self.xids and _xid_of(labels) not in self.xids:
            return False
        if conditions is not None and any(conditions.get(k) != v for k, v in self.node_conditions.items()):
            return False
        return not (events is not None and self.node_events and not set(self.node_events) & set(events))

    def sort_key(self) -> tuple[int, int]:
        """Smaller sorts first: more constraints, then fewer alternatives (alertnames and XIDs)."""
        score = (
            bool(self.alertnames)
            + len(self.labels)
            + bool(self.exclude_labels)
            + bool(self.xids)
            + len(self.node_conditions)
            + bool(self.node_events)
        )
        alternatives = (len(self.alertnames) or 1000) + (len(self.xids) or 1000)
        return (-score, alternatives)


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, Mapping) else value


# -- a playbook --------------------------------------------------------------------------------------
class Containment(_Strict):
    """Per-playbook limits, checked by the gate on top of the global ones. ``preconditions`` must all
    hold before any write step runs. ``allowed_tools`` (when given) and ``forbidden_tools`` take tool
    names or groups (reads, writes, node-writes, workload-writes, billing-writes), expanded on load."""

    max_nodes: int = Field(1, ge=0, description="Nodes written to per incident.")
    max_gpus: int = Field(8, ge=0, description="GPUs taken out of service per incident.")
    max_credit_usd: float = Field(0.0, ge=0, description="Dollars credited per incident.")
    preconditions: list[Condition] = Field(default_factory=list)
    allowed_tools: list[ToolOrGroup] | None = None
    forbidden_tools: list[ToolOrGroup] = Field(default_factory=list)

    @field_validator("allowed_tools")
    @classmethod
    def _expand_allowed(cls, names: list[str] | None) -> list[str] | None:
        return None if names is None else _expand_tools(names)

    @field_validator("forbidden_tools")
    @classmethod
    def _expand_forbidden(cls, names: list[str], info: ValidationInfo) -> list[str]:
        expanded = _expand_tools(names)
        allowed = info.data.get("allowed_tools")
        both = sorted(set(expanded) & set(allowed or ()))
        if both:
            raise _fail(f"both allowed and forbidden: {', '.join(both)}")
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
        for path, ref in _template_refs(step.params):
            if _TEMPLATE_REF.fullmatch(ref) and ref.startswith("steps.") and ref.split(".")[1] not in seen:
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


class Playbook(_Strict):
    """One incident class: what it matches, its containment rules and the runbook the deterministic
    planner follows. ``source`` names where its guidance (XID meaning, recommended action) comes from."""

    id: Slug
    title: NonEmptyStr
    description: str = ""
    source: NonEmptyStr = Field(description="Citation: where this playbook's guidance comes from.")
    severity: Literal["critical", "warning", "info"]
    match: Annotated[list[Match], BeforeValidator(_one_or_many), Field(min_length=1)]
    # Validated before `runbook`, which is checked against it.
    containment: Containment = Containment()
    runbook: Annotated[list[Step], Field(min_length=1)]

    @field_validator("source")
    @classmethod
    def _source(cls, source: str) -> str:
        if not source.strip():
            raise _fail("cite where this playbook's guidance comes from")
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
            errors.append(InitErrorDetails(type=_fail(message, *at), loc=(), input=value))
        if errors:
            raise ValidationError.from_exception_data("runbook", errors)
        return steps

    @property
    def write_tools(self) -> list[str]:
        return sorted({s.tool for s in self.runbook if s.tool in WRITE_TOOLS})

    def match_key(
        self,
        alertname: str,
        labels: Mapping[str, str],
        conditions: Mapping[str, str] | None = None,
        events: Sequence[str] | None = None,
    ) -> tuple[int, int] | None:
        """The sort key of the most specific clause that matches, or None."""
        keys = [m.sort_key() for m in self.match if m.matches(alertname, labels, conditions, events)]
        return min(keys) if keys else None


# -- fleet-wide limits (_global.yaml) ------------------------------------------------------------------
class SoftHardLimit(_Strict):
    """Over ``soft``: ask a human. Over ``hard``: deny."""

    soft: float
    hard: float

    @model_validator(mode="after")
    def _ordered(self) -> SoftHardLimit:
        if self.soft > self.hard:
            raise _fail(f"soft ({self.soft:g}) must not exceed hard ({self.hard:g})", "soft")
        return self

    def verdict(self, value: float) -> Literal["allow", "ask", "deny"]:
        if value > self.hard:
            return "deny"
        if value > self.soft:
            return "ask"
        return "allow"


class FractionLimit(SoftHardLimit):
    """Fractions 0..1 (or "5%")."""

    soft: Fraction
    hard: Fraction


class CountLimit(SoftHardLimit):
    soft: Annotated[int, Field(ge=0)]
    hard: Annotated[int, Field(ge=0)]


class MoneyLimit(SoftHardLimit):
    """US dollars."""

    soft: Annotated[float, Field(ge=0)]
    hard: Annotated[float, Field(ge=0)]


class BlastRadius(_Strict):
    """How much the agent may take out of service. Cordoned fractions count the nodes the agent has
    cordoned (not the ones others did) against the pool's and the fleet's size; the first
    ``always_allow_nodes`` nodes never count against the fractions, so that a small pool can still lose
    its one broken node."""

    pool_cordoned: FractionLimit = FractionLimit(soft=0.1, hard=0.25)
    fleet_cordoned: FractionLimit = FractionLimit(soft=0.05, hard=0.1)
    always_allow_nodes: int = Field(1, ge=0)
    gpus_out: CountLimit = CountLimit(soft=8, hard=32)
    customers_disrupted_per_hour: CountLimit = CountLimit(soft=4, hard=16)
    credit_usd_per_incident: MoneyLimit = MoneyLimit(soft=100, hard=1000)
    credit_usd_per_customer_per_day: MoneyLimit = MoneyLimit(soft=500, hard=2500)
    credit_usd_per_hour: MoneyLimit = MoneyLimit(soft=1000, hard=5000)

    def cordon_verdict(
        self, cordoned: int, pool_size: int, fleet_size: int
    ) -> Literal["allow", "ask", "deny"]:
        """``cordoned`` nodes in the pool (after the action) and in the fleet: the stricter verdict."""
        if cordoned <= self.always_allow_nodes:
            return "allow"
        order = {"allow": 0, "ask": 1, "deny": 2}
        pool = self.pool_cordoned.verdict(cordoned / pool_size) if pool_size else "deny"
        fleet = self.fleet_cordoned.verdict(cordoned / fleet_size) if fleet_size else "deny"
        return max(pool, fleet, key=order.__getitem__)


_DEFAULT_RATES = {
    "k8s.cordon_node": 6,
    "k8s.uncordon_node": 6,
    "k8s.taint_node": 6,
    "k8s.untaint_node": 6,
    "k8s.drain_node": 3,
    "k8s.delete_pod": 6,
    "k8s.rollout_restart": 2,
    "k8s.scale_deployment": 2,
    "billing.issue_credit": 10,
    "billing.pause_metering": 5,
    "billing.resume_metering": 5,
    "billing.hold_payout": 5,
    "billing.release_payout": 5,
    "notify.customer": 30,
}


class RateLimits(_Strict):
    """Write actions per tool per hour, fleet-wide; a write tool not named gets ``default_per_hour``.
    Reads and paging a human are never rate limited."""

    per_hour: dict[ToolName, Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: dict(_DEFAULT_RATES)
    )
    default_per_hour: int = Field(3, ge=0)
    writes_per_incident: int = Field(20, ge=0)

    @field_validator("per_hour")
    @classmethod
    def _writes_only(cls, rates: dict[str, int]) -> dict[str, int]:
        for name in rates:
            if name not in WRITE_TOOLS:
                raise _fail(f"{name} only reads: reads are not rate limited by the gate", name)
        return rates

    def per_hour_for(self, tool: str) -> int:
        return self.per_hour.get(tool, self.default_per_hour)


class MassFailure(_Strict):
    """When more nodes of a pool (or the fleet) alert within ``window`` than the threshold allows, the
    likely cause is the monitor, a driver rollout or the network: stop and page a human. Thresholds
    follow Cluster API ``maxUnhealthy`` (a count or a percentage rounding down); the limit never drops
    below ``always_allow_nodes``, so one failing node is never a mass failure."""

    max_unhealthy_pool: IntOrPercent = IntOrPercent(20, True)
    max_unhealthy_fleet: IntOrPercent = IntOrPercent(20, True)
    always_allow_nodes: int = Field(1, ge=0)
    window: Duration = timedelta(minutes=10)

    def allows(self, unhealthy: int, total: int, scope: Literal["pool", "fleet"]) -> bool:
        """True when ``unhealthy`` alerting nodes out of ``total`` may still be remediated."""
        threshold = self.max_unhealthy_pool if scope == "pool" else self.max_unhealthy_fleet
        return unhealthy <= max(threshold.scaled(total), self.always_allow_nodes)


class CircuitBreaker(_Strict):
    """NVSentinel's breaker: trips when the unique nodes the agent cordoned within ``duration`` exceed
    ``percentage`` of the fleet's nodes, or when ``failed_verifications`` steps fail verification within
    it. Once tripped it blocks every new write until a human resets it; it never resets itself."""

    enabled: bool = True
    percentage: Percent = 20.0
    duration: Duration = timedelta(minutes=30)
    failed_verifications: int = Field(2, ge=1)

    def trips(self, unique_cordons: int, fleet_size: int, failed_verifications: int = 0) -> bool:
        if not self.enabled:
            return False
        return unique_cordons * 100 > self.percentage * fleet_size or (
            failed_verifications >= self.failed_verifications
        )


class Approvals(_Strict):
    """An approval expires after ``ttl`` and counts only from a named approver; with none named, every
    ``ask`` stays unanswered (the safe default)."""

    ttl: Annotated[Duration, _at_most(timedelta(hours=24))] = timedelta(minutes=15)
    approvers: list[NonEmptyStr] = Field(default_factory=list)

    @field_validator("approvers")
    @classmethod
    def _unique(cls, approvers: list[str]) -> list[str]:
        for i, name in enumerate(approvers):
            if name in approvers[:i]:
                raise _fail(f"approver {name!r} is listed twice", i)
        return approvers


class DeniedAction(_Strict):
    """A Kubernetes verb on a resource the agent may never perform."""

    verb: Annotated[str, Field(pattern=r"^[a-z*]+$")]
    resource: NonEmptyStr

    @field_validator("resource")
    @classmethod
    def _plural(cls, resource: str) -> str:
        key = resource.strip().lower()
        return _RESOURCE_ALIASES.get(key, key)


def _denied_action(value: Any) -> Any:
    # "delete nodes" is {verb: delete, resource: nodes}.
    if isinstance(value, str) and len(value.split()) == 2:
        verb, resource = value.split()
        return {"verb": verb, "resource": resource}
    return value


class Deny(_Strict):
    """Deny lists. The mandatory entries (kube-system, supply-agent-system; deleting nodes, namespaces,
    PVCs and secrets) may not be removed."""

    namespaces: list[NonEmptyStr] = Field(default_factory=lambda: list(MANDATORY_DENY_NAMESPACES))
    actions: list[Annotated[DeniedAction, BeforeValidator(_denied_action)]] = Field(
        default_factory=lambda: [DeniedAction(verb=v, resource=r) for v, r in MANDATORY_DENIED_ACTIONS]
    )

    @field_validator("namespaces")
    @classmethod
    def _mandatory_namespaces(cls, namespaces: list[str]) -> list[str]:
        missing = [ns for ns in MANDATORY_DENY_NAMESPACES if ns not in namespaces]
        if missing:
            raise _fail(f"must keep {', '.join(missing)} denied (you may add namespaces, not remove these)")
        return namespaces

    @field_validator("actions")
    @classmethod
    def _mandatory_actions(cls, actions: list[DeniedAction]) -> list[DeniedAction]:
        have = {(a.verb, a.resource) for a in actions}
        missing = [f"{v} {r}" for v, r in MANDATORY_DENIED_ACTIONS if (v, r) not in have]
        if missing:
            raise _fail(f"must keep denied: {', '.join(missing)} (you may add actions, not remove these)")
        return actions


class GlobalLimits(_Strict):
    """``_global.yaml``: fleet-wide limits. A missing file means these defaults, which are safe: kill
    switch off, mandatory deny lists, tight blast radius, breaker on, no approvers (an ``ask`` then
    waits for a human who can only act out of band)."""

    kill_switch: bool = False
    deny: Deny = Deny()
    blast_radius: BlastRadius = BlastRadius()
    rate_limits: RateLimits = RateLimits()
    mass_failure: MassFailure = MassFailure()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    approvals: Approvals = Approvals()


# -- a set of playbooks --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlaybookSet:
    """The loaded, valid playbooks (sorted by id), the global limits and the file of each playbook."""

    limits: GlobalLimits
    playbooks: tuple[Playbook, ...]
    files: Mapping[str, Path] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Playbook]:
        return iter(self.playbooks)

    def __len__(self) -> int:
        return len(self.playbooks)

    def get(self, playbook_id: str) -> Playbook | None:
        return next((p for p in self.playbooks if p.id == playbook_id), None)

    def match(
        self,
        alertname: str,
        labels: Mapping[str, str],
        *,
        conditions: Mapping[str, str] | None = None,
        events: Sequence[str] | None = None,
    ) -> list[Playbook]:
        """The playbooks for an alert, most specific first (then by id). ``conditions`` (node condition
        type -> status) and ``events`` (event reasons on the node) refine the match once observed; None
        means not observed yet, and those clauses are not checked."""
        hits = []
        for pb in self.playbooks:
            key = pb.match_key(alertname, labels, conditions, events)
            if key is not None:
                hits.append((key, pb.id, pb))
        hits.sort(key=lambda h: (h[0], h[1]))
        return [pb for _, _, pb in hits]


# -- loading: YAML with line numbers -------------------------------------------------------------------
@dataclass
class _Pos:
    """Where a YAML value is: the line of its key (or of the item, in a sequence), and its children."""

    line: int
    children: dict[str | int, _Pos] | None = None  # None for a scalar


def _index(
    node: yaml.Node, line: int, errors: list[tuple[int, str, str]], path: str, stack: tuple[int, ...] = ()
) -> _Pos:
    if id(node) in stack:  # a recursive alias
        return _Pos(line)
    stack = (*stack, id(node))
    if isinstance(node, yaml.MappingNode):
        children: dict[str | int, _Pos] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            key_line = key_node.start_mark.line + 1
            if key in children and key != "<<":
                errors.append(
                    (key_line, _join(path, key), f"duplicate key (first at line {children[key].line})")
                )
            children[key] = _index(value_node, key_line, errors, _join(path, key), stack)
        return _Pos(line, children)
    if isinstance(node, yaml.SequenceNode):
        items: dict[str | int, _Pos] = {
            i: _index(item, item.start_mark.line + 1, errors, _join(path, i), stack)
            for i, item in enumerate(node.value)
        }
        return _Pos(line, items)
    return _Pos(line)


def _join(path: str, el: str | int) -> str:
    if isinstance(el, int):
        return f"{path}[{el}]"
    part = el if re.fullmatch(r"[A-Za-z0-9_-]+", el) else repr(el)
    return f"{path}.{part}" if path else part


def _resolve(tree: _Pos, loc: Sequence[str | int], trailing: bool) -> tuple[int, str]:
    """The line and the dotted field for a pydantic location. Elements the YAML does not have (union tags,
    the wrapped ``condition`` of a flat ``verify``, index 0 of a single ``match`` mapping) are skipped;
    the last one is kept in the field name when ``trailing`` (a missing field)."""
    node, line, path = tree, tree.line, ""
    for i, el in enumerate(loc):
        child = None
        if node.children is not None:
            key: str | int = el if isinstance(el, int) else str(el)
            child = node.children.get(key)
            if child is None and isinstance(el, int):
                child = node.children.get(str(el))
        if child is not None:
            node, line, path = child, child.line, _join(path, el)
        elif trailing and i == len(loc) - 1 and isinstance(el, str):
            path = _join(path, el)
    return line, path or "<root>"


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str] | None:
    """The field names a YAML author may write at ``loc`` (for did-you-mean), or None when unknown."""
    tp: Any = model
    extra: list[str] = []
    for el in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            members = [_unwrap(a) for a in get_args(tp) if a is not type(None)]
            tagged = [
                m
                for m in members
                if isinstance(m, type)
                and issubclass(m, BaseModel)
                and "check" in m.model_fields
                and get_args(m.model_fields["check"].annotation) == (el,)
            ]
            if tagged:
                tp = tagged[0]
                continue
            if len(members) != 1:
                return None
            tp = members[0]
            origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if isinstance(el, str) and el in tp.model_fields:
                extra = list(Verify._OWN) if tp is Verify and el == "condition" else []
                tp = tp.model_fields[el].annotation
                continue
            return None
        if origin is list and isinstance(el, int):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        members = [_unwrap(a) for a in get_args(tp) if a is not type(None)]
        tp = members[0] if len(members) == 1 else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [*tp.model_fields, *extra]
    return None


def _message(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    kind, msg, loc = err["type"], str(err["msg"]), tuple(err["loc"])
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        known = _fields_at(model, loc[:-1])
        text = f"unknown field {name!r}"
        if known:
            hint = difflib.get_close_matches(name, known, n=1)
            text += f"; did you mean {hint[0]!r}?" if hint else ""
            text += f" (expected one of: {', '.join(known)})"
        return text
    if kind == "union_tag_invalid":
        return f"unknown check {ctx.get('tag')!r}; expected one of: {', '.join(CHECKS)}"
    if kind in ("model_type", "dict_type"):
        got = type(err.get("input")).__name__
        return f"expected a mapping (got {'nothing' if got == 'NoneType' else got})"
    if kind == "union_tag_not_found":
        return f"needs check: one of {', '.join(CHECKS)}"
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    value = err.get("input")
    if kind != "playbook" and isinstance(value, str | int | float | bool) and repr(value) not in msg:
        msg += f" (got {value!r})"
    return msg


def _validation_errors(
    exc: ValidationError, model: type[BaseModel], tree: _Pos, file: str
) -> list[PlaybookError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == "playbook":
            loc = (*loc, *ctx.get("at", ()))
        elif err["type"] == "union_tag_invalid":
            loc = (*loc, "check")
        trailing = err["type"] in ("missing", "playbook")
        line, path = _resolve(tree, loc, trailing)
        out.append(PlaybookError(file, line, path, _message(err, model)))
    return out


def _read_yaml(path: Path, file: str) -> tuple[Any, _Pos | None, list[PlaybookError]]:
    """Parse one YAML document: (data, position tree, errors). Data is None when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, None, [PlaybookError(file, 0, "<file>", f"cannot read: {exc}")]
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None, []
        dup: list[tuple[int, str, str]] = []
        tree = _index(node, node.start_mark.line + 1, dup, "")
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        what = exc.problem or str(exc)
        if exc.context and exc.context_mark is not None:
            what = f"{exc.context} (line {exc.context_mark.line + 1}): {what}"
        return None, None, [PlaybookError(file, line, "<yaml>", what)]
    except yaml.YAMLError as exc:
        return None, None, [PlaybookError(file, 0, "<yaml>", str(exc))]
    finally:
        loader.dispose()
    return data, tree, [PlaybookError(file, ln, f, m) for ln, f, m in dup]


def _validate(model: type[BaseModel], data: Any, tree: _Pos, file: str) -> tuple[Any, list[PlaybookError]]:
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, _validation_errors(exc, model, tree, file)


def _load(directory: Path) -> tuple[PlaybookSet | None, list[PlaybookError]]:
    directory = Path(directory)
    if not directory.is_dir():
        return None, [PlaybookError(str(directory), 0, "<file>", "not a directory of playbooks")]
    errors: list[PlaybookError] = []
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
    limits = GlobalLimits()
    playbooks: list[tuple[Playbook, Path]] = []
    ids: dict[str, tuple[Path, int]] = {}  # from the raw YAML: a duplicate is reported even in a bad file
    n_playbook_files = 0
    for path in files:
        file = str(path)
        data, tree, problems = _read_yaml(path, file)
        errors += problems
        if path.stem == "_global":
            if path.name != GLOBAL_FILE:
                errors.append(PlaybookError(file, 0, "<file>", f"name the fleet-wide limits {GLOBAL_FILE}"))
                continue
            if tree is not None and data is not None:
                got, problems = _validate(GlobalLimits, data, tree, file)
                errors += problems
                limits = got or limits
            continue
        if path.name.startswith("_"):
            errors.append(
                PlaybookError(
                    file, 0, "<file>", f"only {GLOBAL_FILE} may start with '_'; rename the playbook"
                )
            )
            continue
        n_playbook_files += 1
        if tree is None:
            if not problems:
                errors.append(PlaybookError(file, 0, "<file>", "empty file: a playbook is a YAML mapping"))
            continue
        if isinstance(data, Mapping) and isinstance(data.get("id"), str) and tree.children:
            pid, id_line = data["id"], tree.children["id"].line
            if pid in ids:
                other, other_line = ids[pid]
                errors.append(
                    PlaybookError(
                        file, id_line, "id", f"duplicate playbook id {pid!r} (also {other}:{other_line})"
                    )
                )
            else:
                ids[pid] = (path, id_line)
        pb, problems = _validate(Playbook, data, tree, file)
        errors += problems
        if pb is not None:
            playbooks.append((pb, path))
    if not n_playbook_files:
        errors.append(PlaybookError(str(directory), 0, "<file>", "no playbooks (*.yaml) in this directory"))
    if errors:
        return None, sorted(errors)
    ordered = sorted((pb for pb, _ in playbooks), key=lambda p: p.id)
    return PlaybookSet(limits, tuple(ordered), {pb.id: path for pb, path in playbooks}), []


def check(directory: Path | str) -> list[PlaybookError]:
    """Every error in every file of ``directory`` (empty when the set is valid), sorted by file and line."""
    return _load(Path(directory))[1]


def load_playbooks(directory: Path | str) -> PlaybookSet:
    """The valid playbook set in ``directory``; raises `PlaybookSetError` listing every error otherwise."""
    pset, errors = _load(Path(directory))
    if errors or pset is None:
        raise PlaybookSetError(errors)
    return pset
