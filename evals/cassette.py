"""Cassettes: record an LLM planner's model exchanges once, replay them offline and deterministically.

The planner keeps its real SDK client (anthropic or openai); only its base URL changes, to a small HTTP
proxy on 127.0.0.1 (starlette on uvicorn in a background thread) that serves the two paths the SDKs
call: ``POST /v1/messages`` (anthropic, ``base_url=<proxy>``) and ``POST /v1/chat/completions``
(openai, ``base_url=<proxy>/v1``). One cassette holds both, exchanges in the order they were made (the
router may use either provider).

* **record**: each request goes upstream (the real API, or the base URL in settings) with the headers
  the SDK sent, so the API key passes through in memory only; the answer goes back to the SDK and the
  exchange ``{path, request, status, response}`` (parsed JSON bodies, never a header) is appended. At
  the end the cassette is written atomically, next to the incident. Any API key in settings is
  redacted from the file too, in case a provider echoes it in an error message.
* **replay**: offline, nothing is forwarded (the planner gets dummy keys). The n-th request must match
  the n-th exchange: the same path and the same request body compared canonically (JSON with sorted
  keys). Nothing in the body is ignored: the bodies the planners send hold no volatile field (no
  request id, no timestamp other than the simulated clock, which is deterministic); the volatile parts
  of a request (``x-stainless-*`` headers with the retry count, OS and timeout; the user agent) are
  headers, which are never compared. On a match the recorded status and body are returned. On a
  mismatch, or once the cassette has run out, the proxy answers HTTP 400 with the provider's error
  JSON (``cassette mismatch at exchange N: ...``), which the SDK raises and the planner does not
  retry (it retries only 429, 5xx and connection errors, and the SDKs' own retries are off), so the
  planner fails and the agent escalates; the status becomes ``stale`` with the difference named. After
  a mismatch every later request is refused too: a stale cassette is never partly used.

Retries: a transient error recorded (429, 5xx) is replayed as recorded, and the planner retries as it
did when recording, with the same number of attempts but no waiting. Exchanges are numbered from 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field, SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from evals.loopback import LoopbackServer
from supply_agent.mind.planners.base import Planner
from supply_agent.mind.planners.factory import make_planner
from supply_agent.mind.planners.llm import LlmPlanner
from supply_agent.mind.planners.router import RouterPlanner
from supply_agent.settings import Settings

__all__ = [
    "ANTHROPIC_PATH",
    "FORMAT",
    "OPENAI_PATH",
    "CassetteError",
    "CassetteMissing",
    "CassetteProxy",
    "CassetteStatus",
    "Exchange",
    "canonical",
    "cassette_path",
    "diff",
    "llm_planner",
    "load_cassette",
]

FORMAT = "supply-agent-cassette/v1"
ANTHROPIC_PATH = "/v1/messages"
OPENAI_PATH = "/v1/chat/completions"
DEFAULT_ANTHROPIC_URL = "https://api.anthropic.com"  # the SDK appends /v1/messages
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"  # the SDK appends /chat/completions
REPLAY_KEY = "sk-replay"  # what the SDKs send in replay: the proxy never forwards anything then
LLM_PLANNERS = ("anthropic", "openai", "router")
REDACTED = "[redacted]"

# Not forwarded upstream: hop-by-hop headers, and those httpx sets itself for the new connection.
_NOT_FORWARDED = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "accept-encoding",  # httpx decodes what it asked for; the SDK gets plain JSON back
    }
)
# Passed back to the SDK from upstream in record mode (never written to the cassette).
_PASSED_BACK = ("retry-after", "request-id", "x-request-id")


class CassetteError(RuntimeError):
    """A cassette that cannot be used: unreadable, of another format, or a recording that cannot start."""


class CassetteMissing(CassetteError):
    """Replay asked for a cassette that was never recorded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"no cassette at {path}: record one with `supply-agent eval --record` and an API key "
            "(SUPPLY_AGENT_ANTHROPIC_API_KEY or SUPPLY_AGENT_OPENAI_API_KEY)"
        )


class CassetteStatus(BaseModel):
    """How the cassette fared; final once :func:`llm_planner` exits.

    ``exchanges``: recorded (record) or replayed with a match (replay). ``problems``: why it is stale,
    or what went wrong while recording (each names its exchange)."""

    state: Literal["recorded", "replayed", "stale", "missing"]
    exchanges: int = 0
    problems: list[str] = Field(default_factory=list)


class Exchange(BaseModel):
    """One model call: where it went, the JSON the SDK sent, and what came back."""

    path: str
    request: Any
    status: int
    response: Any  # the JSON body (a str when the provider answered something else)


def cassette_path(incident_file: Path, planner: str) -> Path:
    """Next to the incident: ``<dir>/<stem>.<planner>.cassette.json``."""
    return incident_file.with_name(f"{incident_file.stem}.{planner}.cassette.json")


def canonical(body: Any) -> str:
    """The form requests are compared in: JSON with sorted keys, no whitespace."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def load_cassette(path: Path) -> tuple[dict[str, Any], list[Exchange]]:
    """The cassette's header fields and its exchanges; :class:`CassetteMissing` when there is no file,
    :class:`CassetteError` when it is not a readable cassette of this format."""
    if not path.is_file():
        raise CassetteMissing(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CassetteError(f"{path}: not a readable cassette: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CassetteError(f"{path}: not a {FORMAT} cassette (format: {found!r}); record it again")
    raw = data.get("exchanges")
    if not isinstance(raw, list):
        raise CassetteError(f"{path}: 'exchanges' must be a list")
    try:
        exchanges = [Exchange.model_validate(e) for e in raw]
    except ValueError as exc:
        raise CassetteError(f"{path}: a bad exchange: {exc}") from exc
    return {k: v for k, v in data.items() if k != "exchanges"}, exchanges


# -- how a request differs from its recording ------------------------------------------------------------
def _snippet(text: str, at: int, width: int = 40) -> str:
    start = max(0, at - width // 2)
    out = text[start : start + width]
    return ("…" if start else "") + out + ("…" if start + width < len(text) else "")


def _text_diff(recorded: str, got: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(recorded, got, strict=False)) if a != b), None)
    if at is None:
        at = min(len(recorded), len(got))
    return f"at character {at}: recorded {_snippet(recorded, at)!r}, now {_snippet(got, at)!r}"


def _message_text(message: Any) -> str:
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return str(message["content"])
    return canonical(message)


def diff(recorded: Exchange, path: str, body: Any) -> str:
    """A short account of how a request differs from the recorded one: the path, the top-level fields
    that differ, and for ``messages`` the first differing message and where it first differs."""
    if path != recorded.path:
        return f"the request went to {path}, the recorded one to {recorded.path}"
    before, after = recorded.request, body
    if not isinstance(before, dict) or not isinstance(after, dict):
        return "the request body differs"
    fields = sorted(k for k in set(before) & set(after) if canonical(before[k]) != canonical(after[k]))
    parts = []
    added = sorted(set(after) - set(before))
    dropped = sorted(set(before) - set(after))
    if added:
        parts.append(f"new fields {', '.join(added)}")
    if dropped:
        parts.append(f"fields no longer sent {', '.join(dropped)}")
    if fields:
        parts.append(f"fields differ: {', '.join(fields)}")
    old, new = before.get("messages"), after.get("messages")
    if "messages" in fields and isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            if i >= len(old):
                parts.append(f"message {i + 1} is new")
            elif i >= len(new):
                parts.append(f"message {i + 1} is no longer sent")
            elif canonical(old[i]) != canonical(new[i]):
                role = new[i].get("role", "?") if isinstance(new[i], dict) else "?"
                parts.append(
                    f"message {i + 1} ({role}) differs {_text_diff(_message_text(old[i]), _message_text(new[i]))}"
                )
            else:
                continue
            break
    return "; ".join(parts) or "the request body differs"


def _error_body(path: str, message: str) -> dict[str, Any]:
    """An error in the provider's shape, so its SDK raises it as an API error (status 400: not retried)."""
    if path == ANTHROPIC_PATH:
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "cassette"}}


# -- the proxy -----------------------------------------------------------------------------------------------
class CassetteProxy:
    """The recording or replaying proxy, as a context manager (``with CassetteProxy(...) as proxy``).

    ``upstreams`` (record): the base URL per path, e.g. ``{"/v1/messages": "https://api.anthropic.com"}``
    (the path is appended; for openai the base ends in ``/v1`` and ``/chat/completions`` is appended)."""

    def __init__(
        self,
        mode: Literal["record", "replay"],
        *,
        exchanges: list[Exchange] | None = None,
        upstreams: dict[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.mode = mode
        self.exchanges: list[Exchange] = list(exchanges or [])
        self.upstreams = dict(upstreams or {})
        self.timeout_s = timeout_s
        self.cursor = 0  # replay: the next exchange to match
        self.mismatches: list[str] = []
        self.refused_after_mismatch = 0
        self.record_problems: list[str] = []
        self.auth_refused = False
        self._lock = threading.Lock()
        app = Starlette(
            routes=[
                Route(ANTHROPIC_PATH, self._handle, methods=["POST"]),
                Route(OPENAI_PATH, self._handle, methods=["POST"]),
            ]
        )
        self._server = LoopbackServer(app, "cassette-proxy")
        self.port, self.url = self._server.port, self._server.url

    # -- serving ---------------------------------------------------------------------------------------
    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = raw.decode("utf-8", "replace")
        if self.mode == "replay":
            return self._replay(path, body)
        return await self._record(request, path, raw, body)

    def _replay(self, path: str, body: Any) -> Response:
        with self._lock:
            n = self.cursor + 1
            if self.mismatches:
                self.refused_after_mismatch += 1
                message = f"cassette is stale since {self.mismatches[0]}"
                return JSONResponse(_error_body(path, message), 400)
            if self.cursor >= len(self.exchanges):
                problem = (
                    f"cassette mismatch at exchange {n}: the cassette holds {len(self.exchanges)} "
                    f"exchange(s) and this request to {path} is new"
                )
            else:
                recorded = self.exchanges[self.cursor]
                if recorded.path == path and canonical(recorded.request) == canonical(body):
                    self.cursor += 1
                    if isinstance(recorded.response, str):
                        return PlainTextResponse(recorded.response, recorded.status)
                    return JSONResponse(recorded.response, recorded.status)
                problem = f"cassette mismatch at exchange {n}: {diff(recorded, path, body)}"
            self.mismatches.append(problem)
        return JSONResponse(_error_body(path, problem), 400)

    async def _record(self, request: Request, path: str, raw: bytes, body: Any) -> Response:
        base = self.upstreams.get(path)
        if base is None:  # pragma: no cover - the routes are exactly the upstreams' paths
            return JSONResponse(_error_body(path, f"cassette proxy: no upstream for {path}"), 404)
        url = base.rstrip("/") + (path if path == ANTHROPIC_PATH else path.removeprefix("/v1"))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        passed: dict[str, str] = {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                upstream = await client.post(url, content=raw, headers=headers)
        except httpx.HTTPError as exc:
            status = 502
            message = f"cassette proxy: the upstream did not answer: {type(exc).__name__}"
            response: Any = _error_body(path, message)
            problem = message
        else:
            status = upstream.status_code
            try:
                response = upstream.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                response = upstream.text
            passed = {k: upstream.headers[k] for k in _PASSED_BACK if k in upstream.headers}
            problem = f"the upstream refused the API key (HTTP {status})" if status in (401, 403) else ""
        with self._lock:
            self.exchanges.append(Exchange(path=path, request=body, status=status, response=response))
            if problem:
                self.record_problems.append(f"exchange {len(self.exchanges)}: {problem}")
                self.auth_refused |= status in (401, 403)
        if isinstance(response, str):
            return PlainTextResponse(response, status, headers=passed)
        return JSONResponse(response, status, headers=passed)

    # -- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> CassetteProxy:
        try:
            self._server.start()
        except RuntimeError as exc:
            raise CassetteError(str(exc)) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()


# -- writing -------------------------------------------------------------------------------------------------
def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if len(secret) >= 8:  # a short "key" would redact ordinary words
            text = text.replace(secret, REDACTED)
    return text


def _secrets(settings: Settings) -> list[str]:
    keys = (settings.anthropic_api_key, settings.openai_api_key)
    return [k.get_secret_value().strip() for k in keys if k is not None and k.get_secret_value().strip()]


def _cassette_text(planner: str, incident_id: str, exchanges: list[Exchange], secrets: list[str]) -> str:
    data = {
        "format": FORMAT,
        "planner": planner,
        "incident": incident_id,
        "exchanges": [e.model_dump(mode="json") for e in exchanges],
    }
    return _redact(json.dumps(data, indent=2, ensure_ascii=False) + "\n", secrets)


# -- the planner behind a cassette ---------------------------------------------------------------------------
def _provider(planner: str, settings: Settings) -> Literal["anthropic", "openai"]:
    if planner == "router":
        return settings.router_llm
    return "anthropic" if planner == "anthropic" else "openai"


def _require_key(planner: str, settings: Settings) -> None:
    provider = _provider(planner, settings)
    key = settings.anthropic_api_key if provider == "anthropic" else settings.openai_api_key
    if key is None or not key.get_secret_value().strip():
        raise CassetteError(
            f"recording a cassette for the {planner} planner needs a {provider} API key: set "
            f"SUPPLY_AGENT_{provider.upper()}_API_KEY (replaying a cassette needs none)"
        )


def _no_waits(planner: Planner) -> None:
    """Replay: the same number of attempts as when recording (so recorded retries line up), no waiting."""
    inner = planner.llm if isinstance(planner, RouterPlanner) else planner
    if isinstance(inner, LlmPlanner):
        inner.retry = dataclasses.replace(inner.retry, wait_multiplier=0.0, wait_max=0.0)


@contextlib.contextmanager
def llm_planner(
    planner: str, settings: Settings, cassette: Path, record: bool, incident_id: str = ""
) -> Iterator[tuple[Planner, CassetteStatus]]:
    """The LLM planner ``planner`` (anthropic, openai or router) behind a cassette proxy, and the
    cassette's status, final once the context exits.

    ``record``: the planner talks to the real API (or ``settings``' base URLs) through the proxy, and
    on a clean exit the cassette is written (an empty one too: the run needed no model call, e.g. the
    router kept to the runbook), unless the upstream refused the API key; after an exception nothing is
    written and an existing cassette stays. Raises :class:`CassetteError` without the provider's key.

    Replay: offline, with dummy keys; the status is ``stale`` when a request did not match its exchange
    (the planner then failed) or recorded exchanges were left unused, else ``replayed``. Raises
    :class:`CassetteMissing` when there is no cassette, :class:`CassetteError` for an unreadable one.
    ``runbook`` (or an unknown name) raises ValueError: it needs no cassette."""
    if planner == "runbook":
        raise ValueError("the runbook planner makes no model calls: it needs no cassette")
    if planner not in LLM_PLANNERS:
        raise ValueError(f"unknown planner {planner!r}: a cassette is for anthropic, openai or router")
    status: CassetteStatus
    header: dict[str, Any] = {}
    if record:
        _require_key(planner, settings)
        proxy = CassetteProxy(
            "record",
            upstreams={
                ANTHROPIC_PATH: settings.anthropic_base_url or DEFAULT_ANTHROPIC_URL,
                OPENAI_PATH: settings.openai_base_url or DEFAULT_OPENAI_URL,
            },
            timeout_s=settings.llm_timeout_s,
        )
        status = CassetteStatus(state="recorded")
        update: dict[str, Any] = {}
    else:
        header, exchanges = load_cassette(cassette)
        proxy = CassetteProxy("replay", exchanges=exchanges)
        status = CassetteStatus(state="replayed")
        if header.get("planner") not in (None, planner):
            status.problems.append(f"the cassette was recorded for the {header['planner']} planner")
        if incident_id and header.get("incident") not in (None, "", incident_id):
            status.problems.append(f"the cassette was recorded for incident {header['incident']}")
        update = {"anthropic_api_key": SecretStr(REPLAY_KEY), "openai_api_key": SecretStr(REPLAY_KEY)}
    with proxy:
        update |= {"anthropic_base_url": proxy.url, "openai_base_url": f"{proxy.url}/v1"}
        llm = make_planner(planner, settings.model_copy(update=update))
        if not record:
            _no_waits(llm)
        clean = False
        try:
            yield llm, status
            clean = True
        finally:
            with proxy._lock:
                recorded = list(proxy.exchanges)
                cursor = proxy.cursor
                mismatches = list(proxy.mismatches)
                refused = proxy.refused_after_mismatch
            if record:
                status.exchanges = len(recorded)
                status.problems.extend(proxy.record_problems)
            else:
                status.exchanges = cursor
                status.problems.extend(mismatches)
                if refused:
                    status.problems.append(f"{refused} later request(s) refused after the mismatch")
                if not mismatches and cursor < len(recorded):
                    left = len(recorded) - cursor
                    status.problems.append(
                        f"{left} recorded exchange(s) not requested, from exchange {cursor + 1} on"
                    )
                if status.problems:
                    status.state = "stale"
    if record and clean:
        if proxy.auth_refused:
            status.problems.append(f"cassette not written: the upstream refused the API key ({cassette})")
        else:
            _write_atomically(cassette, _cassette_text(planner, incident_id, recorded, _secrets(settings)))
