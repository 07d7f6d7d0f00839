"""The fleet's ASGI app: authentication, RBAC, and routing of each Kubernetes API path to its handler.

Every request is authenticated by its bearer token (admin, reader or writer) and authorised with
Kubernetes RBAC from deploy/base/rbac.yaml (:mod:`sandbox.fleet.rbac`) before it is served; a refusal is
kube-apiserver's 403 ``Forbidden`` Status. `FleetAPI` composes the handlers (one mixin per concern, see
state.py), so this module is only the front door: who is asking, may they, and which handler answers.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.fleet import rbac
from sandbox.fleet.api.discovery import BY_PATH, K8S_VERSION, RESOURCES, api_groups, resource_list
from sandbox.fleet.api.reads import ReadsMixin
from sandbox.fleet.api.request_log import RequestLog
from sandbox.fleet.api.responses import error_response, json_response, status_body
from sandbox.fleet.api.sandbox_v1 import SandboxV1Mixin
from sandbox.fleet.api.subresources import SubresourcesMixin
from sandbox.fleet.api.tables import table
from sandbox.fleet.api.watch import WatchMixin
from sandbox.fleet.api.writes import WritesMixin
from sandbox.fleet.world import Fleet, FleetError, not_found


class FleetAPI(ReadsMixin, WatchMixin, WritesMixin, SubresourcesMixin, SandboxV1Mixin):
    """The ASGI app. ``token`` is the admin's; the reader's, writer's and agent's are made up when not given, and
    ``policy`` (default: deploy/base/rbac.yaml, read now) authorises them."""

    def __init__(
        self,
        fleet: Fleet,
        token: str,
        cluster: str = "sandbox",
        *,
        reader_token: str | None = None,
        writer_token: str | None = None,
        agent_token: str | None = None,
        policy: rbac.Policy | None = None,
    ) -> None:
        self.fleet = fleet
        self.token = token
        self.tokens = {
            "admin": token,
            "reader": reader_token or secrets.token_urlsafe(32),
            "writer": writer_token or secrets.token_urlsafe(32),
            "agent": agent_token or secrets.token_urlsafe(32),
        }
        if len(set(self.tokens.values())) != len(self.tokens):
            raise ValueError("the admin, reader, writer and agent tokens must differ")
        self.policy = policy if policy is not None else rbac.load_policy()
        self.requests = RequestLog()
        self.cluster = cluster
        # A control-plane outage (sandbox/v1/outage): until when (monotonic) and how; the admin API
        # stays up, so a test can end it and inspect the world.
        self.outage: tuple[float, str] | None = None
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
        if self.outage is not None and (left := self.outage[0] - time.monotonic()) > 0:
            if self.outage[1] == "hang":  # accepts, reads, and answers only when the outage ends
                await asyncio.sleep(left)
            else:
                body = status_body(
                    503, "ServiceUnavailable", "the apiserver is shutting down (sandbox outage)"
                )
                return json_response(body, 503)
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
            return json_response(api_groups())
        if segs[:1] == ["api"] and len(segs) >= 2:
            group, version, rest = "", segs[1], segs[2:]
        elif segs[:1] == ["apis"] and len(segs) >= 2:
            if len(segs) == 2:
                groups = {g["name"]: g for g in api_groups()["groups"]}
                if segs[1] not in groups:
                    raise FleetError(404, "NotFound", "the server could not find the requested resource")
                return json_response({"kind": "APIGroup", "apiVersion": "v1", **groups[segs[1]]})
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise FleetError(404, "NotFound", "the server could not find the requested resource")
        if not any(r.group == group and r.version == version for r in RESOURCES):
            raise FleetError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return json_response(resource_list(group, version))
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
                    table(
                        res, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}, self.fleet.now()
                    )
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
