"""Planners turn the incident state into the next proposed step. ``runbook`` is deterministic and
offline; ``anthropic`` and ``openai`` call a model with the tool catalogue; ``router`` picks one."""

from supply_agent.mind.planners.base import PlanContext, Planner, PlannerError

__all__ = ["PlanContext", "Planner", "PlannerError"]
