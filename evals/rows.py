"""How every view of a run (the markdown, the pictures, the terminal tables) orders and groups its rows.

It exists so that the report and the pictures agree on one order and one naming of the groups without
importing each other: rows by id, planner and gate; a group is ``planner``, ``planner --no-gate`` or
``planner --node-only``, as the summary names it; a class is the incident's class, or ``(unclassified)``.
"""

from __future__ import annotations

from collections.abc import Iterable

from evals.results import EvalResult

UNCLASSIFIED = "(unclassified)"


def ordered(results: Iterable[EvalResult]) -> list[EvalResult]:
    """The stable order of rows everywhere: by id, planner, gate."""
    return sorted(results, key=lambda r: r.key)


def group_of(r: EvalResult) -> str:
    """The planner as the summary names it: ``planner``, ``planner --no-gate`` or ``planner --node-only``."""
    return r.run_name


def groups_of(results: Iterable[EvalResult]) -> list[str]:
    keys = sorted({(r.planner, not r.gate, r.node_only) for r in results})
    seen = {(r.planner, not r.gate, r.node_only): r.run_name for r in results}
    return [seen[k] for k in keys]


def class_of(r: EvalResult) -> str:
    return r.incident_class or UNCLASSIFIED


def classes_of(results: Iterable[EvalResult]) -> list[str]:
    return sorted({class_of(r) for r in results})
