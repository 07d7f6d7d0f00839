"""Conditions on the world: what a playbook's ``containment.preconditions`` require before any write,
and what a step's ``verify`` reads back after it. Each is a small model tagged by ``check``; `CHECKS`
lists the tags in the order error messages give them.

It exists because the gate (preconditions), the graph (verification) and the runtime (reading a
condition from the cluster or billing) all need the same vocabulary of checks.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field

from supply_agent.policy.base import NonEmptyStr, Strict
from supply_agent.policy.units import Duration

ConditionStatus = Literal["True", "False", "Unknown"]


def _status(value: Any) -> Any:
    # YAML reads an unquoted True/False as a boolean; Kubernetes condition statuses are strings.
    if isinstance(value, bool):
        return "True" if value else "False"
    return value


Status = Annotated[ConditionStatus, BeforeValidator(_status)]


class NodeUnschedulable(Strict):
    """The node's ``spec.unschedulable`` equals ``value`` (true after a cordon)."""

    check: Literal["node_unschedulable"]
    value: bool = True


class NodeTaint(Strict):
    """The node has (``present: true``) or lacks a taint with this key (and effect, when given)."""

    check: Literal["node_taint"]
    key: NonEmptyStr
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    present: bool = True


class NodeCondition(Strict):
    """The node's condition ``condition`` (Ready, GpuHealthy, DiskPressure, ...) has ``status``."""

    check: Literal["node_condition"]
    condition: NonEmptyStr
    status: Status


class NodeEvent(Strict):
    """An event with this reason was (``present: true``) or was not recorded on the node ``within`` the
    window; e.g. the out-of-band ``HostUnresponsive`` (dead host) or ``ControlPlanePathDown`` (partition)."""

    check: Literal["node_event"]
    reason: NonEmptyStr
    present: bool = True
    within: Duration = timedelta(hours=1)


class NodeAgentReachable(Strict):
    """The node-agent answered a health request through ``pods/proxy`` (``value: false``: it did not)."""

    check: Literal["node_agent_reachable"]
    value: bool = True


class GpuFaultConfirmed(Strict):
    """The node-agent itself (a fresh NVML report, not an alert or a cached condition) confirms the
    fault: the alert's XID among the GPU's events, the GPU lost, or uncorrected ECC errors."""

    check: Literal["gpu_fault_confirmed"]
    max_age: Duration = timedelta(minutes=5)


# NVML's clock-event (throttle) reasons that mean heat, as nvml.gpu_health names them.
THERMAL_REASONS = ("HwThermalSlowdown", "SwThermalSlowdown")


class GpuThrottleConfirmed(Strict):
    """The node-agent itself (a fresh NVML report) confirms the GPU is throttled for one of
    ``reasons`` (NVML's clock-event reasons): an alert about heat is not enough (DCGM's exporter and a
    stale rule can both be wrong)."""

    check: Literal["gpu_throttle_confirmed"]
    reasons: list[NonEmptyStr] = Field(default_factory=lambda: list(THERMAL_REASONS), min_length=1)
    max_age: Duration = timedelta(minutes=5)


class PodsOnNode(Strict):
    """At most ``max`` pods remain on the node (DaemonSet pods not counted when ``except_daemonsets``)."""

    check: Literal["pods_on_node"]
    max: int = Field(0, ge=0)
    except_daemonsets: bool = True


class PodAbsent(Strict):
    """The step's pod no longer exists."""

    check: Literal["pod_absent"]


class GpuXidReported(Strict):
    """The node-agent's own NVML report for the node lists an XID event (any, an application's too):
    the second source for an XID that leaves the GPU healthy, before telling anyone about it."""

    check: Literal["gpu_xid_reported"]


class PodState(Strict):
    """One of the incident's pods shows one of ``reasons`` as its container's waiting or last termination
    reason (CrashLoopBackOff, OOMKilled): the pod's own status confirms the alert before a write."""

    check: Literal["pod_state"]
    reasons: list[str] = Field(min_length=1)


class MeterDuplicated(Strict):
    """The meters show one of the incident's pods counted by more than one running meter: the second
    source for a metering alert (the alert is a query over the meters; the meters are the record)."""

    check: Literal["meter_duplicated"]


class PodRunning(Strict):
    """The step's pod is Running and Ready, no container waiting (a crash loop or an OOM loop is over)."""

    check: Literal["pod_running"]


class DeploymentAvailable(Strict):
    """The step's deployment reports all desired replicas updated and available."""

    check: Literal["deployment_available"]


class CreditExists(Strict):
    """A credit for this incident (and the step's customer) is recorded in billing."""

    check: Literal["credit_exists"]


class MeteringPaused(Strict):
    """Metering for the step's target is paused (``value: false``: running)."""

    check: Literal["metering_paused"]
    value: bool = True


class PayoutHeld(Strict):
    """The payout for the step's target is held (``value: false``: released)."""

    check: Literal["payout_held"]
    value: bool = True


class CustomerNotified(Strict):
    """A notification for this incident reached the step's customer."""

    check: Literal["customer_notified"]


_CONDITION_TYPES: tuple[type[Strict], ...] = (
    NodeUnschedulable,
    NodeTaint,
    NodeCondition,
    NodeEvent,
    NodeAgentReachable,
    GpuFaultConfirmed,
    PodsOnNode,
    PodAbsent,
    PodRunning,
    PodState,
    GpuXidReported,
    MeterDuplicated,
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
    | GpuThrottleConfirmed
    | PodsOnNode
    | PodAbsent
    | PodRunning
    | PodState
    | GpuXidReported
    | MeterDuplicated
    | DeploymentAvailable
    | CreditExists
    | MeteringPaused
    | PayoutHeld
    | CustomerNotified,
    Field(discriminator="check"),
    BeforeValidator(_condition_shorthand),
]
