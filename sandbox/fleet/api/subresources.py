"""Subresources: a pod's eviction (through its PodDisruptionBudgets), log and proxy (to the node-agent),
a deployment's scale, and the read-only status of pods, deployments and nodes.

Each is a small API of its own (its own body kind, verbs and errors), so they are served apart from the
object they hang off; the writes among them commit through writes.py.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sandbox.fleet.api.discovery import Resource
from sandbox.fleet.api.responses import bad, invalid, json_response, status_body
from sandbox.fleet.api.state import APIState
from sandbox.fleet.patch import PatchError, json_patch, merge_patch
from sandbox.fleet.store import Obj, thaw
from sandbox.fleet.world import FleetError


class SubresourcesMixin(APIState):
    """Eviction, log, proxy, scale and status."""

    async def _subresource(
        self, request: Request, res: Resource, namespace: str, name: str, sub: str, sub_path: str
    ) -> Response:
        fleet, method = self.fleet, request.method
        if res.plural == "pods" and sub == "eviction" and method == "POST":
            dry = self._dry_run(request)
            body = await self._body(request)
            if not isinstance(body, dict):
                raise bad("an eviction body must be a policy/v1 Eviction object")
            if (body.get("metadata") or {}).get("name", name) != name:
                raise bad("name in URL does not match name in Eviction object")
            opts = body.get("deleteOptions") or {}
            dry = dry or opts.get("dryRun") == ["All"]
            try:
                fleet.evict(namespace, name, dry_run=dry, uid=(opts.get("preconditions") or {}).get("uid"))
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
                raise bad(f"tailLines and limitBytes must be integers: {exc}") from exc
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
                raise bad(f"error decoding patch: {exc}") from exc
        else:
            raise FleetError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if not isinstance(new, dict):
            raise bad("a Scale must be an object")
        self._check_rv(
            res, dep, (new.get("metadata") or {}).get("resourceVersion") if request.method == "PUT" else None
        )
        replicas = (new.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(
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
