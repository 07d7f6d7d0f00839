"""Slack: the adapter over the real slack_sdk against a stub of the Web API, and the approval Block Kit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
from slack_sdk import WebClient

from supply_agent.incidents.agent import ApprovalRequest
from supply_agent.models import Action
from supply_agent.service.slack_blocks import (
    APPROVE,
    REJECT,
    Click,
    approval_blocks,
    button_value,
    decided_blocks,
    parse_click,
)
from tests.support.slack_stub import SlackStub, block_actions_payload, click_body
from tools.slack import SlackClient, SlackError, SlackMessage

TOKEN = "xoxb-test-0123456789"
CHANNEL = "C0APPROVALS"
ASKED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVIL = "<!channel> click <http://evil|here>"


def make_request(**overrides: Any) -> ApprovalRequest:
    action = Action(
        tool="drain_node", params={"node": "gpu-a-017", "grace_s": 300}, incident_id="PGR0VU2", step=3
    )
    fields: dict[str, Any] = {
        "interrupt_id": "6921bb0c",
        "incident_id": action.incident_id,
        "step": action.step,
        "action_hash": action.digest(),
        "tool": action.tool,
        "params": action.params,
        "why": "XID 79 on gpu-a-017: the GPU fell off the bus",
        "planner": "runbook",
        "blast_radius": {
            "nodes": ["gpu-a-017"],
            "pods": ["team-a/train-0", "team-a/train-1"],
            "namespaces": ["team-a"],
            "customers": ["acme"],
            "gpus": 8,
            "dollars": "412.50",
        },
        "reasons": ["drain needs approval outside business hours", "customer acme has an SLA"],
        "asked_at": ASKED,
        "expires_at": ASKED + timedelta(minutes=30),
        "approvers": ["U0ALICE", "U0BOB"],
    }
    fields.update(overrides)
    return ApprovalRequest(**fields)


@pytest.fixture
def slack() -> Iterator[SlackStub]:
    with SlackStub(token=TOKEN, groups={"S0ONCALL": ["U0ALICE", "U0BOB"]}) as stub:
        yield stub


@pytest.fixture
def client(slack: SlackStub) -> SlackClient:
    return SlackClient(TOKEN, CHANNEL, base_url=slack.url, timeout_s=5)


def all_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def _text_objects(value: Any) -> list[dict[str, Any]]:
    """Every text object (plain_text or mrkdwn) anywhere in the blocks."""
    if isinstance(value, list):
        return [o for v in value for o in _text_objects(v)]
    if isinstance(value, dict):
        own = [value] if value.get("type") in ("plain_text", "mrkdwn") else []
        return own + [o for v in value.values() for o in _text_objects(v)]
    return []


def buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"] if e["type"] == "button"]


# -- the stub is what the real SDK talks to ----------------------------------------------------------
def test_stub_answers_the_real_sdk(slack: SlackStub) -> None:
    web = WebClient(token=TOKEN, base_url=slack.url)
    assert web.auth_test()["user_id"] == "U0STUBBOT"
    bad = WebClient(token="xoxb-wrong", base_url=slack.url)
    with pytest.raises(Exception, match="invalid_auth"):
        bad.auth_test()
    assert [c.token for c in slack.calls] == [TOKEN, "xoxb-wrong"]


# -- the adapter -------------------------------------------------------------------------------------
def test_post_sends_token_and_blocks_intact(slack: SlackStub, client: SlackClient) -> None:
    text, blocks = approval_blocks(
        make_request(), "XID 79 on gpu-a-017", ["Xid 79: GPU has fallen off the bus"]
    )
    message = client.post(text, blocks)
    assert message == SlackMessage(channel=CHANNEL, ts="1700000000.000100")
    (call,) = slack.calls
    assert (call.method, call.token) == ("chat.postMessage", TOKEN)
    (posted,) = slack.posted()
    assert posted["channel"] == CHANNEL
    assert posted["text"] == text
    assert posted["blocks"] == blocks
    assert posted["unfurl_links"] is False


def test_post_to_another_channel_and_ts_increase(slack: SlackStub, client: SlackClient) -> None:
    first = client.post("one", [])
    second = client.post("two", [], channel="C0OTHER")
    assert second.channel == "C0OTHER"
    assert float(second.ts) > float(first.ts)


def test_update_replaces_the_message(slack: SlackStub, client: SlackClient) -> None:
    request = make_request()
    message = client.post(*approval_blocks(request, "title", []))
    text, blocks = decided_blocks(request, "title", "approved", "U0ALICE", ASKED + timedelta(minutes=2))
    client.update(message, text, blocks)
    (update,) = slack.updates()
    assert (update["channel"], update["ts"], update["blocks"]) == (message.channel, message.ts, blocks)
    assert slack.messages[(message.channel, message.ts)]["blocks"] == blocks


def test_update_of_unknown_message_names_method_and_error(client: SlackClient) -> None:
    with pytest.raises(SlackError) as err:
        client.update(SlackMessage(CHANNEL, "1.000000"), "x", [])
    assert (err.value.method, err.value.error) == ("chat.update", "message_not_found")
    assert "chat.update" in str(err.value)
    assert "message_not_found" in str(err.value)
    assert TOKEN not in str(err.value) + repr(err.value)


def test_usergroup_members(slack: SlackStub, client: SlackClient) -> None:
    assert client.usergroup_members("S0ONCALL") == frozenset({"U0ALICE", "U0BOB"})
    assert slack.calls[-1].args["usergroup"] == "S0ONCALL"
    with pytest.raises(SlackError, match="no_such_subteam") as err:
        client.usergroup_members("S0NOPE")
    assert err.value.method == "usergroups.users.list"


def test_rate_limit_is_retried(slack: SlackStub, client: SlackClient) -> None:
    slack.rate_limit_next(1)
    message = client.post("hello", [])
    assert [c.status for c in slack.calls] == [429, 200]
    assert len(slack.posted()) == 1
    assert message.ts == "1700000000.000100"


def test_rate_limit_retries_are_bounded(slack: SlackStub, client: SlackClient) -> None:
    slack.rate_limit_next(10)
    started = time.monotonic()
    with pytest.raises(SlackError) as err:
        client.post("hello", [])
    assert (err.value.error, err.value.status) == ("ratelimited", 429)
    assert len(slack.calls) == 3  # one try and two retries
    assert time.monotonic() - started < 5


def test_wrong_token_never_appears_in_the_error(slack: SlackStub) -> None:
    secret = "xoxb-secret-do-not-log"
    bad = SlackClient(secret, CHANNEL, base_url=slack.url)
    with pytest.raises(SlackError) as err:
        bad.post("hello", [])
    assert err.value.error == "invalid_auth"
    assert err.value.__cause__ is None
    assert secret not in str(err.value) + repr(err.value) + repr(bad)


def test_unreachable_slack_is_a_slack_error() -> None:
    with SlackStub() as gone:
        url = gone.url
    client = SlackClient(TOKEN, CHANNEL, base_url=url, timeout_s=2)
    with pytest.raises(SlackError) as err:
        client.post("hello", [])
    assert err.value.method == "chat.postMessage"
    assert TOKEN not in str(err.value)


def test_base_url_without_trailing_slash(slack: SlackStub) -> None:
    client = SlackClient(TOKEN, CHANNEL, base_url=slack.url.rstrip("/"))
    assert client.post("hello", []).channel == CHANNEL


# -- the approval prompt -----------------------------------------------------------------------------
def test_approval_blocks_content() -> None:
    request = make_request()
    text, blocks = approval_blocks(request, "XID 79 on gpu-a-017", ["Xid 79: GPU has fallen off the bus"])
    assert "drain_node" in text and "PGR0VU2" in text
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "XID 79 on gpu-a-017", "emoji": False},
    }
    body = all_text(blocks)
    for expected in ("drain_node", "gpu-a-017", "grace_s=300", request.why, "runbook", "412.50", "acme"):
        assert expected in body
    for reason in request.reasons:
        assert reason in body
    assert "2026-03-01T12:30:00Z" in body
    assert "<@U0ALICE>" in body
    actions = blocks[-1]
    assert actions["type"] == "actions" and actions["block_id"] == "approval"
    approve, reject = actions["elements"]
    assert (approve["action_id"], approve["style"], reject["action_id"], reject["style"]) == (
        APPROVE,
        "primary",
        REJECT,
        "danger",
    )
    assert approve["value"] == reject["value"] == f"PGR0VU2|{request.action_hash}" == button_value(request)
    assert "confirm" in approve and "confirm" not in reject
    radius = next(b for b in blocks if "fields" in b)
    labels = [f["text"].split("\n")[0] for f in radius["fields"]]
    assert labels == [
        "*Nodes* (1)",
        "*Pods* (2)",
        "*Customers* (1)",
        "*GPUs*",
        "*Dollars*",
        "*Namespaces* (1)",
    ]


def test_untrusted_text_is_escaped() -> None:
    request = make_request(
        why=f"operator said {EVIL}",
        params={"node": EVIL},
        blast_radius={"nodes": [EVIL], "gpus": 8, "dollars": "1"},
        reasons=[EVIL],
        approvers=[EVIL],
    )
    text, blocks = approval_blocks(request, EVIL, [EVIL, "```", "line with `backticks` & <b>"])
    body = all_text(blocks)
    header = blocks[0]["text"]
    assert header["type"] == "plain_text"  # plain text: never parsed for links or mentions
    rest = all_text(blocks[1:])
    assert "<!channel>" not in rest and "<http" not in rest and "<b>" not in rest
    assert "&lt;!channel&gt; click &lt;http://evil|here&gt;" in rest
    assert "<!channel>" not in text
    evidence = next(b for b in blocks if "Evidence" in b.get("text", {}).get("text", ""))["text"]["text"]
    inside = evidence.split("```\n", 1)[1].rsplit("\n```", 1)[0]
    assert "`" not in inside  # the block cannot be closed early from within
    assert "&amp;" in inside
    for obj in _text_objects(blocks):
        if obj["type"] == "plain_text":
            assert EVIL not in obj["text"] or obj is header
        else:
            assert obj["verbatim"] is True
    mrkdwn_only = [o for o in _text_objects(blocks) if o["type"] == "mrkdwn"]
    assert "<!" not in json.dumps(mrkdwn_only).replace("<!date^", "")
    assert "<@" not in json.dumps(mrkdwn_only)  # the approver was not a user id, so no mention
    assert EVIL in body  # only inside plain_text objects, which Slack never parses


def test_evidence_is_bounded() -> None:
    lines = [f"line {i} " + "x" * 1000 for i in range(40)]
    _, blocks = approval_blocks(make_request(), "t", lines)
    evidence = next(b for b in blocks if "Evidence" in b.get("text", {}).get("text", ""))["text"]["text"]
    assert "line 4 " in evidence and "line 5 " not in evidence
    assert "+35 more lines" in evidence
    assert all(len(line) <= 300 for line in evidence.splitlines())


def test_limits_hold_for_a_huge_request() -> None:
    many = [f"node-{i:05d}-" + "&<>" * 50 for i in range(5000)]
    request = make_request(
        incident_id="P" * 1500,
        params={f"p{i}": "&" * 500 for i in range(50)},
        why="&<>" * 5000,
        blast_radius={
            "nodes": many,
            "pods": many,
            "customers": many,
            "namespaces": many,
            "gpus": 40000,
            "dollars": "9" * 5000,
        },
        reasons=["&" * 400] * 200,
        approvers=[f"U{i:08d}" for i in range(500)],
        planner="llm" * 1000,
    )
    text, blocks = approval_blocks(request, "T" * 1000, ["<&>" * 5000] * 100)
    assert len(blocks) <= 50
    assert len(blocks[0]["text"]["text"]) <= 150
    assert len(text) <= 3000
    for block in blocks:
        if "text" in block:
            assert len(block["text"]["text"]) <= 3000
        for field in block.get("fields", []):
            assert len(field["text"]) <= 2000
        assert len(block.get("fields", [])) <= 10
        for element in block.get("elements", []):
            if "value" in element:
                assert len(element["value"]) <= 2000
            if "text" in element and element["type"] == "mrkdwn":
                assert len(element["text"]) <= 3000
            if "confirm" in element:
                assert len(element["confirm"]["text"]["text"]) <= 300
    assert "&am…" not in all_text(blocks)  # clipping never splits an entity


def test_huge_request_is_accepted_by_the_stub(client: SlackClient, slack: SlackStub) -> None:
    request = make_request(why="w" * 10_000, reasons=["r" * 3000] * 10)
    client.post(*approval_blocks(request, "T" * 400, ["e" * 5000] * 20))
    assert len(slack.posted()) == 1


def test_button_value_refuses_what_it_cannot_bind() -> None:
    with pytest.raises(ValueError, match="2000"):
        button_value(make_request(incident_id="P" * 2000))
    with pytest.raises(ValueError, match="action_hash"):
        button_value(make_request(action_hash="abc"))


@pytest.mark.parametrize(
    ("verdict", "who", "expected"),
    [
        ("approved", "U0ALICE", "Approved by <@U0ALICE> at 2026-03-01T12:05:00Z"),
        ("rejected", "U0BOB", "Rejected by <@U0BOB> at 2026-03-01T12:05:00Z"),
        ("expired", "", "Expired at 2026-03-01T12:05:00Z"),
        ("ignored", "incident resolved in PagerDuty", "Ignored at 2026-03-01T12:05:00Z: incident resolved"),
    ],
)
def test_decided_blocks(verdict: str, who: str, expected: str) -> None:
    request = make_request()
    text, blocks = decided_blocks(request, "XID 79", verdict, who, ASKED + timedelta(minutes=5))
    assert not buttons(blocks)
    assert all(b["type"] != "actions" for b in blocks)
    assert expected in blocks[-1]["elements"][0]["text"]
    assert expected in text
    assert blocks[0]["text"]["text"] == "XID 79"
    assert "drain_node" in all_text(blocks)


def test_decided_blocks_escape_who_and_refuse_unknown_verdicts() -> None:
    _, blocks = decided_blocks(make_request(), "t", "approved", EVIL, ASKED)
    assert "<!channel>" not in all_text(blocks)
    with pytest.raises(ValueError, match="verdict"):
        decided_blocks(make_request(), "t", "maybe", "U0ALICE", ASKED)


# -- the click ---------------------------------------------------------------------------------------
def test_parse_click_round_trip() -> None:
    request = make_request()
    body = click_body(block_actions_payload("U0ALICE", APPROVE, button_value(request)))
    assert body.startswith(b"payload=")
    payload = json.loads(parse_qs(body.decode())["payload"][0])
    click = parse_click(payload)
    assert click == Click(
        user_id="U0ALICE",
        user_name="roadrunner",
        action_id=APPROVE,
        incident_id=request.incident_id,
        action_hash=request.action_hash,
        channel_id="C0APPROVALS",
        message_ts="1700000000.000100",
        action_ts="1700000001.000200",
    )
    assert parse_click(block_actions_payload("U0BOB", REJECT, button_value(request))).action_id == REJECT


def test_parse_click_incident_id_with_a_bar() -> None:
    value = "a|b|" + "0" * 64
    click = parse_click(block_actions_payload("U0ALICE", APPROVE, value))
    assert (click.incident_id, click.action_hash) == ("a|b", "0" * 64)


def _broken(path: str, value: Any) -> dict[str, Any]:
    payload = block_actions_payload("U0ALICE", APPROVE, "PGR0VU2|" + "a" * 64)
    target: Any = payload
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last: Any = int(keys[-1]) if keys[-1].isdigit() else keys[-1]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return payload


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ("not a dict", "payload"),
        (_broken("type", "view_submission"), "type"),
        (_broken("type", ...), "type"),
        (_broken("user", ...), "user"),
        (_broken("user.id", ""), "user.id"),
        (_broken("actions", []), "actions"),
        (_broken("actions.0", "x"), "actions[0]"),
        (_broken("actions.0.action_id", "delete_everything"), "actions[0].action_id"),
        (_broken("actions.0.value", ...), "actions[0].value"),
        (_broken("actions.0.value", "PGR0VU2"), "actions[0].value"),
        (_broken("actions.0.value", "PGR0VU2|" + "A" * 64), "actions[0].value"),
        (_broken("actions.0.value", "PGR0VU2|" + "a" * 63), "actions[0].value"),
        (_broken("actions.0.value", "|" + "a" * 64), "actions[0].value"),
    ],
)
def test_parse_click_rejects_malformed_payloads(payload: Any, field: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_click(payload)
    assert str(err.value).startswith(f"{field}:")
