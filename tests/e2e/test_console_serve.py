"""The console as ``serve`` serves it: a real ``serve`` (intake and worker processes) on the sandbox fleet,
a page handled to its approval prompt, and the console's pages through the intake's forward to the
worker, server-sent events included (streamed, not buffered to the end of a stream that never ends)."""

from __future__ import annotations

from pathlib import Path

import httpx

from sandbox.fleet.admin import AdminClient
from tests.support.served import Served, post_page, serve_env, until, xid79_page
from tests.support.service_harness import outside_world

TOKEN = "console-e2e-token-9f8e7d6c5b4a"


def test_serve_shows_the_incident_its_decision_and_live_containment(tmp_path: Path) -> None:
    with outside_world(tmp_path) as (fleet, kubeconfig, pd, slack):
        admin = AdminClient.from_kubeconfig(kubeconfig)
        node, hook, pd_id = xid79_page(fleet, admin, pd)
        env = serve_env(tmp_path, pd, slack) | {"SUPPLY_AGENT_CONSOLE_TOKEN": TOKEN}
        served = Served(env, kubeconfig, tmp_path / "serve.log")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        try:
            assert httpx.get(f"{served.url}/console/").status_code == 401
            assert post_page(served.url, hook).status_code == 202
            until("the Slack prompt", lambda: slack.posted())
            iid = f"pd-{pd_id}"
            listed = httpx.get(f"{served.url}/console/", params={"node": node}, headers=auth)
            assert listed.status_code == 200 and f"/console/incidents/{iid}" in listed.text
            page = httpx.get(f"{served.url}/console/incidents/{iid}", headers=auth)
            assert page.status_code == 200
            assert "decision" in page.text and "limits consulted" in page.text
            assert f"https://app.pagerduty.com/incidents/{pd_id}" in page.text
            assert "pending" in page.text  # the approval waiting
            # The stream: its first event arrives through the intake process while the stream stays open.
            with httpx.stream(
                "GET", f"{served.url}/console/containment/stream", headers=auth, timeout=20
            ) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                seen = ""
                for chunk in stream.iter_text():
                    seen += chunk
                    if "\n\n" in seen:
                        break
            assert seen.startswith("event: containment\n") and 'id="budgets"' in seen
            assert httpx.get(f"{served.url}/console/static/htmx.min.js").status_code == 200
        finally:
            served.stop()
