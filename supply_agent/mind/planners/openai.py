"""The OpenAI planner: one Chat Completions call per turn, with the catalogue as function tools and a
forced tool call (``tool_choice: required``, no parallel calls). OpenAI caches a long identical prompt
prefix by itself: the system prompt and tools come first and never change. Retries are tenacity's
alone (the SDK's are off)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import openai

from supply_agent.mind.planners.base import PlannerError
from supply_agent.mind.planners.llm import (
    SYSTEM_PROMPT,
    LlmPlanner,
    Message,
    RetryPolicy,
    ToolCall,
    openai_tools,
)

if TYPE_CHECKING:
    from supply_agent.settings import Settings

TOOLS: list[dict[str, Any]] = openai_tools()
CONNECT_TIMEOUT_S = 5.0


class OpenAIPlanner(LlmPlanner):
    name = "openai"
    provider_errors = (openai.OpenAIError,)

    def __init__(
        self,
        client: openai.OpenAI,
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
    def from_settings(cls, settings: Settings, *, retry: RetryPolicy | None = None) -> OpenAIPlanner:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        if not key.strip():
            raise PlannerError(
                "the openai planner needs an API key: set SUPPLY_AGENT_OPENAI_API_KEY "
                "(or use planner=runbook, which needs none)"
            )
        # The read timeout lets a long answer be written; an endpoint that is down fails fast.
        timeout = openai.Timeout(
            settings.llm_timeout_s, connect=min(CONNECT_TIMEOUT_S, settings.llm_timeout_s)
        )
        kwargs: dict[str, Any] = {"api_key": key, "max_retries": 0, "timeout": timeout}
        if settings.openai_base_url:
            kwargs["base_url"] = settings.openai_base_url
        return cls(
            openai.OpenAI(**kwargs),
            model=settings.openai_model,
            models=settings.models,
            max_turns=settings.llm_max_turns,
            max_tokens=settings.llm_max_tokens,
            retry=retry,
        )

    def _transient(self, exc: BaseException) -> bool:
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code == 429 or exc.status_code >= 500
        return isinstance(exc, openai.APIConnectionError)  # APITimeoutError is one

    def _call(self, model: str, messages: Sequence[Message], graph_node: str) -> ToolCall:
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                *({"role": m["role"], "content": m["content"]} for m in messages),
            ],
            "tools": TOOLS,
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "max_completion_tokens": self.max_tokens,
        }
        start = time.perf_counter()
        resp = self.client.chat.completions.create(**kwargs)
        ms = (time.perf_counter() - start) * 1000.0
        usage = resp.usage
        prompt = usage.prompt_tokens if usage else 0
        cached = 0
        if usage and usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens:
            cached = usage.prompt_tokens_details.cached_tokens
        call = self._make_call(
            model,
            graph_node,
            ms,
            input_tokens=max(0, prompt - cached),  # prompt_tokens includes the cached ones
            output_tokens=usage.completion_tokens if usage else 0,
            cache_read_tokens=cached,
        )
        message = resp.choices[0].message if resp.choices else None
        for tool_call in (message.tool_calls if message else None) or []:
            function = getattr(tool_call, "function", None)  # a custom tool call has none
            if function is not None:
                return function.name, function.arguments, call
        return None, None, call
