"""The LLM planner: the propose loop, with its retries, its turn budget and its accounting.

Everything the planners share is split by concept: the tools and the parsing of a tool call
(:mod:`.llm_tools`), the system prompt and the incident as the user message (:mod:`.llm_prompt`) and
prices (:mod:`.llm_prices`); this module asks the model for one tool call a turn, retries transient
provider errors, sends an unparseable answer back once, and records every call with its tokens and
cost. It re-exports the names it always offered, so ``supply_agent.mind.planners.llm`` stays the one
import for a provider module.

Everything here is pure except :meth:`LlmPlanner._call`, which a provider module implements (one HTTP
request through the provider's SDK).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from supply_agent.mind.planners.base import PlanContext, PlannerError
from supply_agent.mind.planners.llm_prices import PRICES, Price, cost_usd, price_for
from supply_agent.mind.planners.llm_prompt import MAX_PROMPT_CHARS as MAX_PROMPT_CHARS  # re-exported
from supply_agent.mind.planners.llm_prompt import (
    MAX_TEXT_CHARS,
    SYSTEM_PROMPT,
    compact_json,
    fence,
    render_incident,
    truncate,
)
from supply_agent.mind.planners.llm_tools import (
    FINISH_TOOL,
    InvalidProposal,
    anthropic_tools,
    dotted_name,
    openai_tools,
    parse_tool_call,
    tool_definitions,
    wire_name,
)
from supply_agent.mind.planners.runbook import TemplateError, render, template_scope
from supply_agent.models.incident import IncidentState, LlmCall, Proposal

__all__ = [
    "FINISH_TOOL",
    "PRICES",
    "SYSTEM_PROMPT",
    "InvalidProposal",
    "LlmPlanner",
    "LlmPlannerError",
    "Price",
    "RetryPolicy",
    "anthropic_tools",
    "cost_usd",
    "dotted_name",
    "fence",
    "openai_tools",
    "parse_tool_call",
    "price_for",
    "render_incident",
    "tool_definitions",
    "wire_name",
]


# -- the planner -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient provider errors (429, 5xx, timeouts, connection errors): ``attempts`` in
    all, exponential waits of ``wait_multiplier`` * 2^n seconds, at most ``wait_max``. Tests set
    ``wait_multiplier=0``."""

    attempts: int = 4
    wait_multiplier: float = 0.5
    wait_max: float = 8.0


class LlmPlannerError(PlannerError):
    """A PlannerError from an LLM planner, carrying the model calls it made (and paid for) first."""

    def __init__(self, message: str, calls: Sequence[LlmCall] = ()) -> None:
        super().__init__(message)
        self.calls = list(calls)


Message = dict[str, str]
ToolCall = tuple[str | None, Mapping[str, Any] | str | None, LlmCall]


class LlmPlanner(ABC):
    """Proposes the next step by asking a model for one tool call. Subclasses implement :meth:`_call`
    (one request) and say which exceptions are transient."""

    name = "llm"
    provider_errors: tuple[type[BaseException], ...] = ()  # the SDK's base error class(es)

    def __init__(
        self,
        *,
        model: str,
        models: Mapping[str, str] | None = None,
        max_turns: int = 12,
        max_tokens: int = 2048,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.model = model
        self.models = dict(models or {})
        self.max_turns = max_turns
        self.max_tokens = max_tokens
        self.retry = retry or RetryPolicy()

    # -- for subclasses ----------------------------------------------------------------------------
    @abstractmethod
    def _call(self, model: str, messages: Sequence[Message], graph_node: str) -> ToolCall:
        """One request: the tool the model called (None for none), its arguments, and the call's cost."""

    def _transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth another attempt (429, 5xx, timeout, connection error)."""
        return False

    # -- the loop ----------------------------------------------------------------------------------
    def model_for(self, graph_node: str) -> str:
        """``models["<planner>:<node>"]``, else ``models["<node>"]``, else the default model."""
        return self.models.get(f"{self.name}:{graph_node}") or self.models.get(graph_node) or self.model

    def _make_call(
        self,
        model: str,
        graph_node: str,
        ms: float,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> LlmCall:
        """The record of one call. ``input_tokens``: uncached input (cache writes included) for every
        provider, cache reads counted apart in ``cache_read_tokens``."""
        return LlmCall(
            planner=self.name,
            model=model,
            graph_node=graph_node,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cost_usd=cost_usd(model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens),
            ms=ms,
        )

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff, or the provider's ``retry-after`` when longer; never above ``wait_max``."""
        backoff = wait_exponential(multiplier=self.retry.wait_multiplier, max=self.retry.wait_max)(state)
        exc = state.outcome.exception() if state.outcome else None
        return min(max(backoff, _retry_after(exc)), self.retry.wait_max)

    def _call_with_retries(
        self, model: str, messages: Sequence[Message], graph_node: str, calls: list[LlmCall]
    ) -> ToolCall:
        retrying = Retrying(
            stop=stop_after_attempt(max(1, self.retry.attempts)),
            wait=self._wait,
            retry=retry_if_exception(self._transient),
            reraise=True,
        )
        try:
            return retrying(self._call, model, messages, graph_node)
        except self.provider_errors as exc:
            what = f"after {self.retry.attempts} attempts" if self._transient(exc) else "(not retried)"
            raise LlmPlannerError(
                f"{self.name}: the model call failed {what}: {_error_text(exc)}", calls
            ) from exc
        except Exception as exc:  # an answer the SDK could not read: escalate, do not crash the graph
            raise LlmPlannerError(f"{self.name}: the model call failed: {_error_text(exc)}", calls) from exc

    def propose(self, state: IncidentState, ctx: PlanContext) -> Proposal:
        used = sum(1 for c in state.llm_calls if c.planner == self.name)
        if used >= self.max_turns:
            raise LlmPlannerError(
                f"{self.name}: the model turn budget is spent ({used} of {self.max_turns} calls for this "
                "incident): a human takes over"
            )
        model = self.model_for(ctx.graph_node)
        messages: list[Message] = [{"role": "user", "content": render_incident(state, ctx)}]
        calls: list[LlmCall] = []
        problem: InvalidProposal | None = None
        for _attempt in range(2):
            if used + len(calls) >= self.max_turns:
                raise LlmPlannerError(
                    f"{self.name}: the model's answer did not parse and the turn budget is spent: {problem}",
                    calls,
                )
            name, arguments, call = self._call_with_retries(model, messages, ctx.graph_node, calls)
            calls.append(call)
            try:
                proposal = parse_tool_call(name, arguments, self.name)
            except InvalidProposal as exc:
                problem = exc
                messages.append({"role": "user", "content": _correction(name, arguments, exc)})
                continue
            update: dict[str, Any] = {"calls": calls}
            step = _runbook_step(proposal, state, ctx)
            if step is not None:
                update["runbook_step"] = step
            return proposal.model_copy(update=update)
        raise LlmPlannerError(f"{self.name}: the model's answer did not parse twice: {problem}", calls)


def _correction(name: str | None, arguments: Mapping[str, Any] | str | None, exc: InvalidProposal) -> str:
    if not name:
        return f"Your answer was rejected: {exc}. Answer again with exactly one tool call."
    args = arguments if isinstance(arguments, str) else compact_json(arguments, MAX_TEXT_CHARS)
    return (
        f"Your answer called {name} with {truncate(str(args), MAX_TEXT_CHARS)} and was rejected: {exc}. "
        "Answer again with exactly one valid tool call."
    )


def _runbook_step(proposal: Proposal, state: IncidentState, ctx: PlanContext) -> str | None:
    """The runbook step at the cursor, when the model proposes exactly it (the graph then advances)."""
    pb = ctx.playbook(state)
    if proposal.kind != "act" or pb is None or state.runbook_cursor >= len(pb.runbook):
        return None
    step = pb.runbook[state.runbook_cursor]
    if step.tool != proposal.tool:
        return None
    try:
        params = render(step.params, template_scope(state, ctx))
    except TemplateError:
        return None
    return step.name if params == proposal.params else None


def _retry_after(exc: BaseException | None) -> float:
    """Seconds from a ``retry-after`` header on the SDK error's response (0 when none or unreadable)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    try:
        value = headers.get("retry-after") if headers is not None else None
        return max(0.0, float(value)) if value is not None else 0.0
    except (TypeError, ValueError, AttributeError):
        return 0.0


def _error_text(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    text = str(exc) or type(exc).__name__
    return truncate(f"HTTP {status}: {text}" if status else f"{type(exc).__name__}: {text}", MAX_TEXT_CHARS)
