"""The router: known incident classes follow their runbook (deterministic, free, offline); anything
else (no playbook, a doubtful match, a runbook already followed to its end) goes to the LLM planner.

A match is *confident* when one of the playbook's match entries names the alert's alertname
explicitly, its label constraints hold, and, when it lists XIDs, the alert carries an XID among them
(the ``xid`` label, ``err_code`` as a fallback, as the matcher reads it). The LLM planner is created
on first use, so a router with no API key still handles the known classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from supply_agent.mind.planners.base import PlanContext, Planner
from supply_agent.mind.planners.runbook import RunbookPlanner
from supply_agent.models.incident import AlertIn, IncidentState, Proposal
from supply_agent.policy import Playbook

if TYPE_CHECKING:
    pass


def _xid(labels: dict[str, str]) -> int | None:
    raw = labels.get("xid") or labels.get("err_code")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def confident_match(pb: Playbook, alert: AlertIn) -> bool:
    """Whether ``pb`` handles ``alert`` by name (not only by labels), XIDs included when it lists any."""
    for m in pb.match:
        if alert.alertname not in m.alertnames:
            continue
        if any(alert.labels.get(k) != v for k, v in m.labels.items()):
            continue
        if any(alert.labels.get(k) in vs for k, vs in m.exclude_labels.items()):
            continue
        if m.xids and _xid(alert.labels) not in m.xids:
            continue
        return True
    return False


def route(state: IncidentState, ctx: PlanContext) -> tuple[bool, str]:
    """(True, why) when the runbook should decide this turn, (False, why) when the LLM should."""
    pb = ctx.playbook(state)
    if pb is None:
        return False, f"no playbook matches {state.alert.alertname}"
    if not confident_match(pb, state.alert):
        return False, f"playbook {pb.id} does not name {state.alert.alertname} (with its XID) explicitly"
    if state.runbook_cursor >= len(pb.runbook):
        return False, f"the runbook of {pb.id} is exhausted"
    return True, f"{pb.id} is a known class"


class RouterPlanner:
    name = "router"

    def __init__(self, llm: Planner | Callable[[], Planner], runbook: Planner | None = None) -> None:
        """``llm``: the LLM planner, or a factory that makes it on first use (it may raise PlannerError,
        e.g. with no API key)."""
        self._llm: Planner | None = None
        self._llm_factory: Callable[[], Planner] | None = None
        if hasattr(llm, "propose"):
            self._llm = cast(Planner, llm)
        else:
            self._llm_factory = cast(Callable[[], Planner], llm)
        self.runbook = runbook or RunbookPlanner()

    @property
    def llm(self) -> Planner:
        if self._llm is None:
            assert self._llm_factory is not None
            self._llm = self._llm_factory()
        return self._llm

    def propose(self, state: IncidentState, ctx: PlanContext) -> Proposal:
        to_runbook, why = route(state, ctx)
        if to_runbook:
            proposal = self.runbook.propose(state, ctx)
            label = "router→runbook"
        else:
            proposal = self.llm.propose(state, ctx)
            label = "router→llm"
        reason = f"{label}: {why}" + (f"; {proposal.reason}" if proposal.reason else "")
        return proposal.model_copy(update={"reason": reason})
