"""Reads: list (label and field selectors, ``limit`` and ``continue`` pages) and the candidates a list
or a watch starts from.

A get is one store lookup (`APIState._get`); a list is where the selectors, the pod-by-node index and
paging live, shared with the watch (watch.py) so that both see the same objects.
"""

from __future__ import annotations

import base64
import binascii
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
            objs = list(store.items(res.plural, namespace))
            objs.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return objs

    def _list(self, request: Request, res: Resource, namespace: str | None) -> Response:
        match = self._selectors(request, res)
        objs = [o for o in self._candidates(request, res, namespace) if match(o)]
        rv = str(self.fleet.store.rv)
        meta: dict[str, Any] = {"resourceVersion": rv}
        cont = request.query_params.get("continue")
        if cont:
            try:
                start = tuple(orjson.loads(base64.urlsafe_b64decode(cont.encode()))["start"])
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                raise bad(f"continue key is not valid: {exc}") from exc
            objs = [o for o in objs if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start]
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
