"""The console on a big store: time to first byte of the incident list (plain, filtered, a later page)
and of a 500-entry timeline, page weight, and queries per page, on 100,000 stored incidents.

    .venv/bin/python benchmarks/console.py [--incidents 100000] [--timeline 500] [--runs 20]

A real ``supply-agent console --store`` process on a SQLite store filled here (bulk inserts of incident
rows, their entities and one long timeline), read over HTTP on loopback. Targets: first byte of the
list < 200 ms (p50) on 100,000 incidents; queries per page independent of the store's size.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import event, insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supply_agent.incidents.store import EntityRow, IncidentRow, IncidentStore, TimelineRow

TOKEN = "bench-console-token-000000000000"


def fill(url: str, n: int, timeline: int) -> str:
    store = IncidentStore.from_url(url)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows, ents = [], []
    for i in range(n):
        iid = f"inc-{i:08d}"
        at = t0 + timedelta(seconds=30 * i)
        rows.append(
            {
                "id": iid,
                "title": f"GPU fell off the bus on node-{i % 5000:05d}",
                "alertname": "GpuXidError" if i % 3 else "KubeNodeNotReady",
                "playbook_id": "xid-fallen-off-bus" if i % 3 else "node-not-ready",
                "severity": "critical",
                "status": "closed" if i % 10 else "open",
                "outcome": "mitigated" if i % 7 else "escalated",
                "opened_at": at,
                "updated_at": at,
            }
        )
        ents += [
            {"incident_id": iid, "kind": "node", "value": f"node-{i % 5000:05d}"},
            {"incident_id": iid, "kind": "pool", "value": f"pool-{i % 8}"},
            {"incident_id": iid, "kind": "customer", "value": f"cust-{i % 300}"},
        ]
    with store.engine.begin() as conn:
        for k in range(0, n, 10_000):
            conn.execute(insert(IncidentRow), rows[k : k + 10_000])
        for k in range(0, len(ents), 30_000):
            conn.execute(insert(EntityRow), ents[k : k + 30_000])
        long_one = rows[n // 2]["id"]
        conn.execute(
            insert(TimelineRow),
            [
                {
                    "incident_id": long_one,
                    "seq": s,
                    "at": t0 + timedelta(seconds=s),
                    "node": "gate" if s % 3 == 0 else "investigate",
                    "kind": "decision" if s % 3 == 0 else "evidence",
                    "text": f"step {s}: " + "evidence text " * 8,
                    "data": {"reasons": ["within every limit consulted"], "limits": ["rate_limits.per_hour"]}
                    if s % 3 == 0
                    else {},
                }
                for s in range(timeline)
            ],
        )
    store.close()
    return str(long_one)


def queries_per_page(url: str, paths: list[str]) -> dict[str, int]:
    """The same pages in-process, counting the SQL statements each runs."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from supply_agent.settings import Settings
    from supply_agent.web.app import console_app
    from supply_agent.web.mount import console_for_store

    settings = Settings(console_token=TOKEN)  # type: ignore[arg-type]
    console = console_for_store(settings, url, None)
    counted: list[str] = []
    event.listen(console.reads.engine, "before_cursor_execute", lambda *a: counted.append(a[2]))
    client = TestClient(Starlette(routes=[Mount("/console", console_app(console))]))
    out = {}
    for path in paths:
        client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        counted.clear()
        client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        out[path] = len(counted)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--incidents", type=int, default=100_000)
    ap.add_argument("--timeline", type=int, default=500)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    out = Console(width=150)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'supply-agent.db'}"
        t0 = time.perf_counter()
        long_one = fill(url, args.incidents, args.timeline)
        out.print(f"filled {args.incidents:,} incidents in {time.perf_counter() - t0:.1f} s")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPLY_AGENT_")}
        env |= {
            "SUPPLY_AGENT_CONSOLE_TOKEN": TOKEN,
            "SUPPLY_AGENT_DATA_DIR": tmp,
            "SUPPLY_AGENT_LOG_LEVEL": "warning",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "supply_agent.cli", "console", "--store", url, "--port", str(port)],
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/console/login", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            first = httpx.get(f"{base}/console/", headers=auth).text
            cursor = first.split("cursor=")[1].split('"')[0] if "cursor=" in first else ""
            pages = {
                "incident list": "/console/",
                "filtered: node, status": "/console/?node=node-01234&status=closed",
                "filtered: customer, class": "/console/?customer=cust-18&klass=node-not-ready",
                "an older page (cursor)": f"/console/?cursor={cursor}",
                f"one incident, {args.timeline}-entry timeline": f"/console/incidents/{long_one}",
            }
            table = Table(title=f"console on {args.incidents:,} incidents (SQLite, {args.runs} runs each)")
            for col in ("page", "first byte p50", "p95", "whole page p50", "weight", "queries"):
                table.add_column(col, justify="right" if col != "page" else "left")
            queries = queries_per_page(url, list(pages.values()))
            with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
                for name, path in pages.items():
                    ttfb, whole, size = [], [], 0
                    for _ in range(args.runs):
                        t = time.perf_counter()
                        with client.stream("GET", path) as r:
                            it = r.iter_raw()
                            chunk = next(it, b"")
                            ttfb.append(time.perf_counter() - t)
                            size = len(chunk) + sum(len(c) for c in it)
                        whole.append(time.perf_counter() - t)
                        assert r.status_code == 200, (path, r.status_code)
                    p95 = sorted(ttfb)[max(0, int(0.95 * len(ttfb)) - 1)]
                    table.add_row(
                        name,
                        f"{statistics.median(ttfb) * 1000:.1f} ms",
                        f"{p95 * 1000:.1f} ms",
                        f"{statistics.median(whole) * 1000:.1f} ms",
                        f"{size / 1024:.0f} KiB",
                        str(queries[path]),
                    )
            out.print(table)
            static = sum(
                len(httpx.get(f"{base}/console/static/{f}").content)
                for f in ("htmx.min.js", "htmx-ext-sse.js", "console.css")
            )
            out.print(f"static assets (once, cached by the browser): {static / 1024:.0f} KiB")
        finally:
            proc.terminate()
            proc.wait(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
