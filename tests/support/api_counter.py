"""Counting the official Kubernetes client's requests by kind (LIST all / LIST / GET / WATCH / write) and
the bytes of their answers: what one incident costs the API server. Installed on the client's REST layer,
so it counts every read the agent makes through ``kubernetes``, whichever code makes it."""

from __future__ import annotations

from collections import Counter
from typing import Any


class ApiCounter:
    """Counts the official client's requests by kind, and the bytes of their answers (urllib3's pool)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.bytes = 0
        self.on = False

    def install(self) -> None:
        """Wrap the client's request (once per process: the counter is shared)."""
        from kubernetes.client import rest

        if getattr(rest.RESTClientObject.request, "_counted", False):
            return
        real = rest.RESTClientObject.request
        counter = self

        def request(client: Any, method: str, url: str, *args: Any, **kw: Any) -> Any:
            r = real(client, method, url, *args, **kw)
            if counter.on:
                counter.calls[_kind(method, url, kw.get("query_params"))] += 1
                # The answer is read here (RESTResponse caches it): the caller reads the same bytes.
                data = r.read() if hasattr(r, "read") else getattr(r, "data", None)
                counter.bytes += len(data) if isinstance(data, bytes | str) else 0
            return r

        request._counted = True  # type: ignore[attr-defined]
        rest.RESTClientObject.request = request  # type: ignore[method-assign]


def _kind(method: str, url: str, query: Any) -> str:
    if method != "GET":
        return "write"
    # The client puts the query in the URL (query_params is then empty); either way counts.
    params = dict(query or [])
    if "?" in url:
        from urllib.parse import parse_qsl

        params.update(parse_qsl(url.split("?", 1)[1]))
    if str(params.get("watch", "")).lower() in ("true", "1"):
        return "WATCH"
    path = url.split("?", 1)[0].rstrip("/")
    last = path.rsplit("/", 1)[-1]
    # A collection ends in its resource's plural (nodes, pods, events, configmaps, ...).
    collections = {"nodes", "pods", "events", "configmaps", "deployments", "poddisruptionbudgets", "leases"}
    if last not in collections:
        return "GET"
    cluster_wide = path.endswith(("/api/v1/nodes", "/api/v1/pods"))
    selected = params.get("fieldSelector") or params.get("labelSelector")
    return "LIST all" if cluster_wide and not selected else "LIST"


COUNTER = ApiCounter()
