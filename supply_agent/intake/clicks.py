"""A Slack approval click, read from its ``block_actions`` payload: which approval, who, which button.

It lives with intake because a click is checked and stored at the edge, like a webhook (Slack does not
send an interaction twice, so an unstored click is gone); the service applies it later, and builds the
buttons whose values this reads (:mod:`supply_agent.service.slack_blocks`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict

APPROVE, REJECT = "approve", "reject"  # action_id values
# A button's value: the incident and the hash of the action it approves.
_VALUE = re.compile(r"(?P<incident>.+)\|(?P<hash>[0-9a-f]{64})")


class Click(BaseModel):
    """One Approve/Reject click, read from a ``block_actions`` payload (after its signature passed)."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    user_name: str
    action_id: str
    incident_id: str
    action_hash: str
    channel_id: str | None
    message_ts: str | None
    action_ts: str | None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object, got {_shown(value)}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: expected a non-empty string, got {_shown(value)}")
    return value


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _sub(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def parse_click(payload: Any) -> Click:
    """The click in a decoded ``block_actions`` payload; ValueError naming the field when malformed."""
    p = _obj(payload, "payload")
    if p.get("type") != "block_actions":
        raise ValueError(f"type: expected 'block_actions', got {_shown(p.get('type'))}")
    user = _obj(p.get("user"), "user")
    user_id = _str(user.get("id"), "user.id")
    user_name = _opt_str(user.get("username")) or _opt_str(user.get("name")) or ""
    actions = p.get("actions")
    if not isinstance(actions, list) or not actions:
        raise ValueError(f"actions: expected a non-empty list, got {_shown(actions)}")
    action = _obj(actions[0], "actions[0]")
    action_id = _str(action.get("action_id"), "actions[0].action_id")
    if action_id not in (APPROVE, REJECT):
        raise ValueError(f"actions[0].action_id: expected {APPROVE!r} or {REJECT!r}, got {_shown(action_id)}")
    value = _str(action.get("value"), "actions[0].value")
    bound = _VALUE.fullmatch(value)
    if bound is None:
        raise ValueError(f"actions[0].value: expected '<incident>|<64-hex hash>', got {_shown(value)}")
    container, channel, message = (_sub(p, key) for key in ("container", "channel", "message"))
    return Click(
        user_id=user_id,
        user_name=user_name,
        action_id=action_id,
        incident_id=bound["incident"],
        action_hash=bound["hash"],
        channel_id=_opt_str(container.get("channel_id")) or _opt_str(channel.get("id")),
        message_ts=_opt_str(container.get("message_ts")) or _opt_str(message.get("ts")),
        action_ts=_opt_str(action.get("action_ts")),
    )


def read_click(body: bytes) -> Click:
    """The click in a Slack interaction request body (form-encoded ``payload=<json>``); ValueError
    naming what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 at byte {exc.start}") from None
    form = parse_qs(text, strict_parsing=True)
    raw = form.get("payload")
    if not raw:
        raise ValueError("form field 'payload' is missing")
    return parse_click(json.loads(raw[0]))


def click_key(body: bytes) -> str:
    """The event log's dedup key of a click: Slack sends an interaction once, so the same signed body
    again is a replay."""
    return "slack:" + hashlib.sha256(body).hexdigest()
