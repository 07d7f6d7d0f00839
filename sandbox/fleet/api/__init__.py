"""The fleet's HTTP face: the Kubernetes REST API (what kubectl and the official client use), plus the
sandbox's own admin endpoints under ``/sandbox/v1`` (fault injection, clock, alerts, truth, snapshot).

A package of one module per concept (see each module's docstring): `FleetAPI`, in `app.py`, is the ASGI
app that authenticates, authorises and routes; the handlers it composes live in `reads`, `watch`,
`writes`, `subresources` and `sandbox_v1`. Everything callers use is importable from here, as it was
from the single module this package replaced.
"""

from __future__ import annotations

from sandbox.fleet.api.app import FleetAPI
from sandbox.fleet.api.discovery import BY_PATH, K8S_VERSION, RESOURCES, Resource
from sandbox.fleet.api.request_log import RequestLog
from sandbox.fleet.api.responses import error_response, json_response, status_body
from sandbox.fleet.api.tables import table_for

__all__ = [
    "BY_PATH",
    "K8S_VERSION",
    "RESOURCES",
    "FleetAPI",
    "RequestLog",
    "Resource",
    "error_response",
    "json_response",
    "status_body",
    "table_for",
]
