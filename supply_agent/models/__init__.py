"""The shared vocabulary of supply-agent: pydantic models every part speaks (GPU health, actions and
decisions, and in ``incident`` the alerts and the incident state the graph carries)."""

from supply_agent.models.actions import Action, Decision, Targets, Verdict, WorkloadHit
from supply_agent.models.approvals import Approval
from supply_agent.models.health import GpuHealth, GpuHealthReport, NvLinkState, RemappedRows, XidEvent

__all__ = [
    "Action",
    "Approval",
    "Decision",
    "GpuHealth",
    "GpuHealthReport",
    "NvLinkState",
    "RemappedRows",
    "Targets",
    "Verdict",
    "WorkloadHit",
    "XidEvent",
]
