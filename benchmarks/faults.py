"""Faults against the real service, with the figures an SRE asks for: does a blip become silence?

Each scenario runs `supply-agent serve`'s service in-process (the real app, SQLite stores, a sandbox
fleet over HTTPS, the PagerDuty and Slack stubs over the real SDKs), breaks one thing for a while,
heals it, and reports: webhooks acknowledged, stored, handled, incidents paged back to a human, lost
(acknowledged and neither handled nor paged back: must be 0), repeated actions (a world write done twice:
must be 0), the time from the fault clearing to progress, and (for the stalls) from the stall's start
to a human paged. The kills at each checkpoint are in tests/e2e/test_faults_kill.py.

    .venv/bin/python benchmarks/faults.py [--only NAME]
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supply_agent.logging import configure_logging  # noqa: E402
from tests.support.service_harness import AM_TOKEN, APPROVER, ServeHarness, serve_harness  # noqa: E402

WRITES = ("k8s.", "billing.issue_credit", "notify.customer")


@dataclass
class Figures:
    name: str
    acknowledged: int = 0
    stored: int = 0
    handled: int = 0
    paged_back: int = 0
    lost: int = 0
    repeated: int = 0
    to_progress_s: float | None = None
    to_page_s: float | None = None


def _until(check: Callable[[], Any], timeout: float = 90.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    return None


def _xid79(h: ServeHarness) -> dict[str, Any]:
    h.admin.inject("xid", node=h.node(), gpu=1, code=79)
    return h.pagerduty_webhooks()[0]


def _count(h: ServeHarness, f: Figures, acks: list[int]) -> None:
    f.acknowledged = sum(1 for s in acks if 200 <= s < 300)
    counts = h.service.events.counts()
    f.stored = sum(counts.values())
    f.handled = counts.get("handled", 0) + counts.get("ignored", 0)
    f.paged_back = int(sum(v for _, v in _samples(h, "supply_agent_handed_back_total")))
    # Lost: acknowledged, and neither handled nor handed back to a human.
    f.lost = 0 if f.paged_back else max(0, f.acknowledged - f.handled)
    seen: collections.Counter[str] = collections.Counter()
    for r in h.service.env.runtime.audit.records():
        if r.phase == "after" and r.outcome == "executed" and r.tool.startswith(WRITES):
            seen[json.dumps([r.incident_id, r.tool, r.params], sort_keys=True, default=str)] += 1
    f.repeated = sum(n - 1 for n in seen.values() if n > 1)


def _samples(h: ServeHarness, name: str) -> list[tuple[str, float]]:
    out = []
    for line in h.http.get("/metrics").text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            out.append((key, float(value)))
    return out


def _post(h: ServeHarness, hook: dict[str, Any]) -> int:
    return int(h.post_pagerduty(hook).status_code)


def _approve_and_finish(h: ServeHarness, pd_id: str) -> None:
    _until(h.slack.posted)
    h.click(APPROVER, "approve", h.button())
    _until(lambda: "resolved" in h.pd.statuses(pd_id))
    h.service.drain(60)


def store_locked(tmp: Path) -> Figures:
    f = Figures("incident store locked 12 s, 10 webhooks")
    with serve_harness(tmp) as h:
        h.admin.inject("xid", node=h.node(), gpu=1, code=79)
        h.admin.advance(1800)
        body = h.admin.alerts("alertmanager")[0]
        auth = {"authorization": f"Bearer {AM_TOKEN}", "content-type": "application/json"}
        conn = sqlite3.connect(tmp / "var" / "supply-agent.db", timeout=30, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        acks = []
        for i in range(10):
            flap = json.loads(json.dumps(body))
            for a in flap["alerts"]:
                a["startsAt"] = f"2026-01-01T00:{i:02d}:00Z"
            acks.append(
                h.http.post(
                    "/webhooks/alertmanager", content=json.dumps(flap).encode(), headers=auth
                ).status_code
            )
        time.sleep(12 - 0.1 * len(acks))
        conn.execute("COMMIT")
        conn.close()
        cleared = time.monotonic()
        _until(lambda: h.service.events.counts().get("pending", 0) == 0)
        f.to_progress_s = time.monotonic() - cleared
        h.service.drain(60)
        _count(h, f, acks)
    return f


def pd_alert_read(tmp: Path, status: int, seconds: float) -> Figures:
    f = Figures(f"PagerDuty alert read {status} for {seconds:.0f} s")
    with serve_harness(tmp) as h:
        hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        h.pd.outage(
            status, seconds, method="GET", path="/alerts$", retry_after="3" if status == 429 else None
        )
        start = time.monotonic()
        acks = [_post(h, hook)]
        _until(lambda: h.service.store.get(f"pd-{pd_id}"))
        f.to_progress_s = max(0.0, time.monotonic() - (start + seconds))
        _approve_and_finish(h, pd_id)
        _count(h, f, acks)
    return f


def kube_down(tmp: Path, mode: str, seconds: float) -> Figures:
    f = Figures(f"Kubernetes API {'refusing' if mode == 'refuse' else 'hanging'} {seconds:.0f} s")
    with serve_harness(tmp) as h:
        hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        h.admin.outage(seconds, mode)
        start = time.monotonic()
        acks = [_post(h, hook)]
        _until(h.slack.posted)
        f.to_progress_s = max(0.0, time.monotonic() - (start + seconds))
        _approve_and_finish(h, pd_id)
        _count(h, f, acks)
    return f


def pd_writes_down(tmp: Path, seconds: float, during: str) -> Figures:
    f = Figures(f"PagerDuty writes 500 for {seconds:.0f} s ({during})")
    with serve_harness(tmp) as h:
        hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        acks = []
        if during == "acknowledge":
            h.pd.outage(500, seconds, method="PUT")
            start = time.monotonic()
            acks.append(_post(h, hook))
            _until(lambda: "acknowledged" in h.pd.statuses(pd_id))
            f.to_progress_s = max(0.0, time.monotonic() - (start + seconds))
            _approve_and_finish(h, pd_id)
        else:  # the escalation after a rejected approval
            acks.append(_post(h, hook))
            _until(h.slack.posted)
            h.pd.outage(500, seconds)
            start = time.monotonic()
            h.click(APPROVER, "reject", h.button())
            _until(lambda: h.pd.incidents.get(pd_id, {}).get("escalation_policy", {}).get("id") == "PPOLICY1")
            f.to_progress_s = max(0.0, time.monotonic() - (start + seconds))
            h.service.drain(60)
        _count(h, f, acks)
    return f


def slow_pd(tmp: Path) -> Figures:
    f = Figures("PagerDuty 4 s a write (time to the Slack prompt)")
    with serve_harness(tmp) as h:
        hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        h.pd.delay_s = 4.0
        start = time.monotonic()
        acks = [_post(h, hook)]
        _until(h.slack.posted)
        f.to_progress_s = time.monotonic() - start
        h.pd.heal()
        _approve_and_finish(h, pd_id)
        _count(h, f, acks)
    return f


def slack_fault(tmp: Path, fault: str) -> Figures:
    f = Figures(f"Slack chat.postMessage {fault}")
    with serve_harness(tmp) as h:
        hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        if fault == "500 once":
            h.slack.fail_next(1)
        else:
            h.slack.rate_limit_next(3, retry_after="1")
        start = time.monotonic()
        acks = [_post(h, hook)]
        _until(h.slack.posted)
        f.to_progress_s = time.monotonic() - start
        _approve_and_finish(h, pd_id)
        _count(h, f, acks)
    return f


def stall(tmp: Path, what: str) -> Figures:
    f = Figures(f"dead man's switch: {what} (bound 5 s)")
    playbooks = tmp / "playbooks"
    shutil.copytree(ROOT / "playbooks", playbooks)
    g = playbooks / "_global.yaml"
    g.write_text(g.read_text().replace("stalled_after: 3m", "stalled_after: 5s"))
    with serve_harness(tmp, playbooks_dir=playbooks, watchdog_s=0.5) as h:
        hook = _xid79(h)
        pd_id = hook["event"]["data"]["id"]
        if what == "PagerDuty writes down":
            h.pd.fail_writes(500)
        else:
            h.admin.outage(600, "refuse")
        start = time.monotonic()
        acks = [_post(h, hook)]
        paged = _until(
            lambda: (
                [m for m in h.slack.posted() if "hands this back" in str(m.get("text", ""))]
                or [n for n in h.pd.notes(pd_id) if "hands this back" in n]
            )
        )
        f.to_page_s = time.monotonic() - start if paged else None
        _until(lambda: _samples(h, "supply_agent_handed_back_total"), 10)  # counted just after it is sent
        _count(h, f, acks)
        f.lost = 0 if paged else f.acknowledged
        h.pd.heal()
        h.admin.outage(0)
    return f


SCENARIOS: dict[str, Callable[[Path], Figures]] = {
    "store-locked": store_locked,
    "pd-read-500": lambda t: pd_alert_read(t, 500, 8),
    "pd-read-429": lambda t: pd_alert_read(t, 429, 6),
    "kube-refuse": lambda t: kube_down(t, "refuse", 3),
    "kube-hang": lambda t: kube_down(t, "hang", 5),
    "pd-ack-500": lambda t: pd_writes_down(t, 8, "acknowledge"),
    "pd-escalation-down": lambda t: pd_writes_down(t, 13, "escalation"),
    "pd-slow": slow_pd,
    "slack-500": lambda t: slack_fault(t, "500 once"),
    "slack-429": lambda t: slack_fault(t, "429 three times"),
    "stall-pd": lambda t: stall(t, "PagerDuty writes down"),
    "stall-kube": lambda t: stall(t, "Kubernetes API down"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = ap.parse_args()
    configure_logging("console", "error")
    logging.getLogger("pagerduty").setLevel(logging.CRITICAL)  # the package logs each 5xx it is served
    console = Console()
    rows = []
    for name in args.only or list(SCENARIOS):
        with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as d:
            console.print(f"[dim]running {name} ...[/]")
            rows.append(SCENARIOS[name](Path(d)))
    table = Table(
        title="Faults: acknowledged = stored = handled or paged back (stored and handled count the approval click too)"
    )
    for col in (
        "fault",
        "acked",
        "stored",
        "handled",
        "paged back",
        "lost",
        "repeated",
        "cleared → progress",
        "stall → paged",
    ):
        table.add_column(col, justify="right" if col != "fault" else "left")
    for f in rows:
        table.add_row(
            f.name,
            str(f.acknowledged),
            str(f.stored),
            str(f.handled),
            str(f.paged_back),
            f"[{'red' if f.lost else 'green'}]{f.lost}[/]",
            f"[{'red' if f.repeated else 'green'}]{f.repeated}[/]",
            "-" if f.to_progress_s is None else f"{f.to_progress_s:.1f} s",
            "-" if f.to_page_s is None else f"{f.to_page_s:.1f} s",
        )
    console.print(table)
    bad = [f.name for f in rows if f.lost or f.repeated]
    if bad:
        console.print(f"[red]lost or repeated work in: {', '.join(bad)}[/]")
        sys.exit(1)


if __name__ == "__main__":
    main()
