"""The LLM SDK clients have explicit timeouts: the configured read timeout for the model to answer, and
a short connect timeout, so an endpoint that is down fails fast and is retried or escalated."""

from __future__ import annotations

import pytest

from supply_agent.mind.planners.anthropic import AnthropicPlanner
from supply_agent.mind.planners.openai import OpenAIPlanner
from supply_agent.settings import Settings


@pytest.mark.parametrize("planner", [AnthropicPlanner, OpenAIPlanner])
@pytest.mark.parametrize(("configured", "connect"), [(42.0, 5.0), (2.0, 2.0)])
def test_the_sdk_clients_have_connect_and_read_timeouts(
    planner: type[AnthropicPlanner] | type[OpenAIPlanner], configured: float, connect: float
) -> None:
    s = Settings(anthropic_api_key="sk-test", openai_api_key="sk-test", llm_timeout_s=configured)
    timeout = planner.from_settings(s).client.timeout
    assert (timeout.connect, timeout.read) == (connect, configured)  # type: ignore[union-attr]
    assert planner.from_settings(s).client.max_retries == 0  # tenacity retries, within its policy
