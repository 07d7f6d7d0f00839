"""Which alerts a playbook handles: the `Match` clause of the YAML, and the plain functions that test an
alert against clauses and rank them (a more specific clause wins).

It exists so that the matching rules are data plus functions, in one place, rather than behaviour spread
over model methods: a clause that names no alert, label or XID would match every alert, and is an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from supply_agent.policy.base import NonEmptyStr, Strict, fail
from supply_agent.policy.conditions import Status


def _label_value(value: Any) -> Any:
    # `xid: 79` in YAML is an int; alert label values are strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


LabelValue = Annotated[NonEmptyStr, BeforeValidator(_label_value)]


def _xid_of(labels: Mapping[str, str]) -> int | None:
    raw = labels.get("xid") or labels.get("err_code")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


class Match(Strict):
    """Which alerts a playbook handles. Every field given must hold (AND); within a list any entry may
    (OR). ``xids`` reads the ``xid`` label (``err_code`` as a fallback). ``node_conditions`` and
    ``node_events`` refine a match once the node has been read: they are checked only when the caller
    passes what it observed."""

    alertnames: list[NonEmptyStr] = Field(default_factory=list)
    labels: dict[str, LabelValue] = Field(default_factory=dict)
    exclude_labels: dict[str, list[LabelValue]] = Field(default_factory=dict)
    xids: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=list)
    node_conditions: dict[str, Status] = Field(default_factory=dict)
    node_events: list[NonEmptyStr] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        if not (self.alertnames or self.labels or self.xids):
            raise fail(
                "an empty match matches every alert (the SRE lesson: the empty set is not 'everything'); "
                "name alertnames, labels or xids"
            )
        return self


def clause_matches(
    clause: Match,
    alertname: str,
    labels: Mapping[str, str],
    conditions: Mapping[str, str] | None = None,
    events: Sequence[str] | None = None,
) -> bool:
    """Whether an alert satisfies one clause. ``conditions`` and ``events`` are what was observed on the
    node; None means not observed yet, and the clause's ``node_conditions`` / ``node_events`` are not
    checked."""
    if clause.alertnames and alertname not in clause.alertnames:
        return False
    if any(labels.get(k) != v for k, v in clause.labels.items()):
        return False
    if any(labels.get(k) in vs for k, vs in clause.exclude_labels.items()):
        return False
    if clause.xids and _xid_of(labels) not in clause.xids:
        return False
    if conditions is not None and any(conditions.get(k) != v for k, v in clause.node_conditions.items()):
        return False
    return not (events is not None and clause.node_events and not set(clause.node_events) & set(events))


def specificity(clause: Match) -> tuple[int, int]:
    """Smaller sorts first: more constraints, then fewer alternatives (alertnames and XIDs)."""
    score = (
        bool(clause.alertnames)
        + len(clause.labels)
        + bool(clause.exclude_labels)
        + bool(clause.xids)
        + len(clause.node_conditions)
        + bool(clause.node_events)
    )
    alternatives = (len(clause.alertnames) or 1000) + (len(clause.xids) or 1000)
    return (-score, alternatives)


def match_key(
    clauses: Sequence[Match],
    alertname: str,
    labels: Mapping[str, str],
    conditions: Mapping[str, str] | None = None,
    events: Sequence[str] | None = None,
) -> tuple[int, int] | None:
    """The `specificity` of the most specific clause that matches, or None when none does."""
    keys = [specificity(c) for c in clauses if clause_matches(c, alertname, labels, conditions, events)]
    return min(keys) if keys else None
