"""What every Kubernetes tool stands on: the API client, one call with the server's own error message,
the retry policy of reads, and the project's label and taint names.

It exists apart from the reads and the writes (:mod:`.reads`, :mod:`.writes`) because both use it the
same way: one call through ``_call`` (raw JSON, an ``ApiException`` turned into a :class:`ToolError`
unless it is transient), and only reads retry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

TAINT_PREFIX = "supply-agent.io/"
POOL_LABEL = "supply-agent.io/pool"
CUSTOMER_LABEL = "supply-agent.io/customer"
LOG_TAIL_MAX = 500
LOG_BYTES_MAX = 64 * 1024


class ToolError(Exception):
    """A tool call that failed; ``status`` is the API's HTTP status where there was one."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (429, 500, 502, 503, 504)
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


_read_retry = retry(
    retry=retry_if_exception(_transient),
    wait=wait_random_exponential(multiplier=0.2, max=5),
    stop=stop_after_attempt(4),
    reraise=True,
)


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "").get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


class KubeApi:
    """One Kubernetes API client and the typed API groups the tools call through it."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        # How a wait passes (a drain retrying evictions a budget blocks): real time here; a replay against
        # a simulated cluster passes it on the cluster's clock instead.
        self._sleep = sleep
        self._monotonic = monotonic

    def close(self) -> None:
        self.api.close()

    @staticmethod
    def _json(resp: Any) -> Any:
        return json.loads(resp.data)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call, raw JSON; ApiException becomes ToolError with the server's own message."""
        try:
            return self._json(fn(*args, _preload_content=False, **kwargs))
        except ApiException as exc:
            if _transient(exc):
                raise
            raise ToolError(_message(exc), exc.status, exc.reason) from exc
