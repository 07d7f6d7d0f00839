"""Block Kit for approvals: the prompt with Approve/Reject buttons, its decided form, and the click.

Pure functions. Text that comes from the cluster, the alerts or a planner is untrusted: it is
escaped (``&``, ``<`` and ``>``, so it cannot form a link, a mention or ``<!channel>``), marked
``verbatim`` (so Slack does not auto-link it either) and, where it is raw data, set in code so
formatting characters are shown rather than obeyed. Slack's limits are respected by construction:
a header of 150 characters, section text of 3000, a field of 2000, a button value of 2000, and far
fewer than 50 blocks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from supply_agent.incidents.agent import ApprovalRequest
from supply_agent.intake.clicks import APPROVE, REJECT, Click, parse_click  # the click is read at intake

__all__ = ["APPROVE", "REJECT", "Click", "approval_blocks", "decided_blocks", "parse_click"]
BLOCK_ID = "approval"  # block_id of the actions block

HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
VALUE_MAX = 2000
CONFIRM_TEXT_MAX = 300
EVIDENCE_LINES = 5
EVIDENCE_LINE_MAX = 300
LIST_SHOWN = 10  # names shown per blast-radius field before "+N more"

VERDICTS = ("approved", "rejected", "expired", "ignored")

_HASH = re.compile(r"[0-9a-f]{64}")
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_WS = re.compile(r"[\s\x00-\x1f\x7f]+")
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")
_BACKTICK_LOOKALIKE = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT

Block = dict[str, Any]


# -- text --------------------------------------------------------------------------------------------
def escape(text: str) -> str:
    """Slack's three control characters escaped, so text cannot make links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _clip(text: str, limit: int) -> str:
    """``text`` (already escaped) cut to ``limit`` characters without splitting an entity."""
    if len(text) <= limit:
        return text
    return _PARTIAL_ENTITY.sub("", text[: limit - 1]) + "…"


def _code(text: str, limit: int) -> str:
    # a backtick would close the code span and let the rest be read as mrkdwn; a look-alike cannot
    return _clip(escape(_one_line(text).replace("`", _BACKTICK_LOOKALIKE)), limit)


def _plain(text: str, limit: int) -> str:
    text = _one_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str) -> Block:
    return {"type": "mrkdwn", "text": _clip(text, SECTION_MAX), "verbatim": True}


def _section(text: str) -> Block:
    return {"type": "section", "text": _mrkdwn(text)}


def _iso(at: datetime) -> str:
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(at: datetime) -> str:
    """A Slack date token (shown in the reader's time zone) falling back to UTC ISO 8601."""
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{_iso(at)}>"


def _who(user: str) -> str:
    # only a verified Slack user id becomes a mention; anything else is shown as data
    return f"<@{user}>" if _USER_ID.fullmatch(user) else f"`{_code(user, 100)}`"


def _names(values: Iterable[Any], limit: int) -> str:
    items = [str(v) for v in values]
    shown = ", ".join(f"`{_code(v, 80)}`" for v in items[:LIST_SHOWN])
    more = f" +{len(items) - LIST_SHOWN} more" if len(items) > LIST_SHOWN else ""
    return _clip(shown, limit - len(more)) + more


# -- the prompt --------------------------------------------------------------------------------------
def button_value(request: ApprovalRequest) -> str:
    """``<incident_id>|<action_hash>``: binds a button to exactly one pending approval."""
    if not request.incident_id or "\n" in request.incident_id:
        raise ValueError(f"incident_id {request.incident_id!r} cannot be bound to a button")
    if not _HASH.fullmatch(request.action_hash):
        raise ValueError("action_hash is not 64 lowercase hex characters")
    value = f"{request.incident_id}|{request.action_hash}"
    if len(value) > VALUE_MAX:
        raise ValueError(f"button value is {len(value)} characters; Slack allows {VALUE_MAX}")
    return value


def _call_text(request: ApprovalRequest) -> str:
    args = ", ".join(f"{k}={json.dumps(v, default=str, sort_keys=True)}" for k, v in request.params.items())
    return f"{request.tool}({args})"


def _radius_fields(radius: dict[str, Any]) -> list[Block]:
    def listed(key: str) -> list[Any]:
        value = radius.get(key) or []
        return list(value) if isinstance(value, list | tuple | set | frozenset) else [value]

    fields = []
    for key, label in (("nodes", "Nodes"), ("pods", "Pods"), ("customers", "Customers")):
        items = listed(key)
        body = _names(items, FIELD_MAX - 40) if items else "none"
        fields.append(f"*{label}* ({len(items)})\n{body}")
    fields.append(f"*GPUs*\n`{_code(str(radius.get('gpus', 0)), 40)}`")
    fields.append(f"*Dollars*\n`${_code(str(radius.get('dollars', '0')), 40)}`")
    if namespaces := listed("namespaces"):
        fields.append(f"*Namespaces* ({len(namespaces)})\n{_names(namespaces, FIELD_MAX - 40)}")
    return [{"type": "mrkdwn", "text": _clip(f, FIELD_MAX), "verbatim": True} for f in fields]


def _summary(request: ApprovalRequest, title: str, evidence: list[str]) -> list[Block]:
    header = _plain(title, HEADER_MAX) or f"Incident {_plain(request.incident_id, HEADER_MAX - 9)}"
    # quoted, so text from elsewhere reads as a quotation and not as the message's own words
    why = "\n".join(f">{escape(_one_line(line))}" for line in (request.why or "-").splitlines() or ["-"])
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": False}},
        _section(
            f"*What* (step {request.step} of incident `{_code(request.incident_id, 200)}`)\n"
            f"`{_code(_call_text(request), SECTION_MAX - 300)}`"
        ),
        _section(f"*Why* (proposed by `{_code(request.planner, 100)}`)\n{why}"),
    ]
    if evidence:
        lines = "\n".join(_code(line, EVIDENCE_LINE_MAX) for line in evidence[:EVIDENCE_LINES])
        more = f"\n+{len(evidence) - EVIDENCE_LINES} more lines" if len(evidence) > EVIDENCE_LINES else ""
        blocks.append(
            _section(f"*Evidence* (from alerts and the cluster, unverified)\n```\n{lines}\n```{more}")
        )
    blocks.append(
        {"type": "section", "text": _mrkdwn("*Blast radius*"), "fields": _radius_fields(request.blast_radius)}
    )
    reasons = "\n".join(f"• {escape(_one_line(r))}" for r in request.reasons) or "• ask"
    blocks.append(_section(f"*Gate*\n{reasons}"))
    approvers = ", ".join(_who(a) for a in request.approvers[:LIST_SHOWN]) or "nobody configured"
    if len(request.approvers) > LIST_SHOWN:
        approvers += f" +{len(request.approvers) - LIST_SHOWN} more"
    blocks.append(
        {
            "type": "context",
            "elements": [
                _mrkdwn(
                    f"Expires {_when(request.expires_at)} · action `{request.action_hash[:12]}` · "
                    f"may approve: {approvers}"
                )
            ],
        }
    )
    return blocks


def approval_blocks(request: ApprovalRequest, title: str, evidence: list[str]) -> tuple[str, list[Block]]:
    """The approval prompt: (notification fallback text, blocks ending in Approve/Reject buttons)."""
    value = button_value(request)
    confirm = _plain(
        f"Run {request.tool} for incident {request.incident_id} (step {request.step}) now? "
        f"It touches {len(request.blast_radius.get('nodes') or [])} nodes and "
        f"{request.blast_radius.get('gpus', 0)} GPUs.",
        CONFIRM_TEXT_MAX,
    )
    actions: Block = {
        "type": "actions",
        "block_id": BLOCK_ID,
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE,
                "text": {"type": "plain_text", "text": "Approve"},
                "style": "primary",
                "value": value,
                "confirm": {
                    "title": {"type": "plain_text", "text": "Approve this action?"},
                    "text": {"type": "plain_text", "text": confirm},
                    "confirm": {"type": "plain_text", "text": "Approve"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                    "style": "primary",
                },
            },
            {
                "type": "button",
                "action_id": REJECT,
                "text": {"type": "plain_text", "text": "Reject"},
                "style": "danger",
                "value": value,
            },
        ],
    }
    text = _clip(
        f"Approval needed: {escape(_one_line(request.tool))} for incident "
        f"{escape(_one_line(request.incident_id))}, expires {_iso(request.expires_at)}",
        SECTION_MAX,
    )
    return text, [*_summary(request, title, evidence), actions]


def decided_blocks(
    request: ApprovalRequest,
    title: str,
    verdict: str,
    who: str,
    at: datetime,
    evidence: list[str] | None = None,
) -> tuple[str, list[Block]]:
    """The prompt once settled: no buttons, and a line saying who decided and when.

    ``verdict`` is one of `VERDICTS`. For approved and rejected ``who`` is the Slack user id; for
    ignored it says why (e.g. the incident was resolved); for expired it is not shown.
    """
    when = _iso(at)
    if verdict == "approved":
        icon, line = ":white_check_mark:", f"Approved by {_who(who)} at {when}"
    elif verdict == "rejected":
        icon, line = ":x:", f"Rejected by {_who(who)} at {when}"
    elif verdict == "expired":
        icon, line = ":hourglass:", f"Expired at {when}, unanswered"
    elif verdict == "ignored":
        icon, line = (
            ":heavy_minus_sign:",
            f"Ignored at {when}" + (f": {escape(_one_line(who))}" if who else ""),
        )
    else:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    text = _clip(
        f"{line} ({escape(_one_line(request.tool))} for incident {escape(_one_line(request.incident_id))})",
        SECTION_MAX,
    )
    context: Block = {"type": "context", "elements": [_mrkdwn(f"{icon} {line}")]}
    return text, [*_summary(request, title, evidence or []), context]
