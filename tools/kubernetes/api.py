"""What every Kubernetes tool stands on: the API client, one call with the server's own error message,
the timeouts and retry policy of every call, and the project's label and taint names.

It exists apart from the reads and the writes (:mod:`.reads`, :mod:`.writes`) because both use it the
same way: one call through ``_call`` (raw JSON, an ``ApiException`` turned into a :class:`ToolError`
unless it is transient), every call with a (connect, read) timeout, and only reads retry, within a
budget. An API server that accepts connections and never answers costs a read its budget and a write
one read timeout, then surfaces as a transient error; it never hangs the incident.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

TAINT_PREFIX = "supply-agent.io/"
POOL_LABEL = "supply-agent.io/pool"
CUSTOMER_LABEL = "supply-agent.io/customer"
LOG_TAIL_MAX = 500
LOG_BYTES_MAX = 64 * 1024
# (connect, read) seconds for every call; the read timeout is between bytes, so a long list that streams
# is not cut, and a server that stops answering is.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)
# The most one read spends over its retries: room for two black-holed attempts at the default timeouts.
DEFAULT_READ_BUDGET_S = 75.0


class ToolError(Exception):
    """A tool call that failed; ``status`` is the API's HTTP status where there was one."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (429, 500, 502, 503, 504)
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


class _OverBudget(stop_base):
    """Stop when another attempt could end past the client's read budget (the wait before it counted)."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        api = retry_state.args[0] if retry_state.args else None
        if not isinstance(api, KubeApi):
            return False
        spent = retry_state.seconds_since_start or 0.0
        return spent + retry_state.upcoming_sleep + api.timeout[1] > api.read_budget_s


_read_retry = retry(
    retry=retry_if_exception(_transient),
    wait=wait_random_exponential(multiplier=0.2, max=5),
    stop=stop_any(stop_after_attempt(4), _OverBudget()),
    reraise=True,
)


class _PoolRetry(urllib3.Retry):
    """urllib3's own retries, kept for one case only: a GET on a pooled connection the server had
    already closed. urllib3 would otherwise repeat a timed-out GET (and PUT and DELETE) three times
    more, so a black-holed server would cost four read timeouts before the read's own retries even
    began, and a write would be repeated behind the executor's back."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if isinstance(error, urllib3.exceptions.TimeoutError):
            raise error.with_traceback(_stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)


POOL_RETRIES = _PoolRetry(total=2, read=1, status=0, other=0, allowed_methods=frozenset({"GET", "HEAD"}))


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
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        read_budget_s: float = DEFAULT_READ_BUDGET_S,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``timeout`` is (connect, read) seconds for every call; ``read_budget_s`` bounds one read with
        its retries. A client built here (``KubeTools.from_kubeconfig``) also turns off urllib3's own
        retries of timeouts (:data:`POOL_RETRIES`); one built elsewhere should set it as its
        ``Configuration.retries``."""
        if min(timeout) <= 0 or read_budget_s <= 0:
            raise ValueError(
                f"Kubernetes timeouts must be positive: timeout={timeout}, budget={read_budget_s}"
            )
        self.api = api_client
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.read_budget_s = float(read_budget_s)
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
        """One API call, raw JSON, within the client's timeouts unless the caller gives its own;
        ApiException becomes ToolError with the server's own message."""
        kwargs.setdefault("_request_timeout", self.timeout)
        try:
            return self._json(fn(*args, _preload_content=False, **kwargs))
        except ApiException as exc:
            if _transient(exc):
                raise
            raise ToolError(_message(exc), exc.status, exc.reason) from exc

    def read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A read made elsewhere (the world cache's live reads) with this client's rules: its timeouts,
        a transient error raised as it is (to be retried), any other refusal a ToolError with the
        server's message and status (a 404 has ``status == 404``)."""
        return self._call(fn, *args, **kwargs)
