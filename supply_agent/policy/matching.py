"""Which alerts a playbook handles: the `Match` clause of the YAML, and the plain functions that test an
alert against clauses and rank them (a more specific clause wins).

It exists so that the matching rules are data plus functions, in one place, rather than behaviour spread
over model methods: a clause that names no alert, label or XID would match every alert, and is an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from supply_agent.policy.base import NonEmptyStr, Slug, Strict, fail
from supply_agent.policy.conditions import Status
from supply_agent.policy.xids import ImmediateBucket, bucket_of


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
    (OR). ``xids`` reads the ``xid`` label (``err_code`` as a fallback). ``xid_buckets`` matches the
    XID's immediate resolution bucket in NVIDIA's catalogue (an XID the catalogue has no bucket for
    counts as ``_global.yaml``'s ``xid_uncatalogued``); a clause naming the codes themselves is more
    specific and wins. ``node_conditions`` and
    ``node_events`` refine a match once the node has been read: they are checked only when the caller
    passes what it observed."""

    alertnames: list[NonEmptyStr] = Field(default_factory=list)
    labels: dict[str, LabelValue] = Field(default_factory=dict)
    exclude_labels: dict[str, list[LabelValue]] = Field(default_factory=dict)
    xids: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=list)
    xid_buckets: list[ImmediateBucket] = Field(default_factory=list)
    node_conditions: dict[str, Status] = Field(default_factory=dict)
    node_events: list[NonEmptyStr] = Field(default_factory=list)
    node_groups: list[Slug] = Field(
        default_factory=list,
        description="The alert's node is in one of these node groups (_global.yaml's node_groups, matched "
        "on its labels once the node has been read). Before it is read such a clause does not match, so "
        "a group's own playbook is chosen only on a node known to be in the group; a more specific clause.",
    )
    topology: list[Slug] = Field(
        default_factory=list,
        description="The incident is about a component several alerting nodes share (a kind named in "
        "_global.yaml's topology.components: rack, switch, driver). A clause with topology matches only such "
        "an incident, and a clause without it never does.",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        if not (self.alertnames or self.labels or self.xids or self.xid_buckets):
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
    uncatalogued: str | None = None,
    component: str | None = None,
    group: str | None = None,
) -> bool:
    """Whether an alert satisfies one clause. ``conditions`` and ``events`` are what was observed on the
    node; None means not observed yet, and the clause's ``node_conditions`` / ``node_events`` are not
    checked. ``uncatalogued`` is the bucket an XID without one in the catalogue counts as. ``component``
    is the kind of shared component the incident is about (None: one node's or one pod's incident).
    ``group``: the node group of the alert's node ("" when read and in none; None: not read), which a
    clause's ``node_groups`` must contain."""
    if ((component in clause.topology) if clause.topology else component is None) is False:
        return False
    if clause.node_groups and (group is None or group not in clause.node_groups):
        return False
    if clause.alertnames and alertname not in clause.alertnames:
        return False
    if any(labels.get(k) != v for k, v in clause.labels.items()):
        return False
    if any(labels.get(k) in vs for k, vs in clause.exclude_labels.items()):
        return False
    if clause.xids and _xid_of(labels) not in clause.xids:
        return False
    if clause.xid_buckets and xid_bucket(labels, uncatalogued) not in clause.xid_buckets:
        return False
    if conditions is not None and any(conditions.get(k) != v for k, v in clause.node_conditions.items()):
        return False
    return not (events is not None and clause.node_events and not set(clause.node_events) & set(events))


def xid_bucket(labels: Mapping[str, str], uncatalogued: str | None = None) -> str | None:
    """The catalogue's immediate bucket for the alert's XID; ``uncatalogued`` for an XID it has no
    bucket for; None when the alert carries no XID."""
    code = _xid_of(labels)
    if code is None:
        return None
    return bucket_of(code) or uncatalogued


def specificity(clause: Match) -> tuple[int, int]:
    """Smaller sorts first: more constraints, then fewer alternatives (alertnames and XIDs). A bucket
    stands for many codes, so naming codes is more specific than naming their bucket."""
    score = (
        bool(clause.alertnames)
        + len(clause.labels)
        + bool(clause.exclude_labels)
        + bool(clause.xids or clause.xid_buckets)
        + len(clause.node_conditions)
        + bool(clause.node_events)
        + bool(clause.node_groups)
        + bool(clause.topology)
    )
    codes = len(clause.xids) or (500 + len(clause.xid_buckets) if clause.xid_buckets else 1000)
    alternatives = (len(clause.alertnames) or 1000) + codes
    return (-score, alternatives)


def match_key(
    clauses: Sequence[Match],
    alertname: str,
    labels: Mapping[str, str],
    conditions: Mapping[str, str] | None = None,
    events: Sequence[str] | None = None,
    uncatalogued: str | None = None,
    component: str | None = None,
    group: str | None = None,
) -> tuple[int, int] | None:
    """The `specificity` of the most specific clause that matches, or None when none does."""
    keys = [
        specificity(c)
        for c in clauses
        if clause_matches(c, alertname, labels, conditions, events, uncatalogued, component, group)
    ]
    return min(keys) if keys else None
