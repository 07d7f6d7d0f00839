"""The console in a real browser: headless Chromium (Debian's, found or installed by scripts/chromium.sh)
driven by Playwright, on a real ``serve`` and a real ``supply-agent console --store``.

- the demo's incidents appear (``demo --keep``, then ``console --store`` on what it kept), a filter works,
  an incident's timeline shows the gate's reasons;
- an Alertmanager page carrying script tags, a ``javascript:`` link, bidirectional overrides and a very
  long string goes through ``serve`` into an incident whose pages run none of it and stay usable;
- the containment view updates, without a reload, when an approved action lands.

Each page's screenshot is taken by the same harness: into the test's folder, or into docs/console/
with CONSOLE_SCREENSHOTS=docs/console (how the README's pictures were made).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from sandbox.fleet.admin import AdminClient
from tests.support.served import Served, approve_values, click, post_page, serve_env, until, xid79_page
from tests.support.service_harness import AM_TOKEN, outside_world

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "console-browser-token-1a2b3c4d5e6f"
PWNED = "window.__pwned"
PAYLOAD = (
    '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    '<a href="javascript:window.__pwned = 3">click</a> \u202eexe.txt\u202c'
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "chromium.sh"), "path"], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, f"scripts/chromium.sh path failed:\n{out.stderr}"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=out.stdout.strip().splitlines()[-1], headless=True)
        try:
            yield b
        finally:
            b.close()


def _shots(tmp_path: Path) -> Path:
    where = os.environ.get("CONSOLE_SCREENSHOTS")
    path = (ROOT / where) if where else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _page(browser: Browser, base: str, errors: list[str]) -> Page:
    context = browser.new_context(
        extra_http_headers={"Authorization": f"Bearer {TOKEN}"}, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    return page


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_demos_incidents_a_filter_and_the_gates_reasons(browser: Browser, tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPLY_AGENT_")}
    demo = subprocess.run(
        [sys.executable, "-m", "supply_agent.cli", "demo", "--keep", str(keep)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    port = _free_port()
    console = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "supply_agent.cli",
            "console",
            "--store",
            f"sqlite:///{keep / 'supply-agent.db'}",
            "--port",
            str(port),
        ],
        env=env | {"SUPPLY_AGENT_CONSOLE_TOKEN": TOKEN, "SUPPLY_AGENT_DATA_DIR": str(keep)},
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    shots = _shots(tmp_path)
    errors: list[str] = []
    try:
        until("the console", lambda: _up(f"{base}/console/login"), 30)
        page = _page(browser, base, errors)
        page.goto(f"{base}/console/")
        rows = page.locator("#incident-list tbody tr")
        assert rows.count() >= 2, page.content()[:2000]
        text = page.locator("#incident-list").inner_text()
        assert "xid-fallen-off-bus" in text  # the demo's fatal XID
        page.screenshot(path=str(shots / "incidents.png"), full_page=True)
        # A filter: the escalated ones only (the demo's driver rollout), by the form, as a person would.
        page.select_option("select[name=status]", "escalated")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**status=escalated**")
        filtered = page.locator("#incident-list").inner_text()
        assert "escalated" in filtered and "mitigated" not in filtered
        # The XID incident's timeline: the gate's decisions with their reasons and limits.
        page.goto(f"{base}/console/?klass=xid-fallen-off-bus")
        page.locator("#incident-list tbody tr a").first.click()
        page.wait_for_selector("#timeline")
        timeline = page.locator("#timeline").inner_text()
        assert "ALLOW k8s.cordon_node" in timeline and "within every limit consulted" in timeline
        assert "limits consulted" in timeline
        page.screenshot(path=str(shots / "incident.png"), full_page=True)
        assert not errors, errors
    finally:
        console.terminate()
        console.wait(20)


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _alertmanager(url: str, node: str) -> httpx.Response:
    alert = {
        "status": "firing",
        "labels": {"alertname": "KubeNodeNotReady", "node": node, "severity": "critical", "note": PAYLOAD},
        "annotations": {"summary": f"{node} is NotReady {PAYLOAD}", "description": "long " * 4000},
        "startsAt": "2026-11-30T12:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "javascript:window.__pwned = 4",
        "fingerprint": "f00dfacef00dface",
    }
    body = {
        "version": "4",
        "groupKey": '{}:{alertname="KubeNodeNotReady"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "supply-agent",
        "groupLabels": {"alertname": "KubeNodeNotReady"},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert],
    }
    return httpx.post(
        f"{url}/webhooks/alertmanager",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"},
    )


def test_untrusted_text_runs_nothing_and_containment_updates_live(browser: Browser, tmp_path: Path) -> None:
    with outside_world(tmp_path) as (fleet, kubeconfig, pd, slack):
        admin = AdminClient.from_kubeconfig(kubeconfig)
        node, hook, pd_id = xid79_page(fleet, admin, pd)
        env = serve_env(tmp_path, pd, slack) | {"SUPPLY_AGENT_CONSOLE_TOKEN": TOKEN}
        served = Served(env, kubeconfig, tmp_path / "serve.log")
        shots = _shots(tmp_path)
        errors: list[str] = []
        try:
            other = sorted(n["metadata"]["name"] for n in fleet.store.items("nodes"))[-1]
            assert _alertmanager(served.url, other).status_code == 202
            assert post_page(served.url, hook).status_code == 202
            until("the Slack prompt", lambda: slack.posted())
            page = _page(browser, served.url, errors)
            # The hostile incident: shown as text, nothing of it runs, the page still works.
            page.goto(f"{served.url}/console/?node={other}")
            page.wait_for_selector("#incident-list tbody tr a")
            page.locator("#incident-list tbody tr a").first.click()
            page.wait_for_selector("#timeline")
            assert page.evaluate(PWNED) is None
            body = page.locator("main").inner_text()
            assert "<script>window.__pwned = 1</script>" in body  # the text itself, visible
            assert "<U+202E>" in body  # the override shown, not obeyed
            assert page.locator("a[href^='javascript']").count() == 0
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1280 + 20, f"a long string widened the page to {width}px"
            page.screenshot(path=str(shots / "untrusted.png"), full_page=False)
            page.goto(f"{served.url}/console/")  # and the list with it still filters
            page.fill("input[name=node]", node)
            page.click("#filters button[type=submit]")
            page.wait_for_url(f"**node={node}**")
            assert f"pd-{pd_id}" in page.locator("#incident-list").inner_text()
            assert page.evaluate(PWNED) is None

            # Containment, open while the approved drain lands: its figures change with no reload.
            page.goto(f"{served.url}/console/containment")
            page.wait_for_selector("#budgets")
            page.evaluate("window.__loaded_once = true")  # gone if the page reloaded
            before = _gpus_out(page)
            page.screenshot(path=str(shots / "containment.png"), full_page=True)
            [value] = approve_values(slack.posted())
            assert click(served.url, value).status_code == 200
            until("PagerDuty resolved", lambda: "resolved" in pd.statuses(pd_id), 90)
            deadline = time.monotonic() + 30
            while _gpus_out(page) == before and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            after = _gpus_out(page)
            assert after != before, (before, after)
            assert page.evaluate("window.__loaded_once") is True  # swapped in by the stream
            page.goto(f"{served.url}/console/evals")
            page.screenshot(path=str(shots / "evals.png"), full_page=True)
            assert not [e for e in errors if "__pwned" in e or "dialog" in e], errors
            assert not [e for e in errors if "Content Security Policy" in e], errors
        finally:
            served.stop()


def _gpus_out(page: Page) -> Any:
    """The budgets as shown (the approved drain adds a write and disrupts a customer)."""
    return page.locator("#budgets tbody").inner_text()
