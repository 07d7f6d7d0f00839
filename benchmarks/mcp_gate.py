"""The gate for other agents: ``propose`` round trip over streamable HTTP, and a storm of writes from many
callers that must not spend any budget twice.

    .venv/bin/python benchmarks/mcp_gate.py [--nodes 100] [--proposals 200] [--clients 10] [--storm 1000]

A real ``supply-agent mcp --transport http`` process (one token per caller) against the sandbox fleet
served over HTTP, driven by the official MCP SDK's client on loopback.

1. Latency: one client, ``--proposals`` sequential ``propose`` calls (a cordon of a random node under the
   fallen-off-the-bus playbook): p50 / p99 round trip.
2. Storm: ``--clients`` clients, ``--storm`` requests in all, each an ``execute`` of a cordon of a random
   node (every node's GPU 1 fell off the bus, so each request is one the playbook would take on its own).
   Decisions per second; then the budgets as the gate counts them (the containment resource) and the
   fleet's own truth: an overspend is a budget spent past its hard limit, or more nodes cordoned than
   the allowed executions. Target: 0 overspends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.clock import SimClock
from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import Fleet, FleetSpec
from supply_agent.logging import configure_logging

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = "xid-fallen-off-bus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _result(res: Any) -> dict[str, Any]:
    if res.is_error:
        raise RuntimeError(f"tool error: {res.content}")
    sc = res.structured_content
    if sc is not None:
        return dict(sc["result"] if set(sc) == {"result"} else sc)
    return dict(json.loads(res.content[0].text))


def _client(url: str, token: str) -> Client:
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    return Client(streamable_http_client(url, http_client=http), read_timeout_seconds=120)


def _cordon(node: str) -> dict[str, Any]:
    return {"tool": "k8s.cordon_node", "params": {"node": node}, "playbook": PLAYBOOK}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(url: str, token: str, nodes: list[str], n: int, rng: random.Random) -> list[float]:
    times: list[float] = []
    async with _client(url, token) as c:
        await c.call_tool("propose", {"proposal": {"action": _cordon(nodes[0])}})  # warm
        for _ in range(n):
            t0 = time.perf_counter()
            got = _result(await c.call_tool("propose", {"proposal": {"action": _cordon(rng.choice(nodes))}}))
            times.append(time.perf_counter() - t0)
            assert got["executed"] is False
    return times


async def storm(
    url: str, tokens: dict[str, str], nodes: list[str], total: int, rng: random.Random
) -> tuple[float, dict[str, int], list[float]]:
    verdicts: dict[str, int] = {}
    times: list[float] = []
    per = total // len(tokens)
    plans = {name: [rng.choice(nodes) for _ in range(per)] for name in tokens}

    async def one(name: str) -> None:
        async with _client(url, tokens[name]) as c:
            for i, node in enumerate(plans[name]):
                t0 = time.perf_counter()
                got = _result(
                    await c.call_tool(
                        "execute", {"execution": {"action": _cordon(node), "request_id": f"{name}-{i}"}}
                    )
                )
                times.append(time.perf_counter() - t0)
                key = got.get("outcome") or got["verdict"]
                verdicts[key] = verdicts.get(key, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(name) for name in tokens))
    return time.perf_counter() - t0, verdicts, times


async def containment(url: str, token: str) -> dict[str, Any]:
    async with _client(url, token) as c:
        got = await c.read_resource("supply-agent://containment")
        return dict(json.loads(got.contents[0].text))  # type: ignore[union-attr]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--proposals", type=int, default=200)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--storm", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    configure_logging("console", "error")  # the fleet's own log of the injected faults is not the figure
    console = Console()
    fleet = Fleet(FleetSpec(nodes=args.nodes, pools=2, seed=5), SimClock("manual"))
    fleet.generate()
    names = sorted(n["metadata"]["name"] for n in fleet.store.items("nodes"))
    tokens = {f"agent-{i:02d}": f"bench-mcp-token-{i:02d}-0123456789" for i in range(args.clients)}
    with FleetServer(fleet) as server, tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        server.write_kubeconfig(kubeconfig)
        admin = AdminClient.from_kubeconfig(kubeconfig)
        # A few nodes lose a GPU (fewer than the mass-failure threshold: each is bad luck, not a rollout).
        broken = sorted(rng.sample(names, max(1, args.nodes // 10)))
        for node in broken:
            admin.inject("xid", node=node, gpu=1, code=79)
        tokens_file = Path(tmp) / "tokens.yaml"
        tokens_file.write_text("".join(f"{k}: {v}\n" for k, v in tokens.items()))
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPLY_AGENT_")}
        env |= {"SUPPLY_AGENT_DATA_DIR": str(Path(tmp) / "var"), "SUPPLY_AGENT_LOG_LEVEL": "warning"}
        log = (Path(tmp) / "mcp.log").open("wb")
        cmd = [sys.executable, "-m", "supply_agent.cli", "mcp", "--kubeconfig", str(kubeconfig)]
        cmd += ["--transport", "http", "--port", str(port), "--tokens", str(tokens_file)]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}/mcp"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.post(url, json={})
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit((Path(tmp) / "mcp.log").read_text()[-3000:]) from None
                    time.sleep(0.2)
            first = next(iter(tokens.values()))
            lat = asyncio.run(latency(url, first, broken, args.proposals, rng))
            console.print(f"[dim]propose x{len(lat)} done; the storm: {args.storm} executes[/dim]")
            took, verdicts, times = asyncio.run(storm(url, tokens, broken, args.storm, rng))
            status = asyncio.run(containment(url, first))
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
        truth = admin.truth()
    cordoned = sum(int(p["nodes_cordoned"]) for p in truth["pools"].values())
    cordon_writes = [
        w
        for w in truth["writes"]
        if w["verb"] == "patch" and w["resource"] == "nodes" and not w.get("dry_run")
    ]
    over = [
        b for b in status["budgets"] if b.get("hard") is not None and float(b["spent"]) > float(b["hard"])
    ]
    executed = verdicts.get("executed", 0)
    overspends = len(over) + (1 if cordoned > executed or len(cordon_writes) > executed else 0)

    t = Table(title=f"supply-agent mcp over streamable HTTP ({args.nodes} nodes, {args.clients} clients)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("propose round trip p50", f"{statistics.median(lat) * 1000:.1f} ms")
    t.add_row("propose round trip p99", f"{_pct(lat, 0.99) * 1000:.1f} ms")
    total = sum(verdicts.values())
    t.add_row(f"storm: {total} executes from {args.clients} clients", f"{took:.1f} s")
    t.add_row("decisions per second", f"{total / took:.0f}")
    t.add_row(
        "execute round trip p50 / p99",
        f"{statistics.median(times) * 1000:.0f} / {_pct(times, 0.99) * 1000:.0f} ms",
    )
    t.add_row("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())))
    t.add_row("nodes cordoned (fleet truth) / executed", f"{cordoned} / {executed}")
    t.add_row("budgets past their hard limit", ", ".join(b["limit"] for b in over) or "none")
    t.add_row("overspends", str(overspends))
    console.print(t)
    if overspends:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
