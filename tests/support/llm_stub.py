"""A STUB LLM provider for tests: not Anthropic, not OpenAI, no model behind it.

A starlette app on uvicorn in a background thread, on 127.0.0.1 and a free port. It serves the two
endpoints the real SDKs call:

* ``POST /v1/messages``: an Anthropic Messages response (a ``tool_use`` content block);
* ``POST /v1/chat/completions``: an OpenAI Chat Completions response (``tool_calls``);

answering each request with the next scripted response (a JSON body, or an HTTP error with the
provider's error JSON), and recording every request (path, headers, raw body, parsed JSON) so tests can
assert what the SDK actually sent. Every response carries the header ``x-stub: llm``.

Use ``base_url=stub.url`` for the anthropic SDK (it posts to ``/v1/messages``) and
``base_url=stub.url + "/v1"`` for the openai SDK.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from evals.loopback import LoopbackServer

STUB_HEADER = {"x-stub": "llm"}
_ids = itertools.count(1)


@dataclass(frozen=True)
class StubResponse:
    """One scripted answer: a status, a JSON body, extra headers, and a delay before answering."""

    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]  # lower-cased names
    raw: bytes
    json: Any


# -- response builders -------------------------------------------------------------------------------
def anthropic_tool_use(
    name: str,
    input: dict[str, Any],
    usage: dict[str, int] | None = None,
    model: str | None = None,
) -> StubResponse:
    """A Messages API answer with one ``tool_use`` block (``model`` None: the request's model)."""
    n = next(_ids)
    return StubResponse(
        {
            "id": f"msg_stub_{n}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "tool_use", "id": f"toolu_stub_{n}", "name": name, "input": input}],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 100,
                "output_tokens": 20,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
                **(usage or {}),
            },
        }
    )


def anthropic_text(text: str, usage: dict[str, int] | None = None) -> StubResponse:
    """A Messages API answer with prose only, no tool call."""
    n = next(_ids)
    return StubResponse(
        {
            "id": f"msg_stub_{n}",
            "type": "message",
            "role": "assistant",
            "model": None,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 20, **(usage or {})},
        }
    )


def openai_tool_call(
    name: str,
    arguments: dict[str, Any] | str,
    usage: dict[str, Any] | None = None,
    model: str | None = None,
) -> StubResponse:
    """A Chat Completions answer with one function tool call; a str ``arguments`` is sent as is (so a
    test can send bad JSON)."""
    n = next(_ids)
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    u: dict[str, Any] = {"prompt_tokens": 100, "completion_tokens": 20, **(usage or {})}
    u.setdefault("total_tokens", u["prompt_tokens"] + u["completion_tokens"])
    return StubResponse(
        {
            "id": f"chatcmpl-stub-{n}",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "logprobs": None,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "refusal": None,
                        "tool_calls": [
                            {
                                "id": f"call_stub_{n}",
                                "type": "function",
                                "function": {"name": name, "arguments": args},
                            }
                        ],
                    },
                }
            ],
            "usage": u,
        }
    )


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str = "stub error", retry_after: str | None = None) -> StubResponse:
    """An Anthropic error response (``{"type": "error", "error": {...}}``)."""
    kind = _ANTHROPIC_ERRORS.get(status, "api_error")
    headers = {"retry-after": retry_after} if retry_after else {}
    return StubResponse({"type": "error", "error": {"type": kind, "message": message}}, status, headers)


def openai_error(status: int, message: str = "stub error", retry_after: str | None = None) -> StubResponse:
    """An OpenAI error response (``{"error": {...}}``)."""
    kind = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(status, "server_error")
    headers = {"retry-after": retry_after} if retry_after else {}
    body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return StubResponse(body, status, headers)


# -- the server --------------------------------------------------------------------------------------
class LlmStub:
    """The stub server as a context manager: ``with LlmStub() as stub: ... stub.url ...``."""

    def __init__(self, responses: Iterable[StubResponse] = ()) -> None:
        self.responses: deque[StubResponse] = deque(responses)
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(
            Starlette(
                routes=[
                    Route("/v1/messages", self._handle, methods=["POST"]),
                    Route("/v1/chat/completions", self._handle, methods=["POST"]),
                ]
            ),
            "llm-stub",
        )
        self.port, self.url = self._server.port, self._server.url

    def script(self, *responses: StubResponse) -> None:
        """Queue more answers."""
        with self._lock:
            self.responses.extend(responses)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    async def _handle(self, request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except json.JSONDecodeError:
            body = None
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    request.url.path, {k.lower(): v for k, v in request.headers.items()}, raw, body
                )
            )
            scripted = self.responses.popleft() if self.responses else None
        if scripted is None:
            error = {"type": "invalid_request_error", "message": "LLM stub: no scripted response left"}
            return JSONResponse({"type": "error", "error": error}, 400, headers=STUB_HEADER)
        if scripted.delay_s:
            await asyncio.sleep(scripted.delay_s)
        out = dict(scripted.body)
        if scripted.status == 200 and out.get("model") is None and isinstance(body, dict):
            out["model"] = body.get("model", "stub-model")
        return JSONResponse(out, scripted.status, headers={**STUB_HEADER, **scripted.headers})

    def __enter__(self) -> LlmStub:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()
