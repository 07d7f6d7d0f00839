"""Watches: the stream of ADDED / MODIFIED / DELETED events from a ``resourceVersion`` (410 ``Expired``
when it is too old), the initial state first when asked, and the watch-list protocol's bookmark.

Kept apart because it is the one long-lived response: each watcher subscribes to the store, judges every
change on the object before and after (as kube-apiserver's cacher does) and must unsubscribe however the
stream ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sandbox.fleet.api.discovery import Resource
from sandbox.fleet.api.responses import bad, status_body
from sandbox.fleet.api.state import APIState
from sandbox.fleet.store import Change, Gone, Obj, Watcher
from sandbox.fleet.world import FleetError


class WatchMixin(APIState):
    """Watch streams."""

    async def _watch(self, request: Request, res: Resource, namespace: str | None) -> Response:
        match = self._selectors(request, res)
        store = self.fleet.store
        rv_param = request.query_params.get("resourceVersion") or ""
        send_initial = request.query_params.get("sendInitialEvents") == "true"
        if send_initial and request.query_params.get("resourceVersionMatch") not in (None, "NotOlderThan"):
            raise FleetError(422, "Invalid", "sendInitialEvents requires resourceVersionMatch=NotOlderThan")
        try:
            timeout = float(request.query_params.get("timeoutSeconds") or 1800)
        except ValueError as exc:
            raise bad("timeoutSeconds must be a number") from exc

        def visible(obj: Obj) -> bool:
            return (namespace is None or obj["metadata"].get("namespace") == namespace) and match(obj)

        def frame(change: Change) -> bytes | None:
            """The event this watcher sees, judged on the object before and after (as the cacher does)."""
            was = change.prev is not None and visible(change.prev)
            now = change.type != "DELETED" and visible(change.obj)
            if now:
                kind = "MODIFIED" if was else "ADDED"
            elif was:
                kind = "DELETED"  # deleted, or no longer matching the selector: to this watcher, gone
            else:
                return None
            return orjson.dumps({"type": kind, "object": change.obj}) + b"\n"

        watcher = Watcher(res.plural, namespace, visible)
        store.subscribe(watcher)
        initial: list[bytes | None]
        try:
            if rv_param in ("", "0") or send_initial:
                initial = [
                    orjson.dumps({"type": "ADDED", "object": o}) + b"\n"
                    for o in self._candidates(request, res, namespace)
                    if visible(o)
                ]
                if send_initial:
                    # The watch-list protocol (kubectl >= 1.35): a bookmark marks the end of the initial state.
                    initial.append(
                        orjson.dumps(
                            {
                                "type": "BOOKMARK",
                                "object": {
                                    "kind": res.kind,
                                    "apiVersion": res.api_version,
                                    "metadata": {
                                        "resourceVersion": str(store.rv),
                                        "annotations": {"k8s.io/initial-events-end": "true"},
                                    },
                                },
                            }
                        )
                        + b"\n"
                    )
            else:
                try:
                    since = store.since(res.plural, int(rv_param))
                except ValueError as exc:
                    raise bad(f"resourceVersion must be an integer: {rv_param!r}") from exc
                initial = [frame(c) for c in since]
        except Gone as exc:
            store.unsubscribe(watcher)
            gone = status_body(410, "Expired", str(exc))
            return Response(
                orjson.dumps({"type": "ERROR", "object": gone}) + b"\n", media_type="application/json"
            )
        except FleetError:
            store.unsubscribe(watcher)
            raise

        async def stream() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            try:
                for first in initial:
                    if first is not None:
                        yield first
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return
                    try:
                        change: Change | None = await asyncio.wait_for(
                            watcher.queue.get(), min(remaining, 5.0)
                        )
                    except TimeoutError:
                        if await request.is_disconnected():
                            return
                        continue
                    if change is None:
                        return
                    if (data := frame(change)) is not None:
                        yield data
            finally:
                store.unsubscribe(watcher)

        return StreamingResponse(stream(), media_type="application/json")
