"""The fleet's HTTP face: the Kubernetes REST API (what kubectl and the official client use), plus the
sandbox's own admin endpoints under ``/sandbox/v1`` (fault injection, clock, alerts, truth, snapshot).

Every request is authenticated by its bearer token (admin, reader or writer) and authorised with
Kubernetes RBAC from deploy/rbac.yaml (:mod:`sandbox.fleet.rbac`) before it is served; a refusal is
kube-apiserver's 403 ``Forbidden`` Status. Which identity made which request is counted
(:class:`RequestLog`) and served, to the admin only, at ``GET /sandbox/v1/requests``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import secrets
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import orjson
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sandbox.fleet import alerts as alert_rules
from sandbox.fleet import rbac
from sandbox.fleet.clock import ts
from sandbox.fleet.faults import FaultKind
from sandbox.fleet.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from sandbox.fleet.selectors import (
    SelectorError,
    make_filter,
    parse_field_selector,
    parse_label_selector,
)
from sandbox.fleet.store import Change, Gone, Obj, Watcher, thaw
from sandbox.fleet.world import Fleet, FleetError, is_terminating, not_found

K8S_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.4-sandbox",
    "gitCommit": "supply-agent-sandbox",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.10",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_COMMON = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True)
class Resource:
    plural: str
    singular: str
    kind: str
    group: str
    version: str
    namespaced: bool
    short: tuple[str, ...]
    verbs: tuple[str, ...]
    fields: frozenset[str] = _COMMON
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


_READ = ("get", "list", "watch")
RESOURCES = [
    Resource(
        "nodes",
        "node",
        "Node",
        "",
        "v1",
        False,
        ("no",),
        (*_READ, "patch", "update"),
        _COMMON | {"spec.unschedulable"},
        ("status", "proxy"),
    ),
    Resource(
        "namespaces",
        "namespace",
        "Namespace",
        "",
        "v1",
        False,
        ("ns",),
        (*_READ, "create"),
        _COMMON | {"status.phase"},
    ),
    Resource(
        "configmaps",
        "configmap",
        "ConfigMap",
        "",
        "v1",
        True,
        ("cm",),
        (*_READ, "create", "patch", "update", "delete"),
    ),
    Resource(
        "pods",
        "pod",
        "Pod",
        "",
        "v1",
        True,
        ("po",),
        (*_READ, "patch", "update", "delete"),
        _COMMON | {"spec.nodeName", "status.phase", "spec.schedulerName", "spec.restartPolicy"},
        ("eviction", "log", "proxy", "status"),
    ),
    Resource(
        "events",
        "event",
        "Event",
        "",
        "v1",
        True,
        ("ev",),
        _READ,
        _COMMON
        | {
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "reason",
            "type",
            "source",
            "reportingComponent",
        },
    ),
    Resource(
        "deployments",
        "deployment",
        "Deployment",
        "apps",
        "v1",
        True,
        ("deploy",),
        (*_READ, "patch", "update"),
        subresources=("scale", "status"),
    ),
    Resource("replicasets", "replicaset", "ReplicaSet", "apps", "v1", True, ("rs",), _READ),
    Resource("daemonsets", "daemonset", "DaemonSet", "apps", "v1", True, ("ds",), _READ),
    Resource(
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        "policy",
        "v1",
        True,
        ("pdb",),
        (*_READ, "create", "patch", "update", "delete"),
    ),
]
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}


def status_body(
    code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return body


def json_response(body: Any, code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=code, media_type="application/json", headers=headers)


def error_response(exc: FleetError) -> Response:
    headers = {"Retry-After": "1"} if exc.code == 429 and not exc.details else None
    return json_response(status_body(exc.code, exc.reason, exc.message, exc.details), exc.code, headers)


def _bad(message: str) -> FleetError:
    return FleetError(400, "BadRequest", message)


def _invalid(kind: str, name: str, group: str, causes: list[tuple[str, str]]) -> FleetError:
    qualified = f"{kind}.{group}" if group else kind
    text = ", ".join(f"{field}: {msg}" for field, msg in causes)
    return FleetError(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {text}',
        {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
        },
    )


# -- tables for kubectl --------------------------------------------------------------------------
def _age(created: str | None, now: datetime) -> str:
    if not created:
        return "<unknown>"
    secs = int((now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds())
    if secs < 120:
        return f"{max(secs, 0)}s"
    if secs < 7200:
        return f"{secs // 60}m"
    if secs < 48 * 3600:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def _pod_status(pod: Obj) -> str:
    if is_terminating(pod):
        return "Terminating"
    for cs in pod["status"].get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return str(waiting.get("reason", "Waiting"))
    return str(pod["status"].get("phase", "Unknown"))


def _node_status(node: Obj) -> str:
    ready = next((c for c in node["status"].get("conditions") or [] if c["type"] == "Ready"), None)
    text = "Ready" if ready and ready["status"] == "True" else ("NotReady" if ready else "Unknown")
    return text + (",SchedulingDisabled" if node["spec"].get("unschedulable") else "")


def _columns(*names: str) -> list[dict[str, Any]]:
    return [
        {
            "name": n,
            "type": "string",
            "format": "name" if n == "Name" else "",
            "description": n,
            "priority": 0,
        }
        for n in names
    ]


def table_for(res: Resource, objs: list[Obj], now: datetime) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    def age(o: Obj) -> str:
        return _age(o["metadata"].get("creationTimestamp"), now)

    if res.plural == "nodes":
        columns = _columns(
            "Name",
            "Status",
            "Roles",
            "Age",
            "Version",
            "Internal-IP",
            "External-IP",
            "OS-Image",
            "Kernel-Version",
            "Container-Runtime",
        )
        for col in columns[5:]:
            col["priority"] = 1
        return columns, [
            [
                o["metadata"]["name"],
                _node_status(o),
                "<none>",
                age(o),
                o["status"]["nodeInfo"]["kubeletVersion"],
                o["status"]["addresses"][0]["address"],
                "<none>",
                o["status"]["nodeInfo"]["osImage"],
                o["status"]["nodeInfo"]["kernelVersion"],
                o["status"]["nodeInfo"]["containerRuntimeVersion"],
            ]
            for o in objs
        ]
    if res.plural == "pods":
        rows = []
        for o in objs:
            css = o["status"].get("containerStatuses") or []
            ready = f"{sum(1 for c in css if c.get('ready'))}/{len(o['spec']['containers'])}"
            restarts = sum(c.get("restartCount", 0) for c in css)
            rows.append(
                [
                    o["metadata"]["name"],
                    ready,
                    _pod_status(o),
                    restarts,
                    age(o),
                    o["status"].get("podIP") or "<none>",
                    o["spec"].get("nodeName") or "<none>",
                    "<none>",
                    "<none>",
                ]
            )
        columns = _columns(
            "Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"
        )
        for col in columns[5:]:
            col["priority"] = 1
        return columns, rows
    if res.plural == "deployments":
        return _columns("Name", "Ready", "Up-to-date", "Available", "Age"), [
            [
                o["metadata"]["name"],
                f"{o['status'].get('readyReplicas', 0)}/{o['spec'].get('replicas', 1)}",
                o["status"].get("updatedReplicas", 0),
                o["status"].get("availableReplicas", 0),
                age(o),
            ]
            for o in objs
        ]
    if res.plural == "replicasets":
        return _columns("Name", "Desired", "Current", "Ready", "Age"), [
            [
                o["metadata"]["name"],
                o["spec"].get("replicas", 0),
                o["status"].get("replicas", 0),
                o["status"].get("readyReplicas", 0),
                age(o),
            ]
            for o in objs
        ]
    if res.plural == "daemonsets":
        return _columns("Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Age"), [
            [
                o["metadata"]["name"],
                o["status"].get("desiredNumberScheduled", 0),
                o["status"].get("currentNumberScheduled", 0),
                o["status"].get("numberReady", 0),
                o["status"].get("updatedNumberScheduled", 0),
                o["status"].get("numberAvailable", 0),
                age(o),
            ]
            for o in objs
        ]
    if res.plural == "poddisruptionbudgets":
        return _columns("Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"), [
            [
                o["metadata"]["name"],
                str(o["spec"].get("minAvailable", "N/A")),
                str(o["spec"].get("maxUnavailable", "N/A")),
                o["status"].get("disruptionsAllowed", 0),
                age(o),
            ]
            for o in objs
        ]
    if res.plural == "events":
        return _columns("Last Seen", "Type", "Reason", "Object", "Message"), [
            [
                _age(o.get("lastTimestamp"), now),
                o.get("type", ""),
                o.get("reason", ""),
                f"{o['involvedObject'].get('kind', '').lower()}/{o['involvedObject'].get('name', '')}",
                o.get("message", ""),
            ]
            for o in objs
        ]
    if res.plural == "namespaces":
        return _columns("Name", "Status", "Age"), [
            [o["metadata"]["name"], o["status"].get("phase", "Active"), age(o)] for o in objs
        ]
    return _columns("Name", "Age"), [[o["metadata"]["name"], age(o)] for o in objs]


# -- who asked for what ----------------------------------------------------------------------------
class RequestLog:
    """Requests by identity: Kubernetes API requests by verb and by ``verb resource[/subresource]``,
    non-resource requests (discovery, ``/sandbox/v1``) by ``verb path``, and refusals (403) by either.
    Served at ``GET /sandbox/v1/requests`` (admin only), so tests and evals can check the credential split."""

    KINDS = ("verbs", "resources", "paths", "forbidden")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, Counter[str]]] = {}

    def add(self, identity: str, info: rbac.RequestInfo, allowed: bool) -> None:
        with self._lock:
            counts = self._counts.setdefault(identity, {k: Counter() for k in self.KINDS})
            if not allowed:
                counts["forbidden"][info.describe()] += 1
            elif info.resource_request:
                counts["verbs"][info.verb] += 1
                counts["resources"][info.describe()] += 1
            else:
                counts["paths"][info.describe()] += 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                identity: {
                    "user": user.name,
                    **{
                        k: dict(sorted(self._counts.get(identity, {}).get(k, Counter()).items()))
                        for k in self.KINDS
                    },
                }
                for identity, user in rbac.IDENTITIES.items()
            }


# -- the app -------------------------------------------------------------------------------------
class FleetAPI:
    """The ASGI app. ``token`` is the admin's; the reader's and writer's are made up when not given, and
    ``policy`` (default: deploy/rbac.yaml, read now) authorises them."""

    def __init__(
        self,
        fleet: Fleet,
        token: str,
        cluster: str = "sandbox",
        *,
        reader_token: str | None = None,
        writer_token: str | None = None,
        policy: rbac.Policy | None = None,
    ) -> None:
        self.fleet = fleet
        self.token = token
        self.tokens = {
            "admin": token,
            "reader": reader_token or secrets.token_urlsafe(32),
            "writer": writer_token or secrets.token_urlsafe(32),
        }
        if len(set(self.tokens.values())) != len(self.tokens):
            raise ValueError("the admin, reader and writer tokens must differ")
        self.policy = policy if policy is not None else rbac.load_policy()
        self.requests = RequestLog()
        self.cluster = cluster
        self.app = Starlette(
            routes=[
                Route("/sandbox/v1/{path:path}", self.admin, methods=["GET", "POST", "DELETE"]),
                Route(
                    "/{path:path}",
                    self.kube,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
                ),
            ]
        )

    def _identity(self, request: Request) -> str | None:
        """The identity whose bearer token the request carries (every token compared: constant time)."""
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        given, found = presented.strip().encode(), None
        for identity, token in self.tokens.items():
            if hmac.compare_digest(given, token.encode()):
                found = identity
        return found

    def _refuse(self, request: Request, path: str) -> Response | None:
        """401 without a known token, kube-apiserver's 403 when RBAC does not allow it; else None."""
        identity = self._identity(request)
        if identity is None:
            return json_response(status_body(401, "Unauthorized", "Unauthorized"), 401)
        info = rbac.request_info(request.method, path, request.query_params)
        user = rbac.IDENTITIES[identity]
        allowed = self.policy.authorize(user, info)
        self.requests.add(identity, info, allowed)
        if allowed:
            return None
        body = status_body(403, "Forbidden", rbac.forbidden_message(user, info), rbac.forbidden_details(info))
        return json_response(body, 403)

    # -- Kubernetes API -------------------------------------------------------------------------
    async def kube(self, request: Request) -> Response:
        if (refused := self._refuse(request, request.url.path)) is not None:
            return refused
        try:
            return await self._kube(request)
        except FleetError as exc:
            return error_response(exc)

    async def _kube(self, request: Request) -> Response:
        path = request.url.path.rstrip("/") or "/"
        segs = [unquote(s) for s in path.strip("/").split("/")] if path != "/" else []
        if path in ("/healthz", "/livez", "/readyz"):
            return Response("ok", media_type="text/plain")
        if path == "/version":
            return json_response(K8S_VERSION)
        if path == "/api":
            return json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": request.url.netloc}
                    ],
                }
            )
        if path == "/apis":
            return json_response(self._api_groups())
        if segs[:1] == ["api"] and len(segs) >= 2:
            group, version, rest = "", segs[1], segs[2:]
        elif segs[:1] == ["apis"] and len(segs) >= 2:
            if len(segs) == 2:
                groups = {g["name"]: g for g in self._api_groups()["groups"]}
                if segs[1] not in groups:
                    raise FleetError(404, "NotFound", "the server could not find the requested resource")
                return json_response({"kind": "APIGroup", "apiVersion": "v1", **groups[segs[1]]})
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise FleetError(404, "NotFound", "the server could not find the requested resource")
        if version != "v1" or not any(r.group == group for r in RESOURCES):
            raise FleetError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return json_response(self._resource_list(group, version))
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        res = BY_PATH.get((group, version, rest[0]))
        if res is None:
            raise FleetError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        sub_path = "/".join(rest[3:])
        if (
            res.namespaced
            and namespace is not None
            and res.plural != "namespaces"
            and self.fleet.store.get("namespaces", "", namespace) is None
            and request.method != "GET"
        ):
            raise not_found("namespaces", namespace)
        if res.plural == "namespaces":
            namespace = None
        method = request.method
        if name is None:
            if method == "GET":
                if request.query_params.get("watch") in ("1", "true", "True"):
                    return await self._watch(request, res, namespace)
                return self._list(request, res, namespace)
            if method == "POST" and "create" in res.verbs:
                return self._create(request, res, namespace, await self._body(request))
            raise FleetError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if sub:
            return await self._subresource(request, res, namespace or "", name, sub, sub_path)
        if method == "GET":
            obj = self._get(res, namespace or "", name)
            if "as=Table" in request.headers.get("accept", ""):
                return json_response(
                    self._table(res, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]})
                )
            return json_response(obj)
        if method == "PATCH" and "patch" in res.verbs:
            return self._patch(request, res, namespace or "", name, await request.body())
        if method == "PUT" and "update" in res.verbs:
            return self._replace(request, res, namespace or "", name, await self._body(request))
        if method == "DELETE" and "delete" in res.verbs:
            return await self._delete(request, res, namespace or "", name)
        raise FleetError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _api_groups(self) -> dict[str, Any]:
        groups = []
        for g in sorted({r.group for r in RESOURCES if r.group}):
            gv = {"groupVersion": f"{g}/v1", "version": "v1"}
            groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        items: list[dict[str, Any]] = []
        for r in RESOURCES:
            if r.group != group:
                continue
            items.append(
                {
                    "name": r.plural,
                    "singularName": r.singular,
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": list(r.verbs),
                    "shortNames": list(r.short),
                }
            )
            for sub in r.subresources:
                kind = {
                    "eviction": "Eviction",
                    "scale": "Scale",
                    "log": "Pod",
                    "proxy": "PodProxyOptions",
                }.get(sub, r.kind)
                grp = {
                    "eviction": {"group": "policy", "version": "v1"},
                    "scale": {"group": "autoscaling", "version": "v1"},
                }.get(sub, {})
                verbs = {
                    "eviction": ["create"],
                    "log": ["get"],
                    "proxy": ["create", "delete", "get", "patch", "update"],
                    "scale": ["get", "patch", "update"],
                    "status": ["get", "patch", "update"],
                }[sub]
                items.append(
                    {
                        "name": f"{r.plural}/{sub}",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": kind,
                        "verbs": verbs,
                        **grp,
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": items,
        }

    @staticmethod
    async def _body(request: Request) -> Any:
        raw = await request.body()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _bad(f"the body of the request was in an unknown format: {exc}") from exc

    def _get(self, res: Resource, namespace: str, name: str) -> Obj:
        obj = self.fleet.store.get(res.plural, namespace, name)
        if obj is None:
            raise not_found(res.plural, name, res.group)
        return obj

    @staticmethod
    def _dry_run(request: Request) -> bool:
        values = request.query_params.getlist("dryRun")
        for v in values:
            if v != "All":
                raise _bad(f'Invalid dryRun value "{v}": supported values are "All"')
        return bool(values)

    def _selectors(self, request: Request, res: Resource) -> Callable[[Mapping[str, Any]], bool]:
        try:
            labels = parse_label_selector(request.query_params.get("labelSelector"))
            fields = parse_field_selector(request.query_params.get("fieldSelector"), res.fields, res.kind)
        except SelectorError as exc:
            raise _bad(str(exc)) from exc
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
                raise _bad(f"continue key is not valid: {exc}") from exc
            objs = [o for o in objs if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start]
        limit = request.query_params.get("limit")
        if limit:
            try:
                n = int(limit)
            except ValueError as exc:
                raise _bad(f"limit must be an integer: {limit!r}") from exc
            if 0 < n < len(objs):
                last = objs[n - 1]["metadata"]
                token = {"rv": rv, "start": [last.get("namespace", ""), last["name"]]}
                meta["continue"] = base64.urlsafe_b64encode(orjson.dumps(token)).decode()
                meta["remainingItemCount"] = len(objs) - n
                objs = objs[:n]
        if "as=Table" in request.headers.get("accept", ""):
            return json_response(self._table(res, objs, meta))
        return json_response(
            {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": objs}
        )

    def _table(self, res: Resource, objs: list[Obj], meta: dict[str, Any]) -> dict[str, Any]:
        columns, cells = table_for(res, objs, self.fleet.now())
        rows = [
            {
                "cells": c,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            }
            for c, o in zip(cells, objs, strict=True)
        ]
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "columnDefinitions": columns,
            "rows": rows,
        }

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
            raise _bad("timeoutSeconds must be a number") from exc

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
                    raise _bad(f"resourceVersion must be an integer: {rv_param!r}") from exc
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

    # -- writes ---------------------------------------------------------------------------------
    def _record(
        self,
        request: Request,
        res: Resource,
        namespace: str,
        name: str,
        sub: str,
        code: int,
        dry: bool | None = None,
    ) -> None:
        verb = {"PATCH": "patch", "PUT": "update", "DELETE": "delete", "POST": "create"}.get(
            request.method, request.method
        )
        dry_run = "dryRun" in request.query_params if dry is None else dry
        self.fleet.record_write(verb, res.plural, namespace, name, sub, dry_run, code)

    def _check_rv(self, res: Resource, current: Obj, wanted: str | None) -> None:
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            qualified = f"{res.plural}.{res.group}" if res.group else res.plural
            raise FleetError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {qualified} "{current["metadata"]["name"]}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                {"name": current["metadata"]["name"], "group": res.group, "kind": res.plural},
            )

    def _patch(self, request: Request, res: Resource, namespace: str, name: str, raw: bytes) -> Response:
        dry = self._dry_run(request)
        current = self._get(res, namespace, name)
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        try:
            patch = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _bad(f"error decoding patch: {exc}") from exc
        try:
            if ctype == "application/merge-patch+json":
                if not isinstance(patch, dict):
                    raise _bad("a merge patch must be a JSON object")
                new = merge_patch(thaw(current), patch)
            elif ctype == "application/strategic-merge-patch+json":
                if not isinstance(patch, dict):
                    raise _bad("a strategic merge patch must be a JSON object")
                new = strategic_merge_patch(thaw(current), patch)
            elif ctype == "application/json-patch+json":
                new = json_patch(current, patch)
            else:
                raise FleetError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - "
                    "accepted media types include: application/json-patch+json, application/merge-patch+json, "
                    "application/strategic-merge-patch+json",
                )
        except PatchError as exc:
            raise FleetError(exc.code, "Invalid" if exc.code == 422 else "BadRequest", str(exc)) from exc
        if not isinstance(new, dict):
            raise _bad("the patched object is not an object")
        wanted = (new.get("metadata") or {}).get("resourceVersion")
        self._check_rv(res, current, wanted if wanted != current["metadata"]["resourceVersion"] else None)
        result = self._commit(res, current, new, dry, request)
        self._record(request, res, namespace, name, "", 200)
        return json_response(result)

    def _replace(self, request: Request, res: Resource, namespace: str, name: str, body: Any) -> Response:
        dry = self._dry_run(request)
        current = self._get(res, namespace, name)
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise _bad("the body must be an object with metadata")
        if body["metadata"].get("name", name) != name:
            raise _bad(
                f"the name of the object ({body['metadata'].get('name')}) does not match the name on the URL ({name})"
            )
        self._check_rv(res, current, body["metadata"].get("resourceVersion"))
        result = self._commit(res, current, body, dry, request)
        self._record(request, res, namespace, name, "", 200)
        return json_response(result)

    def _commit(self, res: Resource, current: Obj, new: Obj, dry: bool, request: Request) -> Obj:
        """Validate a changed object, keep what clients may not change, store it, run the controllers."""
        meta = new.setdefault("metadata", {})
        name = current["metadata"]["name"]
        for immutable in ("name", "namespace", "uid", "creationTimestamp"):
            if (
                meta.get(immutable) != current["metadata"].get(immutable)
                and current["metadata"].get(immutable) is not None
            ):
                if immutable in ("name", "namespace") and meta.get(immutable) is not None:
                    raise _invalid(
                        res.kind,
                        name,
                        res.group,
                        [(f"metadata.{immutable}", "Invalid value: field is immutable")],
                    )
                meta[immutable] = current["metadata"][immutable]
        new["kind"], new["apiVersion"] = current["kind"], current["apiVersion"]
        if "status" in current:
            new["status"] = thaw(current["status"])  # status changes only through the status subresource
        for key, value in (meta.get("labels") or {}).items():
            if not isinstance(value, str) or len(value) > 63:
                raise _invalid(
                    res.kind,
                    name,
                    res.group,
                    [
                        (
                            f"metadata.labels[{key}]",
                            f"Invalid value: {value!r}: must be no more than 63 characters",
                        )
                    ],
                )
        if res.plural == "pods":
            if new.get("spec") != current["spec"]:
                raise _invalid(
                    res.kind,
                    name,
                    res.group,
                    [
                        (
                            "spec",
                            "Forbidden: pod updates may not change fields other than "
                            "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                            "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                            "existing tolerations),`spec.terminationGracePeriodSeconds`",
                        )
                    ],
                )
            meta["deletionTimestamp"] = current["metadata"].get("deletionTimestamp")
            if meta["deletionTimestamp"] is None:
                meta.pop("deletionTimestamp")
        if res.plural == "nodes":
            for taint in new["spec"].get("taints") or []:
                if (
                    not isinstance(taint, dict)
                    or not taint.get("key")
                    or taint.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute")
                ):
                    raise _invalid(
                        res.kind,
                        name,
                        res.group,
                        [
                            (
                                "spec.taints",
                                f"Unsupported value: {taint!r}: supported values: "
                                '"NoExecute", "NoSchedule", "PreferNoSchedule"',
                            )
                        ],
                    )
        if res.plural == "deployments":
            replicas = new.get("spec", {}).get("replicas", 1)
            if not isinstance(replicas, int) or replicas < 0:
                raise _invalid(
                    res.kind,
                    name,
                    res.group,
                    [("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")],
                )
            if new["spec"].get("selector") != current["spec"].get("selector"):
                raise _invalid(
                    res.kind, name, res.group, [("spec.selector", "Invalid value: field is immutable")]
                )
            if new["spec"] != current["spec"]:
                meta["generation"] = current["metadata"].get("generation", 1) + 1
        if res.plural == "poddisruptionbudgets" and new.get("spec") != current.get("spec"):
            meta["generation"] = current["metadata"].get("generation", 1) + 1
        if dry:
            return new
        if new == current:
            return current
        stored = self.fleet.store.put(res.plural, new)
        ns = current["metadata"].get("namespace", "")
        if res.plural == "nodes":
            self.fleet.node_changed(current, stored)
        elif res.plural == "deployments":
            self.fleet.reconcile_deployment(ns, name)
        elif res.plural == "pods":
            self.fleet._after_status(stored)
        elif res.plural == "poddisruptionbudgets":
            self.fleet._refresh_pdbs(ns)
        return self.fleet.store.get(res.plural, ns, name) or stored

    def _create(self, request: Request, res: Resource, namespace: str | None, body: Any) -> Response:
        dry = self._dry_run(request)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("metadata"), dict)
            or not body["metadata"].get("name")
        ):
            raise _bad("the body must be an object with metadata.name")
        name = body["metadata"]["name"]
        ns = namespace or ""
        if self.fleet.store.get(res.plural, ns, name) is not None:
            qualified = f"{res.plural}.{res.group}" if res.group else res.plural
            raise FleetError(
                409,
                "AlreadyExists",
                f'{qualified} "{name}" already exists',
                {"name": name, "group": res.group, "kind": res.plural},
            )
        obj = thaw(body)
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        meta = obj["metadata"]
        meta.update(uid=self.fleet._uid(), creationTimestamp=self.fleet.stamp(), generation=1)
        if res.namespaced:
            meta["namespace"] = ns
        if res.plural != "configmaps":
            obj.setdefault("spec", {})
            obj["status"] = {"phase": "Active"} if res.plural == "namespaces" else {}
        if res.plural == "poddisruptionbudgets":
            spec = obj["spec"]
            if "minAvailable" in spec and "maxUnavailable" in spec:
                raise _invalid(
                    res.kind,
                    name,
                    res.group,
                    [("spec", "Invalid value: minAvailable and maxUnavailable cannot be both set")],
                )
        if dry:
            return json_response(obj, 201)
        stored = self.fleet.store.put(res.plural, obj)
        if res.plural == "poddisruptionbudgets":
            self.fleet._refresh_pdbs(ns)
            stored = self.fleet.store.get(res.plural, ns, name) or stored
        self._record(request, res, ns, name, "", 201)
        return json_response(stored, 201)

    async def _delete(self, request: Request, res: Resource, namespace: str, name: str) -> Response:
        dry = self._dry_run(request)
        raw = await request.body()
        options: dict[str, Any] = {}
        if raw.strip():
            try:
                options = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise _bad(f"the body of the request was in an unknown format: {exc}") from exc
        if not dry and isinstance(options.get("dryRun"), list):
            dry = options["dryRun"] == ["All"]
        grace_param = request.query_params.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        try:
            grace = int(grace_param) if grace_param is not None else None
        except (TypeError, ValueError) as exc:
            raise _bad(f"gracePeriodSeconds must be an integer: {grace_param!r}") from exc
        if res.plural == "pods":
            result = self.fleet.delete_pod(namespace, name, grace, dry_run=dry)
        else:
            obj = self._get(res, namespace, name)
            result = obj if dry else (self.fleet.store.delete(res.plural, namespace, name) or obj)
            if not dry and res.plural == "poddisruptionbudgets":
                self.fleet._refresh_pdbs(namespace)
        self._record(request, res, namespace, name, "", 200, dry)
        return json_response(result)

    async def _subresource(
        self, request: Request, res: Resource, namespace: str, name: str, sub: str, sub_path: str
    ) -> Response:
        fleet, method = self.fleet, request.method
        if res.plural == "pods" and sub == "eviction" and method == "POST":
            dry = self._dry_run(request)
            body = await self._body(request)
            if not isinstance(body, dict):
                raise _bad("an eviction body must be a policy/v1 Eviction object")
            if (body.get("metadata") or {}).get("name", name) != name:
                raise _bad("name in URL does not match name in Eviction object")
            opts = body.get("deleteOptions") or {}
            dry = dry or opts.get("dryRun") == ["All"]
            try:
                fleet.evict(namespace, name, dry_run=dry)
            except FleetError as exc:
                self._record(request, res, namespace, name, "eviction", exc.code, dry)
                raise
            self._record(request, res, namespace, name, "eviction", 201, dry)
            return json_response(status_body(201, "", ""), 201)
        if res.plural == "pods" and sub == "log" and method == "GET":
            q = request.query_params
            try:
                tail = int(q["tailLines"]) if "tailLines" in q else None
                limit = int(q["limitBytes"]) if "limitBytes" in q else None
            except ValueError as exc:
                raise _bad(f"tailLines and limitBytes must be integers: {exc}") from exc
            text = fleet.pod_log(
                namespace, name, q.get("container"), tail, q.get("previous") in ("true", "1")
            )
            data = text.encode()
            return Response(data[:limit] if limit else data, media_type="text/plain")
        if (res.plural == "pods" and sub == "proxy") or (
            res.plural == "pods" and ":" in name and sub == "proxy"
        ):
            pod_name, _, port = name.partition(":")
            code, ctype, data = fleet.proxy(namespace, pod_name, port or None, sub_path)
            return Response(data, status_code=code, media_type=ctype)
        if res.plural == "pods" and sub == "status" and method == "GET":
            return json_response(self._get(res, namespace, name))
        if res.plural == "deployments" and sub == "scale":
            return await self._scale(request, res, namespace, name)
        if res.plural == "deployments" and sub == "status" and method == "GET":
            return json_response(self._get(res, namespace, name))
        if res.plural == "nodes" and sub == "status" and method == "GET":
            return json_response(self._get(res, "", name))
        if res.plural == "nodes" and sub == "proxy":
            raise FleetError(
                503,
                "ServiceUnavailable",
                "the sandbox has no kubelet endpoint: use pods/proxy on the node-agent",
            )
        raise FleetError(404, "NotFound", "the server could not find the requested resource")

    async def _scale(self, request: Request, res: Resource, namespace: str, name: str) -> Response:
        dep = self._get(res, namespace, name)

        def scale_of(d: Obj) -> dict[str, Any]:
            return {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": d["metadata"]["uid"],
                    "resourceVersion": d["metadata"]["resourceVersion"],
                    "creationTimestamp": d["metadata"]["creationTimestamp"],
                },
                "spec": {"replicas": d["spec"].get("replicas", 1)},
                "status": {
                    "replicas": d["status"].get("replicas", 0),
                    "selector": ",".join(f"{k}={v}" for k, v in d["spec"]["selector"]["matchLabels"].items()),
                },
            }

        if request.method == "GET":
            return json_response(scale_of(dep))
        dry = self._dry_run(request)
        current = scale_of(dep)
        if request.method == "PUT":
            new = await self._body(request)
        elif request.method == "PATCH":
            raw = await request.body()
            ctype = request.headers.get("content-type", "").split(";")[0].strip()
            try:
                patch = orjson.loads(raw)
                new = (
                    json_patch(current, patch)
                    if ctype == "application/json-patch+json"
                    else merge_patch(current, patch)
                )
            except (orjson.JSONDecodeError, PatchError) as exc:
                raise _bad(f"error decoding patch: {exc}") from exc
        else:
            raise FleetError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if not isinstance(new, dict):
            raise _bad("a Scale must be an object")
        self._check_rv(
            res, dep, (new.get("metadata") or {}).get("resourceVersion") if request.method == "PUT" else None
        )
        replicas = (new.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise _invalid(
                "Scale",
                name,
                "autoscaling",
                [("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")],
            )
        updated = thaw(dep)
        updated["spec"]["replicas"] = replicas
        result = self._commit(res, dep, updated, dry, request)
        self._record(request, res, namespace, name, "scale", 200)
        return json_response(scale_of(result))

    # -- admin ----------------------------------------------------------------------------------
    async def admin(self, request: Request) -> Response:
        path = request.path_params["path"].strip("/")
        if (refused := self._refuse(request, f"/sandbox/v1/{path}")) is not None:
            return refused
        try:
            return await self._admin(request, path)
        except FleetError as exc:
            return error_response(exc)

    async def _admin(self, request: Request, path: str) -> Response:
        fleet, method = self.fleet, request.method
        if path == "faults" and method == "GET":
            return json_response([f.model_dump(mode="json") for f in fleet.faults.values()])
        if path == "faults" and method == "POST":
            body = await self._body(request)
            if not isinstance(body, dict):
                raise _bad("a fault is a JSON object")
            try:
                kind = FaultKind(str(body.get("kind")))
            except ValueError as exc:
                raise FleetError(
                    422,
                    "Invalid",
                    f"unknown fault kind {body.get('kind')!r}; known: "
                    f"{', '.join(k.value for k in FaultKind)}",
                ) from exc
            known = {"kind", "node", "gpu", "code", "namespace", "pod", "detail"}
            if unknown := set(body) - known:
                raise FleetError(422, "Invalid", f"unknown fault field(s): {', '.join(sorted(unknown))}")
            for field in ("gpu", "code"):
                if body.get(field) is not None and not isinstance(body[field], int):
                    raise FleetError(422, "Invalid", f"fault field {field!r} must be an integer")
            fault = fleet.inject(
                kind,
                node=body.get("node"),
                gpu=body.get("gpu"),
                code=body.get("code"),
                namespace=body.get("namespace"),
                pod=body.get("pod"),
                detail=str(body.get("detail") or ""),
            )
            return json_response(fault.model_dump(mode="json"), 201)
        if path == "faults/clear" and method == "POST":
            body = await self._body(request) if (await request.body()).strip() else {}
            cleared = fleet.clear(node=(body or {}).get("node"))
            return json_response({"cleared": [f.model_dump(mode="json") for f in cleared]})
        if path == "alerts" and method == "GET":
            fmt = request.query_params.get("format", "alertmanager")
            fired = alert_rules.fire(list(fleet.faults.values()), now=fleet.now(), cluster=self.cluster)
            if fmt == "alertmanager":
                return json_response(alert_rules.to_alertmanager(fired))
            if fmt == "pagerduty":
                return json_response(alert_rules.to_pagerduty(fired))
            if fmt == "raw":
                return json_response([a.model_dump(mode="json") for a in fired])
            raise _bad(f"unknown alert format {fmt!r}: use alertmanager, pagerduty or raw")
        if path.startswith("pagerduty/incidents/") and path.endswith("/alerts") and method == "GET":
            incident_id = path.split("/")[2]
            fired = alert_rules.fire(list(fleet.faults.values()), now=fleet.now(), cluster=self.cluster)
            for alert, hook in zip(fired, alert_rules.to_pagerduty(fired), strict=True):
                if hook["event"]["data"]["id"] == incident_id:
                    return json_response(alert_rules.pagerduty_incident_alerts(alert))
            raise FleetError(404, "NotFound", f"incident {incident_id} not found")
        if path == "truth" and method == "GET":
            return json_response(fleet.truth())
        if path == "requests" and method == "GET":
            return json_response(self.requests.as_dict())
        if path == "meters" and method == "GET":
            q = request.query_params
            return json_response(
                {"now": fleet.stamp(), "meters": fleet.meter_readings(q.get("namespace"), q.get("pod"))}
            )
        if path == "clock" and method == "GET":
            return json_response({"now": fleet.stamp(), "mode": fleet.clock.mode})
        if path == "clock/advance" and method == "POST":
            body = await self._body(request)
            seconds = body.get("seconds") if isinstance(body, dict) else None
            if not isinstance(seconds, int | float) or seconds < 0:
                raise FleetError(422, "Invalid", "clock/advance needs a non-negative number of seconds")
            fleet.advance(float(seconds))
            return json_response({"now": fleet.stamp(), "mode": fleet.clock.mode})
        if path == "snapshot" and method == "GET":
            return json_response(fleet.snapshot())
        if path == "restore" and method == "POST":
            body = await self._body(request)
            try:
                restored = Fleet.restore(body)
            except (ValueError, KeyError, TypeError, ValidationError) as exc:
                raise _bad(f"not a valid fleet snapshot: {exc}") from exc
            self.fleet.store.close_watchers()
            self.fleet = restored
            return json_response(
                {
                    "restored": True,
                    "now": restored.stamp(),
                    "nodes": restored.store.count("nodes"),
                    "pods": restored.store.count("pods"),
                }
            )
        if path.startswith("pods/") and path.endswith("/log") and method == "POST":
            parts = path.split("/")
            if len(parts) != 4:
                raise _bad("use /sandbox/v1/pods/{namespace}/{name}/log")
            body = await self._body(request)
            lines = body.get("lines") if isinstance(body, dict) else None
            if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
                raise FleetError(422, "Invalid", "a log append needs lines: a list of strings")
            fleet.append_log(parts[1], parts[2], lines)
            return json_response({"appended": len(lines)})
        if path == "events" and method == "POST":
            body = await self._body(request)
            if not isinstance(body, dict):
                raise _bad("an event is a JSON object")
            obj_kind, name = body.get("kind"), body.get("name")
            reason, message = body.get("reason"), body.get("message")
            if obj_kind not in ("Node", "Pod") or not isinstance(name, str) or not name:
                raise FleetError(422, "Invalid", "an event needs kind (Node or Pod) and name")
            if not isinstance(reason, str) or not reason or not isinstance(message, str):
                raise FleetError(422, "Invalid", "an event needs a reason and a message (strings)")
            etype = body.get("type", "Warning")
            if etype not in ("Normal", "Warning"):
                raise FleetError(422, "Invalid", "an event's type is Normal or Warning")
            obj = fleet.node(name) if obj_kind == "Node" else fleet._find_pod(body.get("namespace"), name)
            fleet.event(obj, etype, reason, message, str(body.get("component") or "sandbox"))
            return json_response({"recorded": True}, 201)
        if path == "info" and method == "GET":
            return json_response(
                {
                    "spec": fleet.spec.model_dump(),
                    "now": fleet.stamp(),
                    "nodes": fleet.store.count("nodes"),
                    "pods": fleet.store.count("pods"),
                    "ready_at": ts(fleet.now()),
                }
            )
        raise FleetError(404, "NotFound", f"no sandbox admin endpoint {method} /sandbox/v1/{path}")
