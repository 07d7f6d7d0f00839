"""Slack Web API: post and update approval messages and read user-group members.

A thin adapter over `slack_sdk.WebClient`. ``base_url`` is configurable so tests point the real SDK
at a stub. Rate limits (HTTP 429) are retried a bounded number of times, and only when Slack's
Retry-After is short; anything else that fails raises `SlackError`, which names the method and
Slack's error code and never carries the token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    HttpRequest,
    HttpResponse,
    RateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web import SlackResponse

RATE_LIMIT_RETRIES = 2
RATE_LIMIT_MAX_WAIT_S = 10  # a longer Retry-After fails fast: the caller decides, not a blocked thread
# One retry on a dropped connection: a reset after Slack received a post could post it twice, which a
# duplicate approval prompt survives (both buttons bind to the same pending approval).
CONNECTION_RETRIES = 1


class SlackError(Exception):
    """A Slack call that failed: which method, and Slack's error code (never the token)."""

    def __init__(
        self, method: str, error: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        suffix = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"Slack {method} failed: {error}{suffix}")
        self.method = method
        self.error = error
        self.status = status
        self.retry_after = retry_after  # seconds Slack asked us to wait (429), if it said


@dataclass(frozen=True)
class SlackMessage:
    """A posted message: the channel id Slack resolved and the message's ts."""

    channel: str
    ts: str


def _retry_after(response: HttpResponse | None) -> float | None:
    if response is None:
        return None
    for name, values in response.headers.items():
        if name.lower() == "retry-after":
            value = values[0] if isinstance(values, list) else values
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _header_retry_after(headers: Any) -> float | None:
    if not isinstance(headers, dict):
        return None
    for name, values in headers.items():
        if str(name).lower() == "retry-after":
            value = values[0] if isinstance(values, list) else values
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


class _BoundedRateLimitRetry(RateLimitErrorRetryHandler):
    """The SDK's 429 handler, refusing a Retry-After longer than ``max_wait_s`` (or unreadable)."""

    def __init__(self, max_retry_count: int, max_wait_s: float) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_s = max_wait_s

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        wait = _retry_after(response)
        # the parent sleeps int(Retry-After), so a value it cannot parse must not reach it
        return wait is not None and wait.is_integer() and 0 <= wait <= self.max_wait_s


class SlackClient:
    """Approval messages in one channel, over `slack_sdk.WebClient`."""

    def __init__(
        self,
        token: str,
        channel: str,
        base_url: str = "https://slack.com/api/",
        timeout_s: float = 10.0,
    ) -> None:
        self.channel = channel
        self._token = token
        self._web = WebClient(
            token=token,
            # urljoin drops the last path segment of a base without a trailing slash
            base_url=base_url if base_url.endswith("/") else base_url + "/",
            # the SDK annotates int but hands the value to urlopen, which takes float seconds
            timeout=cast(int, timeout_s),
            retry_handlers=[
                ConnectionErrorRetryHandler(max_retry_count=CONNECTION_RETRIES),
                _BoundedRateLimitRetry(RATE_LIMIT_RETRIES, RATE_LIMIT_MAX_WAIT_S),
            ],
        )

    def __repr__(self) -> str:
        return f"SlackClient(channel={self.channel!r}, base_url={self._web.base_url!r})"

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text

    def _call(self, method: str, send: Callable[..., SlackResponse], **kwargs: Any) -> SlackResponse:
        # through the SDK's own method, which knows how Slack wants each one sent (JSON or form)
        try:
            return send(**kwargs)
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            error = str(data.get("error") or "unknown_error")
            wait = _header_retry_after(exc.response.headers)
            raise SlackError(method, self._redact(error), exc.response.status_code, wait) from None
        except (SlackClientError, OSError) as exc:
            # OSError covers URLError, refused and reset connections and socket timeouts
            raise SlackError(method, self._redact(f"{type(exc).__name__}: {exc}")) from None

    def post(self, text: str, blocks: list[dict[str, Any]], channel: str | None = None) -> SlackMessage:
        """``chat.postMessage``: ``text`` is the notification fallback for ``blocks``."""
        target = channel or self.channel
        if not target:
            raise SlackError("chat.postMessage", "no channel configured")
        resp = self._call(
            "chat.postMessage",
            self._web.chat_postMessage,
            channel=target,
            text=text,
            blocks=blocks,
            # alert text may hold URLs; nothing in an approval prompt should be fetched and previewed
            unfurl_links=False,
            unfurl_media=False,
        )
        got_channel, ts = resp.get("channel"), resp.get("ts")
        if not isinstance(got_channel, str) or not isinstance(ts, str):
            raise SlackError("chat.postMessage", "response without channel or ts")
        return SlackMessage(channel=got_channel, ts=ts)

    def update(self, message: SlackMessage, text: str, blocks: list[dict[str, Any]]) -> None:
        """``chat.update``: replace the message's text and blocks."""
        self._call(
            "chat.update",
            self._web.chat_update,
            channel=message.channel,
            ts=message.ts,
            text=text,
            blocks=blocks,
        )

    def usergroup_members(self, usergroup: str) -> frozenset[str]:
        """``usergroups.users.list``: the user ids in a user group."""
        resp = self._call("usergroups.users.list", self._web.usergroups_users_list, usergroup=usergroup)
        users = resp.get("users")
        if not isinstance(users, list):
            raise SlackError("usergroups.users.list", "response without users")
        return frozenset(str(u) for u in users)
