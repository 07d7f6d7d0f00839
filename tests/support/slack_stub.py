"""A STUB of Slack's Web API for tests: a fake standing in for Slack, which cannot be reached here.

A real HTTP server (``http.server.ThreadingHTTPServer`` in a thread) on 127.0.0.1 and a free port;
the real ``slack_sdk.WebClient`` talks to it with ``base_url=stub.url`` (which ends in ``/api/``).
It checks ``Authorization: Bearer <token>`` (else ``invalid_auth``), records every call with its
arguments parsed from the JSON, form or query encoding the SDK used, and implements
``chat.postMessage``, ``chat.update``, ``usergroups.users.list`` and ``auth.test`` with Slack's
response shapes and error codes. ``rate_limit_next(n)`` answers the next ``n`` calls with HTTP 429
and ``Retry-After: 0``. Every response carries the header ``x-stub: slack``.

Also here: `click_body` and `block_actions_payload`, which build an interaction request as Slack
sends it (a form body with one ``payload`` field holding JSON).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

_BASE_TS = 1_700_000_000_000_000  # microseconds; each message's ts is 100 us after the previous one


@dataclass(frozen=True)
class Call:
    """One request the stub received: the API method, its arguments, and how it was answered."""

    method: str
    args: dict[str, Any]
    token: str | None = None  # the bearer token sent, if any
    status: int = 200
    ok: bool = True


class SlackStub:
    """A fake Slack Web API on a loopback port; use as a context manager."""

    def __init__(self, token: str = "xoxb-test", groups: dict[str, list[str]] | None = None) -> None:
        self.token = token
        self.groups: dict[str, list[str]] = dict(groups or {})
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, ts) -> message
        self._lock = threading.Lock()
        self._seq = 0
        self._rate_limited = 0
        self._retry_after = "0"
        self._failing = 0
        self._fail_status = 500
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> SlackStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stub._handle(self)

            def do_GET(self) -> None:
                stub._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # a short poll interval: shutdown() waits for the serving loop to notice it
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="slack-stub", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None, "use SlackStub as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/api/"

    # -- test helpers --------------------------------------------------------------------------------
    def rate_limit_next(self, n: int, retry_after: str = "0") -> None:
        """Answer the next ``n`` calls with HTTP 429 and ``Retry-After``."""
        with self._lock:
            self._rate_limited = n
            self._retry_after = retry_after

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` calls with an HTTP error (Slack's own outage)."""
        with self._lock:
            self._failing = n
            self._fail_status = status

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def posted(self) -> list[dict[str, Any]]:
        """The arguments of every ``chat.postMessage`` that posted a message."""
        return [c.args for c in self.calls_to("chat.postMessage") if c.ok]

    def updates(self) -> list[dict[str, Any]]:
        """The arguments of every ``chat.update`` that updated a message."""
        return [c.args for c in self.calls_to("chat.update") if c.ok]

    # -- the server ----------------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        if not parts.path.startswith("/api/"):
            self._send(req, 404, {"ok": False, "error": "not_found"})
            return
        method = parts.path[len("/api/") :]
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        args = _parse_args(parts.query, req.headers.get("Content-Type", ""), raw)
        auth = req.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        with self._lock:
            if self._failing > 0:
                self._failing -= 1
                status, body, headers = self._fail_status, {"ok": False, "error": "internal_error"}, {}
            elif self._rate_limited > 0:
                self._rate_limited -= 1
                status, body = 429, {"ok": False, "error": "ratelimited"}
                headers = {"Retry-After": self._retry_after}
            elif token != self.token:
                status, body, headers = 200, {"ok": False, "error": "invalid_auth"}, {}
            else:
                status, body, headers = 200, self._answer(method, args), {}
            self.calls.append(Call(method, args, token, status, bool(body.get("ok"))))
        self._send(req, status, body, headers)

    @staticmethod
    def _send(
        req: BaseHTTPRequestHandler, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json; charset=utf-8")
        req.send_header("Content-Length", str(len(data)))
        req.send_header("x-stub", "slack")
        for name, value in (headers or {}).items():
            req.send_header(name, value)
        req.end_headers()
        req.wfile.write(data)

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Slack's answer to one authenticated call (the lock is held)."""
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://stub.slack.invalid/",
                "team": "Stub Team",
                "user": "supply-agent",
                "team_id": "T0STUB",
                "user_id": "U0STUBBOT",
                "bot_id": "B0STUBBOT",
            }
        if method == "chat.postMessage":
            return self._post(args)
        if method == "chat.update":
            return self._update(args)
        if method == "usergroups.users.list":
            group = args.get("usergroup")
            if not isinstance(group, str) or group not in self.groups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": list(self.groups[group])}
        return {"ok": False, "error": "unknown_method"}

    def _post(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not isinstance(channel, str) or not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if errors := _block_errors(args.get("blocks")):
            return {"ok": False, "error": "invalid_blocks", "errors": errors}
        self._seq += 1
        micros = _BASE_TS + self._seq * 100
        ts = f"{micros // 1_000_000}.{micros % 1_000_000:06d}"
        message = {
            "type": "message",
            "subtype": "bot_message",
            "text": args.get("text", ""),
            "blocks": args.get("blocks", []),
            "user": "U0STUBBOT",
            "bot_id": "B0STUBBOT",
            "ts": ts,
        }
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = args.get("channel"), args.get("ts")
        if not isinstance(channel, str) or not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not isinstance(ts, str) or (channel, ts) not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        if errors := _block_errors(args.get("blocks")):
            return {"ok": False, "error": "invalid_blocks", "errors": errors}
        message = self.messages[(channel, ts)]
        message.update(text=args.get("text", message["text"]), blocks=args.get("blocks", message["blocks"]))
        return {"ok": True, "channel": channel, "ts": ts, "text": message["text"], "message": message}


def _parse_args(query: str, content_type: str, raw: bytes) -> dict[str, Any]:
    args: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    if content_type.startswith("application/json"):
        body = json.loads(raw or b"{}")
        if isinstance(body, dict):
            args.update(body)
    elif content_type.startswith("application/x-www-form-urlencoded"):
        args.update(parse_qsl(raw.decode(), keep_blank_values=True))
    for key in ("blocks", "attachments"):
        # form-encoded calls carry these as JSON strings; Slack decodes them, so the stub does too
        if isinstance(args.get(key), str):
            args[key] = json.loads(args[key])
    return args


def _block_errors(blocks: Any) -> list[str]:
    """The few Block Kit limits worth catching here: counts and text lengths Slack rejects."""
    if blocks is None:
        return []
    if not isinstance(blocks, list):
        return ["blocks must be a list"]
    errors = []
    if len(blocks) > 50:
        errors.append(f"too many blocks: {len(blocks)} > 50")
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or "type" not in block:
            errors.append(f"[{i}] not a block")
            continue
        text = (block.get("text") or {}).get("text", "")
        limit = 150 if block["type"] == "header" else 3000
        if len(text) > limit:
            errors.append(f"[{i}] text longer than {limit}")
        for field in block.get("fields", []):
            if len(field.get("text", "")) > 2000:
                errors.append(f"[{i}] field longer than 2000")
        if len(block.get("fields", [])) > 10:
            errors.append(f"[{i}] more than 10 fields")
        for element in block.get("elements", []):
            if len(str(element.get("value", ""))) > 2000:
                errors.append(f"[{i}] button value longer than 2000")
    return errors


# -- interactions ------------------------------------------------------------------------------------
def click_body(payload: dict[str, Any]) -> bytes:
    """The raw body of an interaction request: form-encoded, one field ``payload`` holding JSON."""
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()


def block_actions_payload(
    user_id: str,
    action_id: str,
    value: str,
    channel: str = "C0APPROVALS",
    message_ts: str = "1700000000.000100",
    user_name: str = "roadrunner",
    block_id: str = "approval",
) -> dict[str, Any]:
    """A ``block_actions`` payload for one button click, shaped as Slack sends it."""
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": "T0STUB"},
        "api_app_id": "A0STUBAPP",
        "token": "verification-token-unused",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": "1700000000.123456.0123456789abcdef0123456789abcdef",
        "team": {"id": "T0STUB", "domain": "stub"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "approvals"},
        "message": {
            "type": "message",
            "subtype": "bot_message",
            "text": "Approval needed",
            "ts": message_ts,
            "bot_id": "B0STUBBOT",
            "blocks": [],
        },
        "state": {"values": {}},
        "response_url": "https://hooks.slack.com/actions/T0STUB/1700000000/stubresponseurl",
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": action_id.capitalize(), "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": "1700000001.000200",
            }
        ],
    }
