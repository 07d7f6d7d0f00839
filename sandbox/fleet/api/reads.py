"""Reads: list (label and field selectors, ``limit`` and ``continue`` pages) and the candidates a list
or a watch starts from.

A get is one store lookup (`APIState._get`); a list is where the selectors, the pod-by-node index and
paging live, shared with the watch (watch.py) so that both see the same objects.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sandbox.fleet.api.discovery import Resource
from sandbox.fleet.api.responses import bad, json_response
from sandbox.fleet.api.state import APIState
from sandbox.fleet.api.tables import table
from sandbox.fleet.selectors import (
    SelectorError,
    make_filter,
    parse_field_selector,
    parse_label_selector,
)
from sandbox.fleet.store import Obj


class ReadsMixin(APIState):
    """Lists, with selectors and paging."""

    def _selectors(self, request: Request, res: Resource) -> Callable[[Mapping[str, Any]], bool]:
        try:
            labels = parse_label_selector(request.query_params.get("labelSelector"))
            fields = parse_field_selector(request.query_params.get("fieldSelector"), res.fields, res.kind)
        except SelectorError as exc:
            raise bad(str(exc)) from exc
        return make_filter(labels, fields)

    def _candidates(self, request: Request, res: Resource, namespace: str | None) -> list[Obj]:
        store = self.fleet.store
        node = None
        if res.plural == "pods":
            for part in (request.query_params.get("fieldSelector") or "").split(","):
                key, sep, value = part.partition("=")
                if sep and key.strip() == "spec.nodeName" and not key.endswith("!"):
                    node = value.lstrip("=").strip()
        if node is not None:
            objs = [
                p
                for p in store.pods_on_node(node)
                if namespace is None or p["metadata"]["namespace"] == namespace
            ]
        else:
            objs = sorted(store.items(res.plural, namespace), key=_key)
        return objs

    def _sorted(self, plural: str, namespace: str | None) -> tuple[list[tuple[str, str]], list[Obj]]:
        """Every object of a kind (in a namespace) in list order, with their keys: sorted once per store
        revision, so the pages of one list cost O(page) each, not a sort of the fleet per page."""
        store = self.fleet.store
        cache: dict[tuple[str, str | None], tuple[int, list[tuple[str, str]], list[Obj]]]
        cache = self.__dict__.setdefault("_sorted_lists", {})
        hit = cache.get((plural, namespace))
        if hit is None or hit[0] != store.rv:
            objs = sorted(store.items(plural, namespace), key=_key)
            hit = (store.rv, [_key(o) for o in objs], objs)
            cache[(plural, namespace)] = hit
        return hit[1], hit[2]

    def _list(self, request: Request, res: Resource, namespace: str | None) -> Response:
        match = self._selectors(request, res)
        selected = request.query_params.get("labelSelector") or request.query_params.get("fieldSelector")
        rv = str(self.fleet.store.rv)
        meta: dict[str, Any] = {"resourceVersion": rv}
        cont = request.query_params.get("continue")
        start: tuple[str, ...] | None = None
        if cont:
            try:
                start = tuple(orjson.loads(base64.urlsafe_b64decode(cont.encode()))["start"])
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                raise bad(f"continue key is not valid: {exc}") from exc
        if selected:
            objs = [o for o in self._candidates(request, res, namespace) if match(o)]
            if start is not None:
                objs = [o for o in objs if _key(o) > start]
        else:  # every object: the sorted list of this revision, from where the last page ended
            keys, everything = self._sorted(res.plural, namespace)
            objs = everything[bisect.bisect_right(keys, start) :] if start is not None else everything
        limit = request.query_params.get("limit")
        if limit:
            try:
                n = int(limit)
            except ValueError as exc:
                raise bad(f"limit must be an integer: {limit!r}") from exc
            if 0 < n < len(objs):
                last = objs[n - 1]["metadata"]
                token = {"rv": rv, "start": [last.get("namespace", ""), last["name"]]}
                meta["continue"] = base64.urlsafe_b64encode(orjson.dumps(token)).decode()
                meta["remainingItemCount"] = len(objs) - n
                objs = objs[:n]
        if "as=Table" in request.headers.get("accept", ""):
            return json_response(table(res, objs, meta, self.fleet.now()))
        return json_response(
            {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": objs}
        )


def _key(o: Obj) -> tuple[str, str]:
    """Where an object sorts in a list: by namespace, then name (as the API server's pages go)."""
    return (o["metadata"].get("namespace", ""), o["metadata"]["name"])
