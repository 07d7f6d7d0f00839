"""Step parameters and the ``${...}`` templates in them: ``${labels.node}``, ``${annotations.summary}``,
``${incident.id}``, ``${playbook.id}``, ``${steps.NAME.FIELD}``, and for an incident about a shared
component ``${component.kind}``, ``.name``, ``.label``, ``.nodes``, ``.size``, ``.alerting``.

It exists so that a parameter is checked once, on load (JSON-like, never empty or a wildcard, every
template well formed), and so that the runbook checks can find which earlier steps a step refers to.
Rendering the templates is the runbook planner's job, not this module's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator

from supply_agent.policy.base import fail

_TEMPLATE = re.compile(r"\$\{([^}]*)\}")
_TEMPLATE_REF = re.compile(
    r"(?:labels|annotations)\.[A-Za-z_][A-Za-z0-9_]*"
    r"|incident\.(?:id|title|url|started_at|now)"
    r"|playbook\.(?:id|title)"
    r"|component\.(?:kind|name|label|nodes|size|alerting)"
    r"|steps\.[a-z0-9][a-z0-9-]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+"
)
_PARAM_SCALARS = (str, int, float, bool, type(None))


def _walk_params(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    yield path, value
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk_params(v, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk_params(v, (*path, i))


def template_refs(params: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every template reference in ``params``, stripped, with the path of the parameter it is in."""
    for path, value in _walk_params(params, ()):
        if isinstance(value, str):
            for ref in _TEMPLATE.findall(value):
                yield path, ref.strip()


def step_reference(ref: str) -> str | None:
    """The step a well-formed ``steps.NAME.FIELD`` reference names; None for any other reference."""
    if _TEMPLATE_REF.fullmatch(ref) and ref.startswith("steps."):
        return ref.split(".")[1]
    return None


def _check_param(value: Any) -> Any:
    """One parameter: JSON-like, no empty or wildcard strings, well-formed templates."""
    for path, item in _walk_params(value, ()):
        if not isinstance(item, (*_PARAM_SCALARS, list, Mapping)):
            raise fail(f"a parameter is a string, number, boolean, list or mapping; got {item!r}", *path)
        if not isinstance(item, str):
            continue
        if not item.strip() or item.strip() == "*":
            raise fail(
                "an empty or wildcard parameter is an unbounded target (the SRE lesson: the empty set "
                "is not 'everything')",
                *path,
            )
        if item.count("${") != len(_TEMPLATE.findall(item)):
            raise fail(f"unclosed template in {item!r}: write ${{labels.node}}", *path)
        for ref in _TEMPLATE.findall(item):
            if not _TEMPLATE_REF.fullmatch(ref.strip()):
                raise fail(
                    f"unknown template reference ${{{ref}}}: use labels.NAME, annotations.NAME, "
                    "incident.id|title|url|started_at|now, playbook.id|title or steps.STEP.FIELD",
                    *path,
                )
    return value


ParamValue = Annotated[Any, AfterValidator(_check_param)]
