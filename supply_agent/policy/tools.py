"""Tool names as playbooks see them: the tool table's names (``tools.catalogue``) split by effect into reads
and writes, the groups a containment list may name (reads, writes, node-writes, workload-writes,
billing-writes), and the validators that reject an unknown tool with a did-you-mean.

It exists so that every schema module checks a tool name the same way, against one source of names.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from tools.catalogue import GROUPS, READ_TOOLS, TOOLS, WRITE_TOOLS, group

NODE_WRITE_TOOLS: frozenset[str] = group("node-writes")
WORKLOAD_WRITE_TOOLS: frozenset[str] = group("workload-writes")
BILLING_WRITE_TOOLS: frozenset[str] = group("billing-writes")
# Names a containment list may use for a family of tools (each row's group in the tool table); expanded
# when the playbook is loaded.
TOOL_GROUPS: dict[str, frozenset[str]] = {
    "reads": READ_TOOLS,
    "writes": WRITE_TOOLS,
    **{name: group(name) for name in GROUPS},
}


def _tool_name(value: str) -> str:
    if value not in TOOLS:
        hint = difflib.get_close_matches(value, TOOLS, n=1)
        raise PydanticCustomError(
            "unknown_tool",
            f"unknown tool {value!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + " (see tools/catalogue.py)",
        )
    return value


def _tool_or_group(value: str) -> str:
    if value in TOOL_GROUPS:
        return value
    if value not in TOOLS:
        names = [*TOOLS, *TOOL_GROUPS]
        hint = difflib.get_close_matches(value, names, n=1)
        raise PydanticCustomError(
            "unknown_tool",
            f"unknown tool or group {value!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f" (groups: {', '.join(TOOL_GROUPS)}; tools: see tools/catalogue.py)",
        )
    return value


ToolName = Annotated[str, AfterValidator(_tool_name)]
ToolOrGroup = Annotated[str, AfterValidator(_tool_or_group)]


def expand_tools(names: Sequence[str]) -> list[str]:
    """The tool names ``names`` stand for, groups expanded, sorted."""
    out: set[str] = set()
    for name in names:
        out |= TOOL_GROUPS.get(name, {name})
    return sorted(out)
