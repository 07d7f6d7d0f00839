"""The Anthropic planner: one Messages API call per turn, with the catalogue as tools and a forced
tool call (``tool_choice: any``, no parallel calls). The system prompt and the tool list carry
``cache_control`` so the provider caches them; retries are tenacity's alone (the SDK's are off)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anthropic

from supply_agent.mind.planners.base import PlannerError
from supply_agent.mind.planners.llm import (
    SYSTEM_PROMPT,
    LlmPlanner,
    Message,
    RetryPolicy,
    ToolCall,
    anthropic_tools,
)

if TYPE_CHECKING:
    from supply_agent.settings import Settings

SYSTEM_BLOCKS: list[dict[str, Any]] = [
    {"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
]
TOOLS: list[dict[str, Any]] = anthropic_tools()
TOOL_CHOICE: dict[str, Any] = {"type": "any", "disable_parallel_tool_use": True}
CONNECT_TIMEOUT_S = 5.0


class AnthropicPlanner(LlmPlanner):
    name = "anthropic"
    provider_errors = (anthropic.AnthropicError,)

    def __init__(
        self,
        client: anthropic.Anthropic,
        *,
        model: str,
        models: Mapping[str, str] | None = None,
        max_turns: int = 12,
        max_tokens: int = 2048,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(model=model, models=models, max_turns=max_turns, max_tokens=max_tokens, retry=retry)
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings, *, retry: RetryPolicy | None = None) -> AnthropicPlanner:
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else ""
        if not key.strip():
            raise PlannerError(
                "the anthropic planner needs an API key: set SUPPLY_AGENT_ANTHROPIC_API_KEY "
                "(or use planner=runbook, which needs none)"
            )
        client = anthropic.Anthropic(
            api_key=key,
            base_url=settings.anthropic_base_url or None,
            max_retries=0,
            # The read timeout lets a long answer be written; an endpoint that is down fails fast.
            timeout=anthropic.Timeout(
                settings.llm_timeout_s, connect=min(CONNECT_TIMEOUT_S, settings.llm_timeout_s)
            ),
        )
        return cls(
            client,
            model=settings.anthropic_model,
            models=settings.models,
            max_turns=settings.llm_max_turns,
            max_tokens=settings.llm_max_tokens,
            retry=retry,
        )

    def _transient(self, exc: BaseException) -> bool:
        if isinstance(exc, anthropic.APIStatusError):
            return exc.status_code == 429 or exc.status_code >= 500
        return isinstance(exc, anthropic.APIConnectionError)  # APITimeoutError is one

    def _call(self, model: str, messages: Sequence[Message], graph_node: str) -> ToolCall:
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": self.max_tokens,
            "system": SYSTEM_BLOCKS,
            "tools": TOOLS,
            "tool_choice": TOOL_CHOICE,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        }
        start = time.perf_counter()
        resp = self.client.messages.create(**kwargs)
        ms = (time.perf_counter() - start) * 1000.0
        usage = resp.usage
        cache_write = usage.cache_creation_input_tokens or 0
        call = self._make_call(
            model,
            graph_node,
            ms,
            input_tokens=(usage.input_tokens or 0) + cache_write,
            output_tokens=usage.output_tokens or 0,
            cache_read_tokens=usage.cache_read_input_tokens or 0,
            cache_write_tokens=cache_write,
        )
        for block in resp.content:
            if block.type == "tool_use":
                return block.name, block.input, call
        return None, None, call
