"""A Slack click is stored by the intake process itself: answered 200 within Slack's 3 s whether or not
a worker is up (Slack does not send an interaction again), and refused only for a bad signature or
body. Before, intake forwarded clicks to the worker and answered 503 while it was starting."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from supply_agent.intake.app import IntakeApp
from supply_agent.intake.events import EventLog
from supply_agent.intake.signing import sign_slack
from supply_agent.settings import Settings
from tests.support.slack_stub import block_actions_payload, click_body

SECRET = "slack-signing-secret-0001"
VALUE = "pd-P1|" + "a" * 64


def _post(app: IntakeApp, body: bytes, secret: str = SECRET, ts: int | None = None) -> httpx.Response:
    stamp = int(time.time()) if ts is None else ts
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": str(stamp),
        "x-slack-signature": sign_slack(body, secret, stamp),
    }

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
            return await client.post("/slack/interactions", content=body, headers=headers)

    return asyncio.run(go())


def test_a_click_is_stored_with_no_worker_and_answered_200(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, slack_signing_secret=SecretStr(SECRET))
    events = EventLog.from_url(f"sqlite:///{tmp_path / 'intake.db'}")
    try:
        # The worker's socket does not exist: the worker is down, or still starting.
        app = IntakeApp(settings, events, str(tmp_path / "no-worker.sock"))
        body = click_body(block_actions_payload("U0APPROVER", "approve", VALUE))
        r = _post(app, body)
        assert r.status_code == 200 and r.json()["status"] == "stored", r.text
        (event_id,) = events.pending()
        stored = events.get(event_id)
        assert stored is not None and stored.source == "slack" and stored.body == body
        assert _post(app, body).json()["status"] == "duplicate"  # a replay is one click
        assert _post(app, body, secret="wrong").status_code == 401
        assert _post(app, body, ts=int(time.time()) - 600).status_code == 401
        bad = b"payload=" + json.dumps({"type": "view_submission"}).encode()
        r = _post(app, bad)
        assert r.status_code == 400 and "block_actions" in r.json()["error"]
        assert events.pending() == [event_id]  # nothing refused was stored
    finally:
        events.close()
