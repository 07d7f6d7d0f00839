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

``--replicas N`` runs N `serve` replicas on one PostgreSQL (``--database-url``, or a server of its own
started by ``scripts/postgres.sh``), each sender connection bound to one replica, round-robin, as a
load balancer spreads them. ``--kill-one`` SIGKILLs the replica leading the dispatch halfway through
the storm (its senders reconnect to the others) and prints how long its work took to move: the
dispatcher's lease taken by another replica, and the first event handled after the kill.

    .venv/bin/python benchmarks/intake_storm.py [--events 5000] [--dup 0.3] [--groups 10] [--concurrency 64]
    .venv/bin/python benchmarks/intake_storm.py --replicas 2 [--kill-one]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import multiprocessing
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, inspect, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.fleet.clock import SimClock  # noqa: E402
from sandbox.fleet.server import FleetServer  # noqa: E402
from sandbox.fleet.world import Fleet, FleetSpec  # noqa: E402
from sandbox.fleet.world.spec import NODES_PER_RACK, RACK_LABEL  # noqa: E402
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
    if not head[0].startswith("HTTP/1."):
        raise ConnectionResetError(f"not an HTTP response: {head[:3]!r}")
    status = int(head[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers


async def _send(
    ports: list[int],
    bodies: list[bytes],
    concurrency: int,
    halfway: Callable[[], int | None] | None = None,
) -> tuple[list[float], dict[int, int], set[bytes], float]:
    """Send every body; worker i on replica ``i % len(ports)``. ``halfway`` runs once, half the bodies
    sent, and may return a port that is gone from then on (the senders on it move to the next)."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    acked: set[bytes] = set()  # the distinct events answered 2xx: stored now, or before (a duplicate)
    it = iter(bodies)
    sent = [0]
    dead: set[int] = set()

    async def connect(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
        for k in range(len(ports)):
            port = ports[(i + k) % len(ports)]
            if port in dead:
                continue
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                return reader, writer, port
            except OSError:
                dead.add(port)
        raise SystemExit("no replica answers")

    async def worker(i: int) -> None:
        reader, writer, port = await connect(i)
        try:
            for body in it:
                sent[0] += 1
                if halfway is not None and sent[0] == len(bodies) // 2:
                    gone = await asyncio.get_running_loop().run_in_executor(None, halfway)
                    if gone is not None:
                        dead.add(gone)
                while True:
                    t0 = time.perf_counter()
                    try:
                        if port in dead:
                            raise ConnectionResetError("replica gone")
                        status, headers = await _post(reader, writer, body)
                    except (asyncio.IncompleteReadError, ConnectionError):
                        # the server closed a connection idle past its keep-alive (after a Retry-After
                        # wait), or its replica died: open another and send again, as a sender does
                        writer.close()
                        reader, writer, port = await connect(i)
                        continue
                    dt = time.perf_counter() - t0
                    codes[status] = codes.get(status, 0) + 1
                    if status == 503:  # the queue is full: come back after Retry-After, as a sender does
                        await asyncio.sleep(float(headers.get("retry-after", "1")))
                        continue
                    latencies.append(dt)
                    if 200 <= status < 300:
                        acked.add(body)
                    break
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies, codes, acked, time.perf_counter() - t0


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


def _serve_fleet(fleet: Fleet, kubeconfig: Path, ready: Any, stop: Any) -> None:
    with FleetServer(fleet) as server:
        server.write_kubeconfig(kubeconfig)
        ready.set()
        stop.wait()


@contextmanager
def _fleet_process(fleet: Fleet, kubeconfig: Path) -> Iterator[None]:
    """The fleet's API server in a process of its own (forked, with the fleet generated here). A sender
    does not share an interpreter lock with the Kubernetes API server: in this process, the agent's reads
    of the fleet would be counted in the time to acknowledge."""
    ctx = multiprocessing.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_serve_fleet, args=(fleet, kubeconfig, ready, stop), daemon=True)
    proc.start()
    try:
        if not ready.wait(60):
            raise SystemExit("the sandbox fleet did not start")
        yield
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()


@contextmanager
def _postgres(url: str | None) -> Iterator[str]:
    """The given URL, or a PostgreSQL of its own from scripts/postgres.sh (destroyed after)."""
    if url:
        yield url
        return
    script = ROOT / "scripts" / "postgres.sh"
    with tempfile.TemporaryDirectory(prefix="storm-pg-") as state:
        out = subprocess.run(
            ["bash", str(script), "start", state], capture_output=True, text=True, check=False
        )
        lines = out.stdout.split()
        if out.returncode != 0 or not lines or not lines[-1].startswith("postgresql://"):
            raise SystemExit(f"{script} start failed: {out.stdout}{out.stderr}")
        try:
            yield lines[-1].replace("postgresql://", "postgresql+psycopg://", 1)
        finally:
            subprocess.run(["bash", str(script), "destroy", state], capture_output=True, check=False)


def _start(cmd: list[str], env: dict[str, str], log: Path, url: str) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("serve did not start: " + log.read_text()[-2000:])
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--dup", type=float, default=0.3, help="share of exact re-deliveries")
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--single-process", action="store_true", help="serve --single-process, to compare")
    ap.add_argument("--replicas", type=int, default=1, help="replicas on one PostgreSQL (>1 needs it)")
    ap.add_argument("--database-url", help="PostgreSQL for the replicas (default: one of its own)")
    ap.add_argument("--kill-one", action="store_true", help="SIGKILL the dispatch's leader halfway")
    ap.add_argument("--lease-s", type=float, default=15.0, help="the replicas' lease time")
    args = ap.parse_args()
    configure_logging("console", "warning")
    shared = args.replicas > 1 or args.database_url is not None

    # One node of every other rack: no two groups share a rack or a leaf switch (leaves straddle two
    # racks), so the topology fold keeps them apart and each group is an incident of its own.
    fleet = Fleet(
        FleetSpec(nodes=max(64, args.groups * NODES_PER_RACK * 2), pools=2, seed=3), SimClock("real")
    )
    fleet.generate()
    racks: dict[str, list[str]] = {}
    for n in fleet.store.items("nodes"):
        racks.setdefault(n["metadata"]["labels"][RACK_LABEL], []).append(n["metadata"]["name"])
    nodes = [sorted(racks[r])[0] for i, r in enumerate(sorted(racks)) if i % 2 == 0][: args.groups]
    bodies = _bodies(nodes, args.events, args.dup, args.groups, args.seed)
    with (
        tempfile.TemporaryDirectory() as tmp,
        _fleet_process(fleet, Path(tmp) / "kubeconfig"),
        _postgres(args.database_url) if shared else contextlib.nullcontext("") as db_url,
    ):
        kubeconfig = Path(tmp) / "kubeconfig"
        procs: list[subprocess.Popen[bytes]] = []
        ports = [_free_port() for _ in range(args.replicas)]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        engine = create_engine(db_url) if db_url else None
        if engine is not None and inspect(engine).has_table("intake_events"):
            with engine.connect() as conn:
                if conn.execute(text("SELECT count(*) FROM intake_events")).scalar_one():
                    raise SystemExit(f"{db_url}: the database holds events already; give an empty one")
        failover: dict[str, float] = {}
        try:
            for i, port in enumerate(ports):
                env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPLY_AGENT_")}
                env |= {
                    "SUPPLY_AGENT_DATA_DIR": str(Path(tmp) / f"var-{i}"),
                    "SUPPLY_AGENT_ALERTMANAGER_TOKEN": TOKEN,
                    "SUPPLY_AGENT_LOG_LEVEL": "warning",
                    "SUPPLY_AGENT_LOG_FORMAT": "json",
                    "SUPPLY_AGENT_REPLICA_ID": f"r{i}",
                    "SUPPLY_AGENT_LEASE_S": str(args.lease_s),
                }
                if db_url:
                    env["SUPPLY_AGENT_DATABASE_URL"] = db_url
                cmd = [sys.executable, "-m", "supply_agent.cli", "serve", "--port", str(port)]
                if args.single_process:
                    cmd.append("--single-process")
                procs.append(
                    _start(
                        [*cmd, "--kubeconfig", str(kubeconfig)], env, Path(tmp) / f"serve-{i}.log", urls[i]
                    )
                )

            def kill_leader() -> int | None:
                assert engine is not None
                with engine.connect() as conn:
                    row = conn.execute(
                        text("SELECT owner FROM leases WHERE name = 'singleton:dispatcher'")
                    ).first()
                    handled_before = conn.execute(
                        text("SELECT coalesce(max(handled_at), now()) FROM intake_events")
                    ).scalar_one()
                leader = int(str(row[0]).split(":", 1)[0].removeprefix("r")) if row else 0
                killed = time.monotonic()
                procs[leader].send_signal(signal.SIGKILL)
                failover["killed"] = float(leader)
                failover["_at"] = killed
                failover["_handled_before"] = handled_before.timestamp()
                failover["_wall"] = time.time()
                return ports[leader]

            halfway = kill_leader if args.kill_one and engine is not None else None
            # The sender's own heap out of the collector's full passes, as serve does with its own
            # (supply_agent.heap): a pause here would be counted as the server's time to acknowledge.
            gc.collect()
            gc.freeze()
            latencies, codes, acked, wall = asyncio.run(_send(ports, bodies, args.concurrency, halfway))
            acked_unique = len(acked)
            t_drain = time.perf_counter()
            live = [u for i, u in enumerate(urls) if procs[i].poll() is None]
            while True:
                if engine is not None:
                    with engine.connect() as conn:
                        handled = float(
                            conn.execute(
                                text("SELECT count(*) FROM intake_events WHERE status <> 'pending'")
                            ).scalar_one()
                        )
                        if "_at" in failover and "lease_moved_s" not in failover:
                            owner = conn.execute(
                                text("SELECT owner FROM leases WHERE name = 'singleton:dispatcher'")
                            ).scalar()
                            if owner and not str(owner).startswith(f"r{int(failover['killed'])}:"):
                                failover["lease_moved_s"] = time.monotonic() - failover["_at"]
                else:
                    text_ = httpx.get(f"{live[0]}/metrics", timeout=10).text
                    handled = _metric(text_, "supply_agent_events_handled_total")
                if handled >= acked_unique or time.perf_counter() - t_drain > 180:
                    break
                time.sleep(0.2)
            drain_s = time.perf_counter() - t_drain
            if engine is not None and "_wall" in failover:
                with engine.connect() as conn:
                    first = conn.execute(
                        text("SELECT min(handled_at) FROM intake_events WHERE handled_at > to_timestamp(:t)"),
                        {"t": failover["_wall"]},
                    ).scalar()
                if first is not None:
                    failover["first_handled_after_kill_s"] = first.timestamp() - failover["_wall"]
            incidents = httpx.get(f"{live[0]}/incidents", params={"limit": 1000}, timeout=10).json()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if engine is not None:
                engine.dispose()
    lat = sorted(latencies)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    lost = int(acked_unique - handled)
    where = (
        f"{args.replicas} replica(s) on PostgreSQL" if shared else "SQLite"
    ) + f", {'one process each' if args.single_process else 'intake and worker processes'}"
    print(
        f"intake storm: {args.events} webhooks ({args.dup:.0%} re-deliveries), {args.groups} groups, "
        f"concurrency {args.concurrency}, serve on loopback ({where})"
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
    if "killed" in failover:
        moved = failover.get("lease_moved_s")
        first = failover.get("first_handled_after_kill_s")
        print(
            f"  failover             r{int(failover['killed'])}, the dispatch's leader, SIGKILLed halfway: "
            f"its lease moved in {'-' if moved is None else f'{moved:.1f} s'}, the next event handled "
            f"{'-' if first is None else f'{first:.1f} s'} after the kill (lease time {args.lease_s:g} s)"
        )
    ok = lost == 0 and len(incidents) == args.groups
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
