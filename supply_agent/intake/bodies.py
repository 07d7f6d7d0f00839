"""What a webhook body must be before intake stores it: JSON, UTF-8 only, nested at most a few levels,
with ids in each provider's format; the event's dedup key and whether the agent acts on it. Every
refusal is a 400 with the reason (what and where)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from supply_agent.models.incident import AlertError, parse_alerts

Source = Literal["pagerduty", "alertmanager", "slack"]

# PagerDuty V3 incident events the agent acts on: a page opens (or joins) an incident; the rest are what
# humans do to it. Anything else PagerDuty sends is accepted and ignored.
PD_TRIGGERS = frozenset({"incident.triggered", "incident.reopened"})
PD_HUMAN = frozenset(
    {
        "incident.acknowledged",
        "incident.resolved",
        "incident.reassigned",
        "incident.escalated",
        "incident.delegated",
        "incident.unacknowledged",
    }
)
PD_HANDLED = PD_TRIGGERS | PD_HUMAN


class IntakeError(ValueError):
    """A webhook body that cannot be taken: the HTTP status to answer and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Classified:
    """What a checked webhook is: its dedup key, its type, and whether the agent acts on it."""

    source: Source
    dedup_key: str
    event_type: str
    handled: bool
    reason: str = ""


MAX_DEPTH = 64  # no webhook nests deeper than a handful of levels; anything past this is an attack
PD_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")  # PagerDuty ids: ASCII letters and digits (P1234AB, ULIDs)


def _json(body: bytes) -> Any:
    """The body as JSON: UTF-8 only (as both senders send it), nested at most ``MAX_DEPTH`` deep."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntakeError(400, f"body is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        data = json.loads(text)
    except RecursionError:
        raise IntakeError(400, f"body: JSON nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise IntakeError(
            400, f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    _check_depth(data)
    return data


def _check_depth(data: Any) -> None:
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise IntakeError(400, f"body: JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _pd_id(value: Any, where: str) -> None:
    if not isinstance(value, str) or not PD_ID.match(value):
        shown = repr(value)[:80]
        raise IntakeError(400, f"{where}: {shown} is not a PagerDuty id (1-64 ASCII letters and digits)")


def classify_pagerduty(body: bytes) -> Classified:
    """Check a PagerDuty V3 webhook body; 400 with the reason when it is not one."""
    data = _json(body)
    if not isinstance(data, Mapping) or not isinstance(data.get("event"), Mapping):
        raise IntakeError(400, "body: a PagerDuty V3 webhook is an object with an 'event' object")
    ev = data["event"]
    for key in ("id", "event_type"):
        if not isinstance(ev.get(key), str) or not ev[key]:
            raise IntakeError(400, f"body.event.{key}: expected a non-empty string")
    _pd_id(ev["id"], "body.event.id")
    event_type = ev["event_type"]
    if event_type not in PD_HANDLED:
        return Classified("pagerduty", f"pd:{ev['id']}", event_type, False, f"{event_type} is not acted on")
    try:
        _, refs = parse_alerts(data)
    except AlertError as exc:
        raise IntakeError(400, str(exc)) from exc
    if not refs:
        return Classified("pagerduty", f"pd:{ev['id']}", event_type, False, "not an incident event")
    data_obj = ev.get("data")
    _pd_id(data_obj.get("id") if isinstance(data_obj, Mapping) else None, "body.event.data.id")
    return Classified("pagerduty", f"pd:{ev['id']}", event_type, True)


def classify_alertmanager(body: bytes) -> Classified:
    """Check an Alertmanager (version "4") webhook body; 400 with the reason when it is not one."""
    data = _json(body)
    if not isinstance(data, Mapping) or "alerts" not in data:
        raise IntakeError(400, "body: an Alertmanager webhook is an object with an 'alerts' list")
    try:
        alerts, _ = parse_alerts(data)
    except AlertError as exc:
        raise IntakeError(400, str(exc)) from exc
    if not alerts:
        return Classified("alertmanager", "", "alertmanager", False, "no alerts in the notification")
    # A retry and a repeat notification carry the same alerts: one event. A flap (a new startsAt) is new.
    content = json.dumps(
        [
            str(data.get("groupKey", "")),
            sorted(
                (a.fingerprint, a.status, a.starts_at.isoformat() if a.starts_at else "", a.alertname)
                for a in alerts
            ),
        ]
    )
    key = "am:" + hashlib.sha256(content.encode()).hexdigest()[:40]
    return Classified("alertmanager", key, f"alertmanager.{data.get('status', 'firing')}", True)


# -- the event log ------------------------------------------------------------------------------------
