"""The console: read-only pages of what the agent saw, decided and did, and how much budget is left.

Served under ``/console`` by ``serve`` and by ``supply-agent console --store URL``. Server-rendered
(Jinja2, autoescaped), with htmx (vendored) for the live parts: the containment view is pushed as
server-sent events and swapped in without a reload. No inline script or style anywhere, and the
Content-Security-Policy says so, so a string from the cluster, a log, an alert or an LLM that slips
past the escaping still cannot run.

Authentication first: a bearer token (``SUPPLY_AGENT_CONSOLE_TOKEN``, sent as ``Authorization: Bearer``
or by logging in at ``/console/login``, which sets an HttpOnly, SameSite=Strict cookie), or the identity
header of an authenticating proxy (``SUPPLY_AGENT_CONSOLE_PROXY_HEADER``). Neither set: the console is off.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
import orjson
import structlog
from markupsafe import Markup
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from supply_agent.policy.gate import lookback
from supply_agent.policy.limits import GlobalLimits
from supply_agent.policy.world import WorldView
from supply_agent.settings import Settings
from supply_agent.web.containment import containment
from supply_agent.web.picture import edges_of, entity_svg
from supply_agent.web.queries import ConsoleReads, IncidentFilter

log = structlog.get_logger("supply_agent.web")

HERE = Path(__file__).parent
COOKIE = "supply_agent_console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# Bidirectional overrides and isolates (Trojan Source, CVE-2021-42574) and other invisible format
# characters: shown as their code point, never obeyed.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\u200b-\u200d\u2060\ufeff]")
LONG = 400  # characters shown of one untrusted string before it is folded away


def untrusted(value: Any, limit: int = LONG) -> Markup:
    """Text that came from outside (the cluster, logs, alerts, an LLM): escaped, its invisible and
    direction-changing characters made visible, and a long one folded under a <details>."""
    text = "" if value is None else str(value)
    shown = html.escape(text, quote=True)
    shown = _BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>".replace("<", "&lt;").replace(">", "&gt;"), shown)
    if len(text) <= limit:
        return Markup(f'<span class="u">{shown}</span>')
    head = html.escape(text[:limit], quote=True)
    head = _BIDI.sub(lambda m: f"&lt;U+{ord(m.group()):04X}&gt;", head)
    return Markup(
        f'<span class="u">{head}</span><details class="more"><summary>{len(text):,} characters: '
        f'show all</summary><span class="u">{shown}</span></details>'
    )


def safe_url(value: Any) -> str | None:
    """An http(s) URL fit for an href; anything else (``javascript:``, ``data:``, relative) is None."""
    text = str(value or "").strip()
    if re.match(r"^https?://[^\s\"'<>]+$", text, re.IGNORECASE) and not _BIDI.search(text):
        return text
    return None


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every {{ }} escaped; untrusted() adds the bidi and length handling
        undefined=jinja2.StrictUndefined,
    )
    env.filters["u"] = untrusted
    env.filters["when"] = _when
    env.filters["safe_url"] = safe_url
    env.filters["json"] = lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2, default=str).decode()
    return env


class Console:
    """The console's routes over ``reads``. ``world`` and ``latches`` read the cluster (None: a store
    alone, as ``supply-agent console --store`` serves it); ``limits`` are the playbooks'."""

    def __init__(
        self,
        settings: Settings,
        reads: ConsoleReads,
        limits: GlobalLimits,
        *,
        world: Callable[[], WorldView] | None = None,
        latches: Callable[[], dict[str, tuple[bool, str]]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        evals_dir: Path | None = None,
        push_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.reads = reads
        self.limits = limits
        self.world = world
        self.latches = latches
        self.clock = clock
        self.evals_dir = evals_dir
        self.push_s = push_s
        self._shared: tuple[float, Any] = (0.0, None)
        self._shared_lock = threading.Lock()
        self.env = _templates()

    @property
    def enabled(self) -> bool:
        return self.settings.console_token is not None or bool(self.settings.console_proxy_header)

    # -- authentication --------------------------------------------------------------------------
    def _cookie_value(self) -> str:
        token = self.settings.console_token
        assert token is not None
        # The cookie holds a digest of the token, not the token: a leaked cookie is not the secret.
        return hmac.new(token.get_secret_value().encode(), b"console-session", hashlib.sha256).hexdigest()

    def who(self, request: Request) -> str | None:
        """The signed-in person, or None."""
        header = self.settings.console_proxy_header
        if header and (name := request.headers.get(header, "").strip()):
            return name[:200]
        token = self.settings.console_token
        if token is None:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.get_secret_value().encode()
        ):
            return "token"
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self._cookie_value().encode()):
            return "token"
        return None

    def _page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        body = self.env.get_template(name).render(**context)
        return HTMLResponse(body, status, headers=SECURITY_HEADERS)

    def _guard(self, request: Request) -> Response | str:
        if not self.enabled:
            return HTMLResponse(
                "the console is off: set SUPPLY_AGENT_CONSOLE_TOKEN or SUPPLY_AGENT_CONSOLE_PROXY_HEADER",
                404,
                headers=SECURITY_HEADERS,
            )
        who = self.who(request)
        if who is None:
            if "text/html" in request.headers.get("accept", "") and self.settings.console_token is not None:
                return RedirectResponse("/console/login", 303, headers=SECURITY_HEADERS)
            return Response("sign in first", 401, {"WWW-Authenticate": "Bearer", **SECURITY_HEADERS})
        return who

    # -- pages -----------------------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        if not self.enabled or self.settings.console_token is None:
            return HTMLResponse("no console token is configured", 404, headers=SECURITY_HEADERS)
        if request.method == "POST":
            # One urlencoded field: read here, without a multipart parser.
            raw = (await request.body())[:4096].decode("utf-8", "replace")
            given = (parse_qs(raw).get("token") or [""])[0]
            if hmac.compare_digest(given.encode(), self.settings.console_token.get_secret_value().encode()):
                resp = RedirectResponse("/console/", 303, headers=SECURITY_HEADERS)
                resp.set_cookie(
                    COOKIE,
                    self._cookie_value(),
                    httponly=True,
                    samesite="strict",
                    secure=request.url.scheme == "https",
                    path="/console",
                    max_age=12 * 3600,
                )
                return resp
            log.warning("console sign-in refused", client=request.client.host if request.client else "")
            return self._page("login.html", 401, error="that token is not the console's", who=None)
        return self._page("login.html", error=None, who=None)

    async def incidents(self, request: Request) -> Response:
        who = self._guard(request)
        if isinstance(who, Response):
            return who
        try:
            f = IncidentFilter.model_validate(dict(request.query_params))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return self._page("error.html", 400, who=who, error=f"bad filter: {problems}")
        t0 = time.perf_counter()
        try:
            page = await asyncio.to_thread(self.reads.incidents, f)
        except ValueError as exc:
            return self._page("error.html", 400, who=who, error=str(exc))
        return self._page(
            "incidents.html",
            who=who,
            f=f,
            page=page,
            took_ms=(time.perf_counter() - t0) * 1000,
            older=f"?{f.query_string(cursor=page.next_cursor)}" if page.next_cursor else None,
        )

    async def incident(self, request: Request) -> Response:
        who = self._guard(request)
        if isinstance(who, Response):
            return who
        iid = request.path_params["incident_id"]
        detail = await asyncio.to_thread(self.reads.incident, iid)
        if detail is None:
            return self._page("error.html", 404, who=who, error=f"no incident {iid}")
        pd = None
        if iid.startswith("pd-"):
            pd = (
                self.settings.console_pagerduty_url.rstrip("/")
                + "/"
                + quote(iid.removeprefix("pd-"), safe="")
            )
        slack = {}
        base = safe_url(self.settings.console_slack_url or "")
        for p in detail.prompts:
            if base and p.channel and p.ts:
                slack[p.id] = f"{base.rstrip('/')}/archives/{quote(p.channel)}/p{p.ts.replace('.', '')}"
        labels = [a.body.get("labels") or {} for a in detail.alerts if isinstance(a.body, dict)]
        decisions = [
            e.data.get("targets") or {}
            for e in detail.timeline
            if e.kind == "decision" and isinstance(e.data, dict)
        ]
        picture = entity_svg(detail.entities, edges_of(labels, decisions))
        return self._page(
            "incident.html", who=who, d=detail, pd=pd, slack=slack, now=self.clock(), picture=picture
        )

    def _containment(self) -> Any:
        """The containment view, read at most once per ``push_s`` whoever asks: every open page's
        stream shares one reading (the world, the latches and the day's audit rows), so the cost on the
        cluster and the stores does not grow with the people watching."""
        with self._shared_lock:
            at, ctx = self._shared
            if ctx is not None and time.monotonic() - at < self.push_s:
                return ctx
            ctx = self._read_containment()
            self._shared = (time.monotonic(), ctx)
            return ctx

    def _read_containment(self) -> Any:
        now = self.clock()
        audit = self.reads.audit_since(now - lookback(self.limits))
        out = self.reads.nodes_out()
        world = latches = None
        if self.world is not None:
            try:
                world = self.world()
            except Exception as exc:  # the cluster out of reach: the store's part is still shown
                log.warning("the console cannot read the world", error=str(exc)[:300])
        if self.latches is not None:
            try:
                latches = self.latches()
            except Exception as exc:
                log.warning("the console cannot read the latches", error=str(exc)[:300])
        view = containment(self.limits, audit, now, world, latches, out)
        jobs, events = self.reads.dead_letters()
        return {"c": view, "prompts": self.reads.pending_prompts(), "dead_jobs": jobs, "dead_events": events}

    async def containment(self, request: Request) -> Response:
        who = self._guard(request)
        if isinstance(who, Response):
            return who
        ctx = await asyncio.to_thread(self._containment)
        return self._page("containment.html", who=who, push_s=self.push_s, **ctx)

    async def containment_stream(self, request: Request) -> Response:
        """Server-sent events: the containment view's body, again every ``push_s`` seconds while it changes."""
        who = self._guard(request)
        if isinstance(who, Response):
            return who
        template = self.env.get_template("containment_body.html")

        async def events() -> AsyncIterator[bytes]:
            last = ""
            while not await request.is_disconnected():
                ctx = await asyncio.to_thread(self._containment)
                body = template.render(**ctx)
                if body != last:
                    last = body
                    data = "".join(f"data: {line}\n" for line in body.splitlines() or [""])
                    yield f"event: containment\n{data}\n".encode()
                else:
                    yield b": unchanged\n\n"  # a comment keeps proxies from closing an idle stream
                await asyncio.sleep(self.push_s)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"},
        )

    async def evals(self, request: Request) -> Response:
        who = self._guard(request)
        if isinstance(who, Response):
            return who
        from supply_agent.web.evals import eval_history

        history = await asyncio.to_thread(eval_history, self.evals_dir)
        return self._page("evals.html", who=who, h=history)

    async def eval_file(self, request: Request) -> Response:
        who = self._guard(request)
        if isinstance(who, Response):
            return who
        from supply_agent.web.evals import report_file

        path = report_file(self.evals_dir, request.path_params["name"])
        if path is None:
            return Response("no such report file", 404, headers=SECURITY_HEADERS)
        return Response(path.read_bytes(), media_type="image/png", headers=SECURITY_HEADERS)

    async def root(self, request: Request) -> Response:
        return RedirectResponse("/console/", 307)

    def routes(self) -> list[Any]:
        return [
            Route("/", self.incidents),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/incidents/{incident_id}", self.incident),
            Route("/containment", self.containment),
            Route("/containment/stream", self.containment_stream),
            Route("/evals", self.evals),
            Route("/evals/{name:path}", self.eval_file),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]


def console_app(console: Console) -> Starlette:
    """The console as an ASGI app, to mount at ``/console``."""
    return Starlette(routes=console.routes())
