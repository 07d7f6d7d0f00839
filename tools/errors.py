"""Which failures of the outside world pass (retry later) and which never will (stop and say so).

A page the agent acknowledged is never dropped because of a blip, so every caller that retries (the
service's job queue, the write-back outbox) asks one question of an error: will trying again help, and
how long must it wait first? The answer lives here, once, for every client the agent uses (Kubernetes,
PagerDuty, Slack, the stores, plain sockets), so no caller guesses from a message's text.

Unknown errors count as transient: a bug retried at the capped back-off costs a little CPU, and the
dead man's switch hands the page back to a human when it makes no progress; a blip called permanent
would be silence.
"""

from __future__ import annotations

import json

__all__ = ["RetryLater", "describe", "retry_after", "transient"]

# Slack Web API error codes that go away by themselves (https://api.slack.com/methods/chat.postMessage).
_SLACK_TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout", "timeout"}
)


class RetryLater(Exception):
    """Raised by a unit of work that cannot progress yet and will be able to (a thread still running)."""

    def __init__(self, message: str, after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = after_s


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def transient(exc: BaseException) -> bool:
    """True when the same call may succeed later: refused, timed out, rate-limited, 5xx, a locked store."""
    if isinstance(exc, RetryLater):
        return True
    name = type(exc).__name__
    if name == "SlackError":  # tools.slack: an HTTP status, or Slack's error code with HTTP 200
        status = _status(exc)
        error = str(getattr(exc, "error", ""))
        if status is not None and (status == 429 or status >= 500):
            return True
        if status is None and ":" in error:  # "URLError: ...": the socket failed, Slack never answered
            return True
        return error in _SLACK_TRANSIENT
    status = _status(exc)
    if name in ("PagerDutyError", "ToolError", "ApiException", "HTTPStatusError"):
        # No status: the request never got an answer (refused, reset, timed out).
        return status is None or status == 0 or status in (408, 409, 425, 429) or status >= 500
    if name in ("OperationalError", "DBAPIError", "InterfaceError", "IntegrityError", "TimeoutError"):
        return True  # a locked or unreachable store; a lost race for a sequence number
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return True
    # Bad data: it will be as bad next time.
    return not isinstance(exc, json.JSONDecodeError | UnicodeDecodeError | KeyError | TypeError | ValueError)


def describe(exc: BaseException, limit: int = 300) -> str:
    """An error in one short line for a job's record and the logs: the type and the first line of the
    message (a database error's SQL and parameters, which may hold alert text, stay out)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def retry_after(exc: BaseException) -> float | None:
    """How long the other side asked us to wait (``Retry-After``), if it said."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    return None
