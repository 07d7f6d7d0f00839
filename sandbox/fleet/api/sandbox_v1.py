"""The sandbox's own endpoints under ``/sandbox/v1``: fault injection (in the world, and a control-plane
outage: the Kubernetes API refusing, or accepting and never answering, for a while), the clock, alerts, ground truth,
meters, snapshot and restore, log and event injection, the request log, and the routes to the PagerDuty
emulator (:mod:`sandbox.fleet.pagerduty`).

No real cluster has these: they are how tests, evals and the demo drive and inspect the world. (The
client for them is :mod:`sandbox.fleet.admin`; this is the server side.)
"""

from __future__ import annotations

import time

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from sandbox.fleet import alerts as alert_rules
from sandbox.fleet import pagerduty
from sandbox.fleet.api.responses import bad, error_response, json_response
from sandbox.fleet.api.state import APIState
from sandbox.fleet.clock import ts
from sandbox.fleet.faults import FaultKind
from sandbox.fleet.world import Fleet, FleetError


class SandboxV1Mixin(APIState):
    """The ``/sandbox/v1`` endpoints."""

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
        if path == "outage" and method == "POST":
            body = await self._body(request)
            if not isinstance(body, dict) or not isinstance(body.get("seconds"), int | float):
                raise bad('an outage is {"seconds": N, "mode": "refuse" | "hang"}')
            mode = str(body.get("mode", "refuse"))
            if mode not in ("refuse", "hang"):
                raise FleetError(422, "Invalid", f"outage mode must be 'refuse' or 'hang', got {mode!r}")
            self.outage = (time.monotonic() + float(body["seconds"]), mode)
            return json_response({"seconds": body["seconds"], "mode": mode})
        if path == "faults" and method == "GET":
            return json_response([f.model_dump(mode="json") for f in fleet.faults.values()])
        if path == "faults" and method == "POST":
            body = await self._body(request)
            if not isinstance(body, dict):
                raise bad("a fault is a JSON object")
            try:
                kind = FaultKind(str(body.get("kind")))
            except ValueError as exc:
                raise FleetError(
                    422,
                    "Invalid",
                    f"unknown fault kind {body.get('kind')!r}; known: "
                    f"{', '.join(k.value for k in FaultKind)}",
                ) from exc
            known = {"kind", "node", "gpu", "code", "namespace", "pod", "detail", "recovery_action"}
            known |= {"rack", "switch", "nodes", "driver"}  # component faults (rack, switch, rollout)
            if unknown := set(body) - known:
                raise FleetError(422, "Invalid", f"unknown fault field(s): {', '.join(sorted(unknown))}")
            for field in ("gpu", "code"):
                if body.get(field) is not None and not isinstance(body[field], int):
                    raise FleetError(422, "Invalid", f"fault field {field!r} must be an integer")
            nodes = body.get("nodes")
            if nodes is not None and (
                not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes)
            ):
                raise FleetError(422, "Invalid", "fault field 'nodes' must be a list of node names")
            fault = fleet.inject(
                kind,
                node=body.get("node"),
                gpu=body.get("gpu"),
                code=body.get("code"),
                namespace=body.get("namespace"),
                pod=body.get("pod"),
                detail=str(body.get("detail") or ""),
                recovery_action=body.get("recovery_action"),
                rack=body.get("rack"),
                switch=body.get("switch"),
                nodes=nodes,
                driver=body.get("driver"),
            )
            return json_response(fault.model_dump(mode="json"), 201)
        if path == "faults/clear" and method == "POST":
            body = (await self._body(request) if (await request.body()).strip() else {}) or {}
            if not isinstance(body, dict):
                raise bad('a clear is {}, {"node": N}, {"rack": R}, {"switch": S} or {"node": N, "gpu": G}')
            if unknown := set(body) - {"node", "rack", "switch", "gpu"}:
                raise FleetError(422, "Invalid", f"unknown clear field(s): {', '.join(sorted(unknown))}")
            gpu = body.get("gpu")
            if gpu is not None and (not isinstance(gpu, int) or isinstance(gpu, bool)):
                raise FleetError(422, "Invalid", "clear field 'gpu' must be an integer (a GPU index)")
            cleared = fleet.clear(
                node=body.get("node"), rack=body.get("rack"), switch=body.get("switch"), gpu=gpu
            )
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
            raise bad(f"unknown alert format {fmt!r}: use alertmanager, pagerduty or raw")
        if (incident_id := pagerduty.incident_of(path)) is not None and method == "GET":
            details = request.query_params.get("details", "flat")
            if details not in ("flat", "alertmanager"):
                raise bad(f"unknown details {details!r}: use flat or alertmanager")
            return json_response(
                pagerduty.incident_alerts(
                    fleet.faults.values(),
                    now=fleet.now(),
                    cluster=self.cluster,
                    incident_id=incident_id,
                    details="alertmanager" if details == "alertmanager" else "flat",
                )
            )
        if path == "truth" and method == "GET":
            return json_response(fleet.truth())
        if path == "requests" and method == "GET":
            return json_response(self.requests.as_dict())
        if path == "meters" and method == "GET":
            q = request.query_params
            return json_response(
                {
                    "now": fleet.stamp(),
                    "meters": fleet.meter_readings(q.get("namespace"), q.get("pod"), q.get("customer")),
                }
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
                raise bad(f"not a valid fleet snapshot: {exc}") from exc
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
                raise bad("use /sandbox/v1/pods/{namespace}/{name}/log")
            body = await self._body(request)
            lines = body.get("lines") if isinstance(body, dict) else None
            if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
                raise FleetError(422, "Invalid", "a log append needs lines: a list of strings")
            fleet.append_log(parts[1], parts[2], lines)
            return json_response({"appended": len(lines)})
        if path == "events" and method == "POST":
            body = await self._body(request)
            if not isinstance(body, dict):
                raise bad("an event is a JSON object")
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
