"""Policy: the playbooks and fleet-wide limits the containment gate enforces, as data.

Per incident class a playbook says what it matches, the runbook to follow, how each step is verified,
what to do when verification fails, and the containment rules; ``_global.yaml`` holds the fleet-wide
limits. Playbooks are YAML validated by the pydantic models of this package. Every error names the file,
the line and the field, and a check reports every error in every file, never only the first: an
operator fixing a playbook at 3 a.m. should get the whole list at once.

This package is pure: it reads playbook files when asked to load them and does no other I/O. One module
per concept:

* `units`: durations, fractions, percentages, int-or-percent.
* `tools`: tool names and groups, from ``tools.catalogue`` (the tool table).
* `conditions`: the checks of preconditions and verification.
* `templates`: step parameters and their ``${...}`` templates.
* `steps`: a runbook step, its verification and its failure handling.
* `matching`: which alerts a playbook handles, and how specific a match is.
* `playbook`: containment and the playbook with its whole-runbook checks.
* `limits`: the fleet-wide limits of ``_global.yaml``.
* `playbook_set`: the loaded set and ranking its playbooks for an alert.
* `loader`: YAML with line numbers, error messages, `check` and `load_playbooks`.

Semantics the gate relies on, in one place:

* A *fraction* is 0..1 (``"10%"`` is accepted and means 0.1); anything above 1.0 (100%) is an error.
* An `IntOrPercent` threshold has Cluster API ``maxUnhealthy`` semantics: an absolute count or an
  integer percentage, percentages rounding *down* (40% of 25 allows 10, stops at 11).
* A soft limit is exceeded -> ``ask``; a hard limit is exceeded -> ``deny`` (`SoftHardLimit.verdict`).
* A match that names no alert, label or XID would match every alert; it is an error, as is any empty or
  unbounded target (Google SRE, "Automation: Enabling Failure at Scale": the empty set is not "everything").
* The circuit breaker (NVSentinel) never resets itself: a human resets it.
"""

from supply_agent.policy.conditions import (
    CHECKS,
    Condition,
    CreditExists,
    CustomerNotified,
    DeploymentAvailable,
    GpuFaultConfirmed,
    GpuThrottleConfirmed,
    GpuXidReported,
    MeterDuplicated,
    MeteringPaused,
    NodeAgentReachable,
    NodeCondition,
    NodeEvent,
    NodeTaint,
    NodeUnschedulable,
    PayoutHeld,
    PodAbsent,
    PodRunning,
    PodsOnNode,
    PodState,
)
from supply_agent.policy.limits import (
    Approvals,
    BlastRadius,
    CircuitBreaker,
    CountLimit,
    DeniedAction,
    Deny,
    FractionLimit,
    GlobalLimits,
    GroupMatch,
    MassFailure,
    MoneyLimit,
    NodeGroup,
    RateLimits,
    SoftHardLimit,
    Workloads,
)
from supply_agent.policy.loader import GLOBAL_FILE, PlaybookError, PlaybookSetError, check, load_playbooks
from supply_agent.policy.matching import Match
from supply_agent.policy.playbook import Containment, Playbook
from supply_agent.policy.playbook_set import PlaybookSet
from supply_agent.policy.steps import OnFailure, Step, Verify
from supply_agent.policy.tools import TOOL_GROUPS
from supply_agent.policy.units import IntOrPercent, format_duration

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
    "GpuThrottleConfirmed",
    "GpuXidReported",
    "GroupMatch",
    "IntOrPercent",
    "MassFailure",
    "Match",
    "MeterDuplicated",
    "MeteringPaused",
    "MoneyLimit",
    "NodeAgentReachable",
    "NodeCondition",
    "NodeEvent",
    "NodeGroup",
    "NodeTaint",
    "NodeUnschedulable",
    "OnFailure",
    "PayoutHeld",
    "Playbook",
    "PlaybookError",
    "PlaybookSet",
    "PlaybookSetError",
    "PodAbsent",
    "PodRunning",
    "PodState",
    "PodsOnNode",
    "RateLimits",
    "SoftHardLimit",
    "Step",
    "Verify",
    "Workloads",
    "check",
    "format_duration",
    "load_playbooks",
]
