"""A STUB of PagerDuty's REST API v2 for tests: a fake that stands in for PagerDuty, because the real
service cannot be reached here. The real ``pagerduty`` client library talks to it over HTTPS.

It is a ``ThreadingHTTPServer`` in a background thread on 127.0.0.1 and a free port, serving HTTPS with
a throwaway CA (the package refuses any base URL that is not ``https://``); pass ``verify=stub.ssl_context``
to the client. It serves only what supply-agent calls:

* ``GET /incidents/{id}/alerts``: ``stub.alerts[id]``, paginated the classic PagerDuty way
  (``limit``/``offset`` in, ``limit``/``offset``/``more``/``total`` out); 404 for an unknown incident;
* ``PUT /incidents/{id}``: body ``{"incident": {...}}``; applies ``status`` and ``escalation_policy``
  to the stored incident and answers ``{"incident": {...}}``;
* ``POST /incidents/{id}/notes``: body ``{"note": {"content": ...}}``; answers ``{"note": {...}}``;
* ``GET /incidents/{id}/notes``: ``{"notes": [{"content": ...}, ...]}``;
* ``GET /users?query=``: users from ``stub.users`` whose email or name contains the query.

Every request needs ``Authorization: Token token=<api_key>`` (else 401) and every write a ``From``
header (else 400), with PagerDuty's error shape ``{"error": {"message", "code", "errors"}}``. Every
request is recorded, failed ones included; ``fail_next`` makes the next requests fail with a status.
"""

from __future__ import annotations

import itertools
import json
import re
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.fleet.tls import make_serving_cert

PAGE_MAX = 100  # PagerDuty caps classic pagination's limit at 100
PAGE_DEFAULT = 25
_INCIDENT = re.compile(r"/incidents/([A-Za-z0-9]+)")
_NOTES = re.compile(r"/incidents/([A-Za-z0-9]+)/notes")
_ALERTS = re.compile(r"/incidents/([A-Za-z0-9]+)/alerts")
_MESSAGES = {
    400: ("Invalid Input Provided", 2001),
    401: ("Unauthorized", 2006),
    404: ("Not Found", 2100),
    429: ("Rate Limit Exceeded", 2020),
}


@dataclass(frozen=True)
class Recorded:
    """One request as the stub received it."""

    method: str
    path: str
    query: dict[str, str]  # the last value of each parameter
    headers: dict[str, str]  # lower-cased names
    json: Any  # the parsed body, None when there was none


def _error(status: int, message: str | None = None, errors: list[str] | None = None) -> dict[str, Any]:
    default, code = _MESSAGES.get(status, ("Internal Server Error", 2000))
    body: dict[str, Any] = {"message": message or default, "code": code}
    if errors:
        body["errors"] = errors
    return {"error": body}


class PagerDutyStub:
    """``with PagerDutyStub(api_key="pd-test-key") as pd:`` then point the client at ``pd.url``."""

    def __init__(self, api_key: str = "pd-test-key") -> None:
        self.api_key = api_key
        self.alerts: dict[str, list[dict[str, Any]]] = {}
        self.incidents: dict[str, dict[str, Any]] = {}
        self.users: list[dict[str, Any]] = []
        self.requests: list[Recorded] = []
        self._notes: dict[str, list[str]] = {}
        self._statuses: dict[str, list[str]] = {}
        self._failures: list[int] = []
        self._writes_fail: int | None = None  # every PUT/POST answers this status until healed
        # A timed outage: (until monotonic, status, method or None, path regex or None, Retry-After or None)
        self._outage: tuple[float, int, str | None, re.Pattern[str] | None, str | None] | None = None
        self.delay_s = 0.0  # every answer waits this long first (a slow PagerDuty; a hang if long)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        cert = make_serving_cert(("127.0.0.1",))
        self.ca_pem = cert.ca_pem  # to trust from another process (a CA file)
        self.ssl_context = ssl.create_default_context(cadata=cert.ca_pem.decode())
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory(prefix="pd-stub-") as d:
            certfile, keyfile = Path(d, "tls.crt"), Path(d, "tls.key")
            certfile.write_bytes(cert.cert_pem)
            keyfile.write_bytes(cert.key_pem)
            server_ctx.load_cert_chain(certfile, keyfile)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        # The handshake runs in the handler thread on first read, not in the accept loop.
        self._server.socket = server_ctx.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        # A short poll: shutdown() waits for the loop's next poll, 0.5 s by default, on every test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="pd-stub", daemon=True
        )

    def __enter__(self) -> PagerDutyStub:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- setup -----------------------------------------------------------------------------------------
    def add_incident(self, incident_id: str, alerts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Store a triggered incident (and its alerts); returns the incident record."""
        record = {
            "id": incident_id,
            "type": "incident",
            "status": "triggered",
            "escalation_policy": {"id": "PDEFAULT", "type": "escalation_policy_reference"},
        }
        with self._lock:
            self.incidents[incident_id] = record
            self.alerts.setdefault(incident_id, list(alerts or []))
        return record

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests, whatever they are, with ``status`` and an error body."""
        with self._lock:
            self._failures.extend([status] * times)

    def fail_writes(self, status: int) -> None:
        """Answer every write (PUT, POST) with ``status`` until :meth:`heal`; reads still answer."""
        with self._lock:
            self._writes_fail = status

    def outage(
        self,
        status: int,
        seconds: float,
        *,
        method: str | None = None,
        path: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        """For ``seconds`` from now, answer ``status`` to every request (or those of ``method`` whose
        path matches the regex ``path``); a 429 carries ``Retry-After: retry_after`` when given."""
        until = time.monotonic() + seconds
        with self._lock:
            self._outage = (until, status, method, re.compile(path) if path else None, retry_after)

    def heal(self) -> None:
        """Stop failing: the outage is over."""
        with self._lock:
            self._failures.clear()
            self._writes_fail = None
            self._outage = None
            self.delay_s = 0.0

    def _in_outage(self, req: Recorded) -> tuple[int, str | None] | None:
        if self._outage is None:
            return None
        until, status, method, path, retry_after = self._outage
        if time.monotonic() >= until:
            self._outage = None
            return None
        if (method and req.method != method) or (path and not path.search(req.path)):
            return None
        return status, retry_after

    # -- what the client did ---------------------------------------------------------------------------
    def writes(self, incident_id: str) -> list[tuple[str, str, Any]]:
        """(method, path, body) of every PUT/POST on the incident, in order, failed ones included."""
        prefix = f"/incidents/{incident_id}"
        return [
            (r.method, r.path, r.json)
            for r in list(self.requests)
            if r.method in ("PUT", "POST") and (r.path == prefix or r.path.startswith(prefix + "/"))
        ]

    def notes(self, incident_id: str) -> list[str]:
        """Contents of the notes stored on the incident, in order."""
        with self._lock:
            return list(self._notes.get(incident_id, []))

    def statuses(self, incident_id: str) -> list[str]:
        """Statuses set on the incident by accepted PUTs, in order."""
        with self._lock:
            return list(self._statuses.get(incident_id, []))

    # -- serving ---------------------------------------------------------------------------------------
    def handle(self, req: Recorded) -> tuple[int, dict[str, Any]]:
        """Answer one request: (status, JSON body)."""
        with self._lock:
            self.requests.append(req)
            if (down := self._in_outage(req)) is not None:
                return down[0], _error(down[0])
            if self._failures:
                return (status := self._failures.pop(0)), _error(status)
            if self._writes_fail is not None and req.method in ("PUT", "POST"):
                return self._writes_fail, _error(self._writes_fail)
            if req.headers.get("authorization") != f"Token token={self.api_key}":
                return 401, _error(401)
            if req.method in ("PUT", "POST") and not req.headers.get("from"):
                return 400, _error(
                    400, errors=['You must specify a user\'s email address in the "From" header']
                )
            if req.method == "GET" and (m := _ALERTS.fullmatch(req.path)):
                if m[1] not in self.alerts and m[1] not in self.incidents:
                    return 404, _error(404, "Incident Not Found")
                return 200, _page("alerts", self.alerts.get(m[1], []), req.query)
            if req.method == "GET" and req.path == "/users":
                q = req.query.get("query", "").lower()
                found = [
                    u
                    for u in self.users
                    if q in str(u.get("email", "")).lower() + "\n" + str(u.get("name", "")).lower()
                ]
                return 200, _page("users", found, req.query)
            if req.method == "GET" and (m := _NOTES.fullmatch(req.path)):
                if m[1] not in self.incidents and m[1] not in self.alerts:
                    return 404, _error(404, "Incident Not Found")
                return 200, {"notes": [{"content": c} for c in self._notes.get(m[1], [])]}
            if req.method == "PUT" and (m := _INCIDENT.fullmatch(req.path)):
                return self._update_incident(m[1], req.json)
            if req.method == "POST" and (m := _NOTES.fullmatch(req.path)):
                return self._add_note(m[1], req.json)
            return 404, _error(404)

    def _update_incident(self, incident_id: str, body: Any) -> tuple[int, dict[str, Any]]:
        if incident_id not in self.incidents and incident_id not in self.alerts:
            return 404, _error(404, "Incident Not Found")
        fields = body.get("incident") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return 400, _error(400, errors=["incident is required"])
        record = self.incidents.setdefault(
            incident_id, {"id": incident_id, "type": "incident", "status": "triggered"}
        )
        if "status" in fields:
            if fields["status"] not in ("acknowledged", "resolved"):
                return 400, _error(400, errors=["Status is invalid"])
            record["status"] = fields["status"]
            self._statuses.setdefault(incident_id, []).append(fields["status"])
        if "escalation_policy" in fields:
            policy = fields["escalation_policy"]
            if not isinstance(policy, dict) or not policy.get("id"):
                return 400, _error(400, errors=["Escalation Policy is invalid"])
            record["escalation_policy"] = {"id": policy["id"], "type": "escalation_policy_reference"}
        return 200, {"incident": dict(record)}

    def _add_note(self, incident_id: str, body: Any) -> tuple[int, dict[str, Any]]:
        if incident_id not in self.incidents and incident_id not in self.alerts:
            return 404, _error(404, "Incident Not Found")
        note = body.get("note") if isinstance(body, dict) else None
        if not isinstance(note, dict) or not isinstance(note.get("content"), str) or not note["content"]:
            return 400, _error(400, errors=["Note content is required"])
        self._notes.setdefault(incident_id, []).append(note["content"])
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, {
            "note": {"id": f"PN{next(self._ids):05d}", "content": note["content"], "created_at": created}
        }


def _page(key: str, items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    limit = min(int(query.get("limit", PAGE_DEFAULT)), PAGE_MAX)
    offset = int(query.get("offset", 0))
    page = items[offset : offset + limit]
    return {
        key: page,
        "limit": limit,
        "offset": offset,
        "more": offset + len(page) < len(items),
        # PagerDuty computes the total only when asked to.
        "total": len(items) if query.get("total") == "true" else None,
    }


def _handler(stub: PagerDutyStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client pools connections
        # Headers and body go out in two writes; with Nagle and delayed ACKs that costs 40 ms a reply.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            req = Recorded(
                method=self.command,
                path=url.path,
                query={k: v[-1] for k, v in parse_qs(url.query).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                json=body,
            )
            if stub.delay_s:
                time.sleep(stub.delay_s)
            with stub._lock:
                down = stub._in_outage(req)
            status, payload = stub.handle(req)
            out = json.dumps(payload).encode()
            self.send_response(status)
            if status == 429 and down is not None and down[1] is not None:
                self.send_header("Retry-After", down[1])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output

    return Handler
