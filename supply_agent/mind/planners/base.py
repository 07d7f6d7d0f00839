"""The planner contract: ``propose(state, ctx) -> Proposal``.

A planner may propose anything in the tool catalogue (a read, a write, ``escalate.human``), or say it
is done or wants a human. It never runs anything: the graph runs reads, and every write goes to the
containment gate and the guarded executor. A planner's parsing is pure; only the LLM call is I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from supply_agent.models.incident import IncidentState, Proposal
from supply_agent.policy import Playbook, PlaybookSet

if TYPE_CHECKING:
    pass


class PlannerError(RuntimeError):
    """A planner that cannot answer (no API key, the provider down after retries, an unparseable answer
    twice): the graph escalates the incident with this message."""


@dataclass(frozen=True)
class PlanContext:
    playbooks: PlaybookSet
    now: datetime
    graph_node: str = "plan"
    max_steps: int = 20
    extra: dict[str, str] = field(default_factory=dict)

    def playbook(self, state: IncidentState) -> Playbook | None:
        return self.playbooks.get(state.playbook_id) if state.playbook_id else None


class Planner(Protocol):
    name: str

    def propose(self, state: IncidentState, ctx: PlanContext) -> Proposal:
        """The next step for this incident."""
        ...
