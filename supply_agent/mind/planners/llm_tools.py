"""The tool-call interface of the LLM planners: the tools a model is given and its one call read back.

It exists apart from the prompt and the loop because it is the contract with the tool table
(``tools.catalogue``): each catalogue tool becomes a provider tool under a reversible wire name
(``k8s.cordon_node`` <-> ``k8s__cordon_node``) with a ``why`` field added, ``finish`` is added last,
and :func:`parse_tool_call` turns the name and arguments the model sends back into a
:class:`Proposal`, checked against the same input models the executor uses. The tool list is the same
bytes on every call (tools in a stable order), so a provider caches it with the system prompt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from supply_agent.models.incident import Proposal
from tools.catalogue import CATALOGUE, llm_tools, parse_input

__all__ = [
    "FINISH",
    "FINISH_TOOL",
    "WHY_SCHEMA",
    "InvalidProposal",
    "anthropic_tools",
    "dotted_name",
    "openai_tools",
    "parse_tool_call",
    "tool_definitions",
    "wire_name",
]

# -- tools -------------------------------------------------------------------------------------------
FINISH = "finish"
WHY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": 1000,
    "description": "One sentence: why this step, citing the evidence.",
}
FINISH_TOOL: dict[str, Any] = {
    "name": FINISH,
    "description": (
        "End the incident: the fault is mitigated and verified, or nothing needs doing. "
        "Not for handing over to a human: use escalate.human for that."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "reason": {
                "type": "string",
                "minLength": 1,
                "maxLength": 2000,
                "description": "Why the incident is over: what was done and what shows it worked.",
            },
            "root_cause": {
                "type": "string",
                "maxLength": 500,
                "description": "The root cause in a few words (e.g. 'XID 79: GPU fell off the bus').",
            },
        },
        "required": ["reason", "root_cause"],
        "additionalProperties": False,
    },
}


def wire_name(tool: str) -> str:
    """A catalogue name as a provider tool name (``^[a-zA-Z0-9_-]{1,64}$``): ``k8s.cordon_node`` ->
    ``k8s__cordon_node``."""
    return tool.replace(".", "__")


def dotted_name(name: str) -> str:
    """The inverse of :func:`wire_name`; a dotted name passes through unchanged."""
    return name.replace("__", ".")


_WIRE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
for _name in CATALOGUE:  # the mapping is a bijection on the catalogue, or the import fails loudly
    if not _WIRE_NAME.match(wire_name(_name)) or dotted_name(wire_name(_name)) != _name:
        raise RuntimeError(f"tool {_name!r} has no reversible provider name")


def _with_why(schema: dict[str, Any]) -> dict[str, Any]:
    properties = {**schema.get("properties", {}), "why": WHY_SCHEMA}
    required = [*schema.get("required", []), "why"]
    return {**schema, "properties": properties, "required": required}


def tool_definitions() -> list[dict[str, Any]]:
    """The catalogue's tools (sorted by name, each with a `why` field added) then ``finish``: provider
    names, neutral form (name, description, input_schema)."""
    tools = [
        {
            "name": wire_name(t["name"]),
            "description": t["description"],
            "input_schema": _with_why(t["input_schema"]),
        }
        for t in llm_tools()
    ]
    return [*tools, dict(FINISH_TOOL)]


def anthropic_tools() -> list[dict[str, Any]]:
    """Messages API tools; the last carries ``cache_control`` so the whole tool list is cached."""
    tools = tool_definitions()
    tools[-1] = {**tools[-1], "cache_control": {"type": "ephemeral"}}
    return tools


def openai_tools() -> list[dict[str, Any]]:
    """Chat Completions tools (``{"type": "function", "function": {...}}``)."""
    return [
        {
            "type": "function",
            "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
        }
        for t in tool_definitions()
    ]


# -- parsing the model's answer ----------------------------------------------------------------------
class InvalidProposal(ValueError):
    """The model's answer is not one valid tool call: the message says why (it is sent back once)."""


def _validation_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(input)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_tool_call(
    name: str | None, arguments: Mapping[str, Any] | str | None, planner: str = "llm"
) -> Proposal:
    """The model's one tool call as a Proposal (pure). ``arguments`` is an object, or a JSON string
    (OpenAI). Raises :class:`InvalidProposal` for no call, an unknown tool, bad JSON or parameters
    the tool's input model rejects."""
    if not name:
        raise InvalidProposal("no tool call: answer with exactly one tool call")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise InvalidProposal(
                f"the arguments of {name} are not valid JSON: {exc.msg} at {exc.pos}"
            ) from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise InvalidProposal(
            f"the arguments of {name} must be a JSON object, not {type(arguments).__name__}"
        )
    args = dict(arguments)
    why = args.pop("why", None)
    why = why.strip() if isinstance(why, str) else ""
    if name == FINISH:
        reason, root_cause = args.get("reason"), args.get("root_cause")
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidProposal("finish needs a reason: what was done and what shows it worked")
        if root_cause is not None and not isinstance(root_cause, str):
            raise InvalidProposal("finish: root_cause must be a string")
        return Proposal(
            kind="done", reason=reason.strip(), root_cause=(root_cause or "").strip() or None, planner=planner
        )
    tool = dotted_name(name)
    if tool not in CATALOGUE:
        raise InvalidProposal(f"unknown tool {name!r}: use one of the tools you were given")
    try:
        parse_input(tool, args)
    except ValidationError as exc:
        raise InvalidProposal(f"invalid parameters for {tool}: {_validation_text(exc)}") from None
    reason = why
    if tool == "escalate.human":
        reason = str(args.get("reason", "")).strip() or why
    return Proposal(
        kind="act", tool=tool, params=args, reason=reason or f"{planner} proposed {tool}", planner=planner
    )
