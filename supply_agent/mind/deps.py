"""What the graph's nodes run with: the runtime (the hands), the planner, and the service's callbacks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from supply_agent.hands.runtime import Runtime
from supply_agent.mind.planners.base import Planner


@dataclass
class GraphDeps:
    runtime: Runtime
    planner: Planner
    alerting_nodes: Callable[[datetime], frozenset[str]] = lambda now: frozenset()
    human_owner: Callable[[str], str | None] = lambda incident_id: None
    max_reads: int = 30
    max_writes: int = 20
    timings: dict[str, float] = field(default_factory=dict)
