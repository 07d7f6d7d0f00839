"""An alert storm against `supply-agent serve` on loopback: is every event kept, and is intake fast?

Starts a sandbox fleet and `supply-agent serve` (real processes: the intake process on the port and
its worker process; uvicorn, SQLite) on loopback, then
sends Alertmanager webhooks (bearer token) at a fixed concurrency: one alert per incident group
flapping (a new startsAt each time), and a share of exact re-deliveries of bodies already sent, in a
shuffled order, as Alertmanager's retries and repeat notifications would. A 503 is retried after its
Retry-After, as a sender would.

Prints: lost (acknowledged but never handled; must be 0), incidents opened (must be the group count),
p50/p99 time to acknowledge, events per second, and how long after the last send every event was
handled. ``--single-process`` runs `serve --single-process` (intake and agent in one process) to compare.

    .venv/bin/python benchmarks/intake_storm.py [--events 5000] [--dup 0.3] [--groups 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.fleet.clock import SimClock  # noqa: E402
from sandbox.fleet.server import FleetServer  # noqa: E402
from sandbox.fleet.world import Fleet, FleetSpec  # noqa: E402
from supply_agent.logging import configure_logging  # noqa: E402

TOKEN = "bench-alertmanager-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bodies(nodes: list[str], events: int, dup: float, groups: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    unique = round(events * (1 - dup))
    out: list[bytes] = []
    for i in range(unique):
        node = nodes[i % groups]
        t = f"2026-11-23T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z"
        alert = {
            "status": "firing",
            "labels": {"alertname": "KubeNodeNotReady", "node": node, "severity": "critical"},
            "annotations": {"summary": f"{node} is NotReady"},
            "startsAt": t,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": hashlib.sha256(node.encode()).hexdigest()[:16],
        }
        body = {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="KubeNodeNotReady", node="{node}"}}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "supply-agent",
            "groupLabels": {"alertname": "KubeNodeNotReady", "node": node},
            "commonLabels": alert["labels"],
            "commonAnnotations": alert["annotations"],
            "externalURL": "http://alertmanager:9093",
            "alerts": [alert],
        }
        out.append(json.dumps(body).encode())
    firsts = list(out)
    for _ in range(events - unique):
        out.append(rnd.choice(firsts))
    rnd.shuffle(out)
    return out


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> tuple[int, dict[str, str]]:
    """One HTTP/1.1 POST on a kept-alive connection. A plain asyncio client: a general-purpose async
    client library costs more CPU per request than the server does, and would measure itself."""
    writer.write(
        b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers


async def _send(
    port: int, bodies: list[bytes], concurrency: int
) -> tuple[list[float], dict[int, int], float]:
    latencies: list[float] = []
    codes: dict[int, int] = {}
    it = iter(bodies)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for body in it:
                while True:
                    t0 = time.perf_counter()
                    try:
                        status, headers = await _post(reader, writer, body)
                    except (asyncio.IncompleteReadError, ConnectionError):
                        # the server closed a connection idle past its keep-alive (after a Retry-After
                        # wait): open another and send again, as a sender does
                        writer.close()
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                        continue
                    dt = time.perf_counter() - t0
                    codes[status] = codes.get(status, 0) + 1
                    if status == 503:  # the queue is full: come back after Retry-After, as a sender does
                        await asyncio.sleep(float(headers.get("retry-after", "1")))
                        continue
                    latencies.append(dt)
                    break
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, codes, time.perf_counter() - t0


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^(\w+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(lab.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--dup", type=float, default=0.3, help="share of exact re-deliveries")
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--single-process", action="store_true", help="serve --single-process, to compare")
    args = ap.parse_args()
    configure_logging("console", "warning")

    fleet = Fleet(FleetSpec(nodes=max(64, args.groups * 4), pools=2, seed=3), SimClock("real"))
    fleet.generate()
    nodes = sorted(n["metadata"]["name"] for n in fleet.store.items("nodes"))[: args.groups]
    bodies = _bodies(nodes, args.events, args.dup, args.groups, args.seed)
    with FleetServer(fleet) as server, tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        server.write_kubeconfig(kubeconfig)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPLY_AGENT_")}
        env |= {
            "SUPPLY_AGENT_DATA_DIR": str(Path(tmp) / "var"),
            "SUPPLY_AGENT_ALERTMANAGER_TOKEN": TOKEN,
            "SUPPLY_AGENT_LOG_LEVEL": "warning",
            "SUPPLY_AGENT_LOG_FORMAT": "json",
        }
        log = (Path(tmp) / "serve.log").open("wb")
        cmd = [sys.executable, "-m", "supply_agent.cli", "serve", "--port", str(port)]
        if args.single_process:
            cmd.append("--single-process")
        proc = subprocess.Popen([*cmd, "--kubeconfig", str(kubeconfig)], env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("serve did not start: " + (Path(tmp) / "serve.log").read_text()[-2000:])
                time.sleep(0.1)
            latencies, codes, wall = asyncio.run(_send(port, bodies, args.concurrency))
            acked_unique = codes.get(202, 0)
            t_drain = time.perf_counter()
            while True:
                text = httpx.get(f"{url}/metrics", timeout=10).text
                handled = _metric(text, "supply_agent_events_handled_total")
                if handled >= acked_unique or time.perf_counter() - t_drain > 120:
                    break
                time.sleep(0.2)
            drain_s = time.perf_counter() - t_drain
            incidents = httpx.get(f"{url}/incidents", params={"limit": 1000}, timeout=10).json()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    lat = sorted(latencies)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    lost = int(acked_unique - handled)
    print(
        f"intake storm: {args.events} webhooks ({args.dup:.0%} re-deliveries), {args.groups} groups, "
        f"concurrency {args.concurrency}, serve on loopback (SQLite, "
        f"{'one process' if args.single_process else 'intake and worker processes'})"
    )
    print(f"  responses            {dict(sorted(codes.items()))}")
    print(f"  lost                 {lost}  (target 0)")
    print(f"  incidents opened     {len(incidents)}  (target {args.groups})")
    print(
        f"  time to acknowledge  p50 {p(0.5):.1f} ms  p99 {p(0.99):.1f} ms  max {lat[-1] * 1000:.1f} ms"
        f"  (target p99 < 100 ms)"
    )
    print(
        f"  events per second    {len(latencies) / wall:.0f} acknowledged  "
        f"(sent in {wall:.1f} s; all handled {drain_s:.1f} s later)"
    )
    print(f"  mean                 {statistics.fmean(lat) * 1000:.1f} ms")
    ok = lost == 0 and len(incidents) == args.groups
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
