"""The shapes every answer of the fleet's API takes: JSON bodies and kube-apiserver's ``Status`` errors.

Kept apart so that every handler fails the same way kube-apiserver does (same ``reason``, ``code`` and
``details``), since the official client and kubectl branch on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from sandbox.fleet.world import FleetError


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


def bad(message: str) -> FleetError:
    return FleetError(400, "BadRequest", message)


def invalid(kind: str, name: str, group: str, causes: list[tuple[str, str]]) -> FleetError:
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
