"""The MCP server's HTTP tokens: each names one caller; a bad file says what and where."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from supply_agent.cli.mcp import _tokens, bearer
from supply_agent.mcp.server import current_caller


def test_a_tokens_file_maps_callers_and_the_env_token_is_the_default_callers(tmp_path: Path) -> None:
    f = tmp_path / "tokens.yaml"
    f.write_text("holmes: tok-holmes-0123456789\nkagent: tok-kagent-0123456789\n")
    assert _tokens(f, "claude", "tok-claude-0123456789") == {
        "holmes": "tok-holmes-0123456789",
        "kagent": "tok-kagent-0123456789",
        "claude": "tok-claude-0123456789",
    }
    assert _tokens(None, "claude", "") == {}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("holmes: short\n", "16 characters"),
        ("a|b: tok-0123456789abcdef\n", "caller name"),
        ("- tok-0123456789abcdef\n", "mapping"),
        ("x: tok-0123456789abcdef\ny: tok-0123456789abcdef\n", "share a token"),
        ("x: [unclosed\n", "cannot read"),
    ],
)
def test_a_bad_tokens_file_is_refused_saying_why(tmp_path: Path, text: str, why: str) -> None:
    f = tmp_path / "tokens.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=why) as err:
        _tokens(f, "claude", "")
    assert str(f) in str(err.value)


def _call(app: Any, authorization: bytes | None) -> tuple[int, str | None]:
    seen: dict[str, Any] = {}

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen["caller"] = current_caller.get()
        await send({"type": "http.response.start", "status": 200, "headers": []})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"authorization", authorization)] if authorization is not None else []
    asyncio.run(bearer(inner, app)({"type": "http", "headers": headers}, None, send))
    return sent[0]["status"], seen.get("caller")


def test_each_token_names_its_caller_and_no_token_is_401() -> None:
    tokens = {"holmes": "tok-holmes-0123456789", "kagent": "tok-kagent-0123456789"}
    assert _call(tokens, b"Bearer tok-holmes-0123456789") == (200, "holmes")
    assert _call(tokens, b"Bearer tok-kagent-0123456789") == (200, "kagent")
    assert _call(tokens, b"Bearer tok-kagent-012345678") == (401, None)
    assert _call(tokens, None) == (401, None)
    assert current_caller.get() is None  # set for the request only
