"""PagerDuty REST API v2: a thin typed adapter over the official ``pagerduty`` package's client.

Every call sends ``Authorization: Token token=...``; writes also need ``From: <user email>``, which the
package sends on every request once ``default_from`` is set. Retries are tenacity's alone (3 attempts,
short exponential back-off, about 5 s at most) on 429, 5xx and connection errors, never on another 4xx;
the package's own retries are off so the two never multiply. A note is not replayed after a 5xx or a
lost reply, which may hide a stored note. Every failure comes out as :class:`PagerDutyError`, whose
text never holds the API key.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import httpx2
import pagerduty
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

__all__ = ["NOTE_MAX_CHARS", "PagerDutyClient", "PagerDutyError"]

NOTE_MAX_CHARS = 25_000  # PagerDuty rejects longer incident notes
TRUNCATED_MARKER = "\n[... truncated by supply-agent]"
ATTEMPTS = 3
RETRY_BUDGET_S = 5.0

T = TypeVar("T")

# PagerDuty object IDs are short alphanumerics; anything else would let a caller aim at another path.
_ID = re.compile(r"[A-Za-z0-9]+")
# A request that failed with one of these never reached PagerDuty, so even a POST may be sent again.
_NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)


class PagerDutyError(Exception):
    """A PagerDuty REST call failed: says which call, the HTTP status and PagerDuty's message."""

    def __init__(self, call: str, status: int | None, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{call}: HTTP {status}: {message}" if status is not None else f"{call}: {message}")
        self.call, self.status, self.message = call, status, message
        self.retry_after = retry_after  # seconds PagerDuty asked us to wait (429), if it said


def _retry_after(response: httpx2.Response) -> float | None:
    """``Retry-After``, else PagerDuty's ``ratelimit-reset`` (seconds until the limit resets)."""
    for name in ("retry-after", "ratelimit-reset"):
        value = response.headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        if seconds >= 0:
            return seconds
    return None


def _pd_message(response: httpx2.Response) -> str:
    """PagerDuty's ``error.message`` plus its ``error.errors`` details, else the start of the body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        details = error.get("errors")
        if isinstance(details, list) and details:
            return f"{error['message']} ({'; '.join(str(d) for d in details)})"
        return str(error["message"])
    return response.text[:200] or response.reason_phrase


def _should_retry(exc: BaseException, replay_safe: bool) -> bool:
    if not isinstance(exc, PagerDutyError):
        return False
    # 429 and refused connections mean PagerDuty did nothing, so sending again cannot double an effect;
    # a wait longer than the retry budget is the caller's (the outbox waits, no thread sleeps).
    if exc.status == 429:
        return exc.retry_after is None or exc.retry_after <= RETRY_BUDGET_S / 2
    if isinstance(exc.__cause__, _NOT_SENT):
        return True
    return replay_safe and (exc.status is None or exc.status >= 500)


class _OneShotClient(pagerduty.RestApiV2Client):
    """``RestApiV2Client`` that hands a 429 straight back instead of retrying it itself."""

    def postprocess(self, response: httpx2.Response, suffix: str | None = None) -> None:
        super().postprocess(response, suffix)
        # Left alone, the package retries 429 without limit (1.5 s, 3 s, 6 s, ...) and no retry setting
        # turns that off cleanly; this hook runs on every response before its retry loop looks at it.
        if response.status_code == 429:
            raise pagerduty.HttpError("rate limited", response)


class PagerDutyClient:
    """Incident alerts, acknowledge, resolve, notes and escalation through ``pagerduty.RestApiV2Client``."""

    def __init__(
        self,
        api_key: str,
        from_email: str,
        base_url: str = "https://api.pagerduty.com",
        timeout_s: float = 10.0,
        escalation_policy_id: str = "",
        *,
        verify: ssl.SSLContext | bool = True,
        retry_backoff_s: float = 0.5,
    ) -> None:
        """``verify`` is httpx's TLS setting (tests pass a context trusting a stub's CA);
        ``retry_backoff_s`` is the first back-off, doubling after it (tests make it tiny)."""
        if not api_key:
            raise ValueError("PagerDuty API key is empty")
        if not from_email:
            raise ValueError("from_email is empty: PagerDuty refuses writes without a From header")
        self.from_email = from_email
        self.escalation_policy_id = escalation_policy_id
        self.retry_backoff_s = retry_backoff_s
        self._api_key = api_key
        self._own_user_id: str | None = None
        try:
            self._client = _OneShotClient(
                api_key, default_from=from_email, base_url=base_url.rstrip("/"), verify=verify
            )
        except pagerduty.UrlError as e:
            raise ValueError(f"PagerDuty base_url must be https://, got {base_url!r}") from e
        # Annotated int after the package's default of 60, but it goes to httpx, which takes a float.
        self._client.timeout = timeout_s  # type: ignore[assignment]
        # The package retries network errors 3 times by default; 0 raises on the first failure.
        self._client.max_network_attempts = 0

    def incident_alerts(self, incident_id: str) -> dict[str, Any]:
        """``{"alerts": [...]}``: every page of ``GET /incidents/{id}/alerts``."""
        path = f"/incidents/{_checked(incident_id)}/alerts"
        alerts = self._call("GET", path, lambda: list(self._client.iter_all(path)))
        return {"alerts": alerts}

    def acknowledge(self, incident_id: str) -> None:
        """Set the incident's status to acknowledged (harmless if it already is)."""
        self._update(incident_id, {"status": "acknowledged"})

    def resolve(self, incident_id: str) -> None:
        """Set the incident's status to resolved (harmless if it already is)."""
        self._update(incident_id, {"status": "resolved"})

    def add_note(self, incident_id: str, content: str) -> None:
        """Add a note, cut to PagerDuty's 25,000-character limit with a marker saying so."""
        if len(content) > NOTE_MAX_CHARS:
            content = content[: NOTE_MAX_CHARS - len(TRUNCATED_MARKER)] + TRUNCATED_MARKER
        path = f"/incidents/{_checked(incident_id)}/notes"
        # Not replay-safe: a 5xx or a dropped reply may hide a note that was stored, and a retry would
        # post it twice; only failures PagerDuty never acted on (429, refused connection) are retried.
        self._call(
            "POST", path, lambda: self._client.rpost(path, json={"content": content}), replay_safe=False
        )

    def notes(self, incident_id: str) -> list[str]:
        """The contents of the incident's notes (``GET /incidents/{id}/notes``), oldest first."""
        path = f"/incidents/{_checked(incident_id)}/notes"
        found = self._call("GET", path, lambda: self._client.rget(path))
        items = found if isinstance(found, list) else []
        return [str(n.get("content", "")) for n in items if isinstance(n, dict)]

    def escalate(self, incident_id: str, reason: str, escalation_policy_id: str | None = None) -> None:
        """Note the reason, then reassign the incident to the escalation policy (argument, else setting).

        The reassignment is attempted even when the note fails: paging a human matters more than the
        note saying why; the note's error is raised afterwards.
        """
        policy_id = escalation_policy_id or self.escalation_policy_id
        note_error: PagerDutyError | None = None
        try:
            self.add_note(incident_id, reason)
        except PagerDutyError as e:
            note_error = e
        if not policy_id:
            raise PagerDutyError(
                f"PUT /incidents/{incident_id}",
                None,
                "no escalation policy to reassign to: pass escalation_policy_id or set it on the client",
            ) from note_error
        self._update(
            incident_id, {"escalation_policy": {"id": policy_id, "type": "escalation_policy_reference"}}
        )
        if note_error is not None:
            raise note_error

    def own_user_id(self) -> str | None:
        """ID of the user whose email is ``from_email``, or None; a found ID is cached."""
        if self._own_user_id is None:
            user = self._call(
                "GET", "/users", lambda: self._client.find("users", self.from_email, attribute="email")
            )
            self._own_user_id = str(user["id"]) if user else None
        return self._own_user_id

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def _update(self, incident_id: str, fields: dict[str, Any]) -> None:
        path = f"/incidents/{_checked(incident_id)}"
        body = {"type": "incident_reference", **fields}
        # rput wraps the body as {"incident": {...}}; setting a status or a policy twice is harmless.
        self._call("PUT", path, lambda: self._client.rput(path, json=body))

    def _call(self, method: str, path: str, send: Callable[[], T], replay_safe: bool = True) -> T:
        """Run one REST call with retries, turning every failure into a :class:`PagerDutyError`."""
        call = f"{method} {path}"

        def attempt() -> T:
            try:
                return send()
            except pagerduty.Error as e:
                if e.response is not None:
                    # from None: the package's own message names the key's last characters on a 401.
                    message = self._redact(_pd_message(e.response))
                    raise PagerDutyError(
                        call, e.response.status_code, message, _retry_after(e.response)
                    ) from None
                cause = e.__cause__ if isinstance(e.__cause__, httpx2.HTTPError) else None
                detail = f"{type(cause).__name__}: {cause}" if cause else str(e)
                raise PagerDutyError(call, None, self._redact(detail)) from cause
            except httpx2.HTTPError as e:
                raise PagerDutyError(call, None, self._redact(f"{type(e).__name__}: {e}")) from e

        retrying = Retrying(
            retry=retry_if_exception(lambda exc: _should_retry(exc, replay_safe)),
            wait=wait_exponential(multiplier=self.retry_backoff_s, max=2.0),
            stop=stop_after_attempt(ATTEMPTS) | stop_after_delay(RETRY_BUDGET_S),
            reraise=True,
        )
        return retrying(attempt)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]")


def _checked(incident_id: str) -> str:
    if not _ID.fullmatch(incident_id):
        raise ValueError(f"not a PagerDuty incident id: {incident_id!r}")
    return incident_id
