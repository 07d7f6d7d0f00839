"""Alertmanager's webhook: the exact (version 4) bodies Alertmanager POSTs to a receiver, grouped as its
route's ``group_by`` says.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sandbox.fleet.alerts.model import Alert, rfc3339

FIRING_ENDS_AT = "0001-01-01T00:00:00Z"  # Go's zero time, which Alertmanager sends as endsAt while firing


def to_alertmanager(
    alerts: Iterable[Alert],
    *,
    receiver: str = "supply-agent",
    external_url: str = "http://alertmanager.sandbox.local:9093",
    group_by: Sequence[str] = ("alertname",),
) -> list[dict[str, Any]]:
    """One Alertmanager webhook body (version 4) per group, ordered by group key.

    `group_by=("...",)` groups by every label, as Alertmanager's special value does.
    """
    groups: dict[str, tuple[dict[str, str], list[Alert]]] = {}
    for alert in alerts:
        if "..." in group_by:
            group_labels = dict(alert.labels)
        else:
            group_labels = {name: alert.labels[name] for name in group_by if name in alert.labels}
        key = "{}:" + _labelset_string(group_labels)  # the root route's key is "{}"
        groups.setdefault(key, (dict(sorted(group_labels.items())), []))[1].append(alert)
    bodies: list[dict[str, Any]] = []
    for key in sorted(groups):
        group_labels, members = groups[key]
        members = sorted(members, key=_alertmanager_order)
        bodies.append(
            {
                "receiver": receiver,
                "status": "firing" if any(a.status == "firing" for a in members) else "resolved",
                "alerts": [_alertmanager_alert(a) for a in members],
                "groupLabels": group_labels,
                "commonLabels": _common([a.labels for a in members]),
                "commonAnnotations": _common([a.annotations for a in members]),
                "externalURL": external_url,
                "version": "4",
                "groupKey": key,
                "truncatedAlerts": 0,
            }
        )
    return bodies


def _alertmanager_alert(alert: Alert) -> dict[str, Any]:
    firing = alert.status == "firing"
    return {
        "status": alert.status,
        "labels": dict(sorted(alert.labels.items())),
        "annotations": dict(sorted(alert.annotations.items())),
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": FIRING_ENDS_AT if firing or alert.ends_at is None else rfc3339(alert.ends_at),
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }


def _alertmanager_order(alert: Alert) -> tuple[str, str, list[tuple[str, str]]]:
    """Alertmanager sorts a group's alerts by job, then instance, then the whole label set."""
    return alert.labels.get("job", ""), alert.labels.get("instance", ""), sorted(alert.labels.items())


def _common(label_sets: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not label_sets:
        return {}
    first, *rest = label_sets
    return {k: v for k, v in sorted(first.items()) if all(other.get(k) == v for other in rest)}


def _labelset_string(labels: Mapping[str, str]) -> str:
    """Go's model.LabelSet.String(): sorted, `name="value"` (Go-quoted), joined by ", "."""
    pairs = (f"{name}={json.dumps(labels[name], ensure_ascii=False)}" for name in sorted(labels))
    return "{" + ", ".join(pairs) + "}"
