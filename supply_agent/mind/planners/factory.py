"""Which planner a setting names: the one place that knows every planner (so none imports another's
module but the ones it builds on)."""

from __future__ import annotations

from supply_agent.mind.planners.base import Planner
from supply_agent.settings import Settings


def make_planner(name: str, settings: Settings | None = None) -> Planner:
    """The planner named in settings (``runbook``, ``anthropic``, ``openai``, ``router``)."""
    from supply_agent.mind.planners.runbook import RunbookPlanner

    if name == "runbook":
        return RunbookPlanner()
    if settings is None:
        from supply_agent.settings import get_settings

        settings = get_settings()
    if name == "anthropic":
        from supply_agent.mind.planners.anthropic import AnthropicPlanner

        return AnthropicPlanner.from_settings(settings)
    if name == "openai":
        from supply_agent.mind.planners.openai import OpenAIPlanner

        return OpenAIPlanner.from_settings(settings)
    if name == "router":
        from supply_agent.mind.planners.router import RouterPlanner

        llm_settings = settings
        return RouterPlanner(lambda: make_planner(llm_settings.router_llm, llm_settings))
    raise ValueError(f"unknown planner {name!r}: use runbook, anthropic, openai or router")
