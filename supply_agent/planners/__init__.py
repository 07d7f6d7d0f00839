"""Planners turn the incident state into the next proposed step. ``runbook`` is deterministic and
offline; ``anthropic`` and ``openai`` call a model with the tool catalogue; ``router`` picks one."""

from supply_agent.planners.base import PlanContext, Planner, PlannerError, make_planner

__all__ = ["PlanContext", "Planner", "PlannerError", "make_planner"]
