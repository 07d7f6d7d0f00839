"""The HTTP surface of ``supply-agent serve`` (FastAPI): webhooks in, Slack clicks, health, metrics, incidents.

Handlers stay thin: read the raw body (bounded: 413 past the limit), hand it to the :class:`Service`,
answer what it says. Signatures are checked over the raw bytes before anything is parsed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from supply_agent.service.core import Reply, Service


class _TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    """The raw body, refusing past ``limit`` bytes without reading it all (a declared or a streamed size)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _reply(r: Reply) -> JSONResponse:
    return JSONResponse(r.body, status_code=r.status, headers=r.headers or None)


def create_app(service: Service, *, manage: bool = True) -> FastAPI:
    """The app; with ``manage`` its lifespan starts and stops the service's workers."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage:
            service.start()
        try:
            yield
        finally:
            if manage:
                service.stop()

    app = FastAPI(title="supply-agent", version="0.1.0", lifespan=lifespan)
    limit = service.settings.max_body_bytes

    @app.exception_handler(_TooLarge)
    async def too_large(_: Request, __: _TooLarge) -> JSONResponse:
        return JSONResponse({"error": f"body larger than {limit} bytes"}, status_code=413)

    @app.post("/webhooks/pagerduty")
    async def pagerduty(request: Request) -> JSONResponse:
        body = await _body(request, limit)
        return _reply(await service.accept_pagerduty(body, request.headers.get("x-pagerduty-signature")))

    @app.post("/webhooks/alertmanager")
    async def alertmanager(request: Request) -> JSONResponse:
        body = await _body(request, limit)
        return _reply(await service.accept_alertmanager(body, request.headers.get("authorization")))

    @app.post("/slack/interactions")
    async def slack(request: Request) -> JSONResponse:
        body = await _body(request, limit)
        h = request.headers
        return _reply(service.click(body, h.get("x-slack-request-timestamp"), h.get("x-slack-signature")))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        problems = service.ready()
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/incidents")
    def incidents(
        limit: int = Query(50, ge=1, le=1000),
        status: str | None = Query(None, pattern="^(open|paused|closed)$"),
    ) -> list[dict[str, Any]]:
        return [
            i.model_dump(mode="json", exclude={"summary"}) for i in service.store.incidents(limit, status)
        ]

    @app.get("/dead-letters")
    def dead_letters(limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        """Jobs and events that failed for good (each also on its incident's timeline)."""
        jobs = service.jobs.with_status("dead", limit=limit)
        failed = service.events.failed(limit)
        return {
            "jobs": [
                {
                    "id": j.id,
                    "kind": j.kind,
                    "tool": j.payload.get("tool"),
                    "incident_id": j.incident_id,
                    "attempts": j.attempts,
                    "error": j.last_error,
                }
                for j in jobs
            ],
            "events": [
                {
                    "id": ev.id,
                    "source": ev.source,
                    "event_type": ev.event_type,
                    "attempts": ev.attempts,
                    "error": why,
                }
                for ev, why in failed
            ],
        }

    @app.get("/incidents/{incident_id}")
    def incident(incident_id: str) -> dict[str, Any]:
        row = service.store.get(incident_id)
        if row is None:
            raise HTTPException(404, f"no incident {incident_id}")
        return {
            **row.model_dump(mode="json"),
            "timeline": [e.model_dump(mode="json") for e in service.store.timeline(incident_id)],
        }

    return app
