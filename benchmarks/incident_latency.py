"""Alert to verified mitigation for a fatal XID on the sandbox, with the runbook planner.

    .venv/bin/python benchmarks/incident_latency.py [--runs 50] [--nodes 24,1000,10000]

Each run: a fresh sandbox fleet (24 nodes, or each size of ``--nodes``) on loopback, XID 79 injected on one node, the alert read as
Alertmanager would POST it, then `Agent.handle` until the incident is mitigated (the credit approval
answered at once). Wall time is split into tool I/O (every call to the cluster, the node-agent, the
ledger and the executor, measured where it happens) and the agent's own time (the graph, the gate,
planning, checkpoints, the incident store). There are no simulated waits: the fleet's clock is manual.
Targets (issue 4): agent's own time < 100 ms median; total < 1 s.

With ``--nodes`` it prints the scaling table (issue 15): per fleet size, the latency and what one incident
asks of the Kubernetes API, counted in the official client (each request by kind: LIST, GET, WATCH,
write) with the bytes its answers carried. The goal is a per-incident cost that does not depend on the
fleet's size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from io import StringIO
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import track
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supply_agent.logging import configure_logging, quiet  # noqa: E402
from tests.support.agent_harness import harness  # noqa: E402


class ApiCounter:
    """Counts the official client's requests by kind, and the bytes of their answers (urllib3's pool)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.bytes = 0
        self.on = False

    def install(self) -> None:
        from kubernetes.client import rest

        real = rest.RESTClientObject.request
        counter = self

        def request(client: Any, method: str, url: str, *args: Any, **kw: Any) -> Any:
            r = real(client, method, url, *args, **kw)
            if counter.on:
                counter.calls[_kind(method, url, kw.get("query_params"))] += 1
                # The answer is read here (RESTResponse caches it): the caller reads the same bytes.
                data = r.read() if hasattr(r, "read") else getattr(r, "data", None)
                counter.bytes += len(data) if isinstance(data, bytes | str) else 0
            return r

        rest.RESTClientObject.request = request  # type: ignore[method-assign]


def _kind(method: str, url: str, query: Any) -> str:
    if method != "GET":
        return "write"
    params = dict(query or [])
    if str(params.get("watch", "")).lower() in ("true", "1"):
        return "WATCH"
    path = url.split("?", 1)[0].rstrip("/")
    last = path.rsplit("/", 1)[-1]
    # A collection ends in its resource's plural (nodes, pods, events, configmaps, ...).
    collections = {"nodes", "pods", "events", "configmaps", "deployments", "poddisruptionbudgets", "leases"}
    if last not in collections:
        return "GET"
    cluster_wide = path.endswith(("/api/v1/nodes", "/api/v1/pods"))
    selected = params.get("fieldSelector") or params.get("labelSelector")
    return "LIST all" if cluster_wide and not selected else "LIST"


COUNTER = ApiCounter()


def one_run(tmp: Path, nodes: int = 24) -> tuple[float, float, float, str]:
    with harness(tmp, nodes=nodes) as h:
        h.inject("xid", node=h.nodes()[0], gpu=1, code=79)
        alerts = h.alerts(300)
        from supply_agent.service.terminal import TerminalApprover

        quiet_console = Console(file=StringIO())
        approver = TerminalApprover("auto", "oncall-alice", h.env.runtime.clock, quiet_console)
        COUNTER.on = True
        t0 = time.perf_counter()
        h.env.runtime.io.reset()
        results = []
        incident = h.agent.open(alerts)[0]
        r = h.agent.run(incident)
        results.append(r)
        while r.pending is not None:
            answer = approver.answer(r.pending)
            assert answer is not None
            r = h.agent.run(r.incident_id, resume=answer)
            results.append(r)
        total = time.perf_counter() - t0
        COUNTER.on = False
        io = sum(x.io_s for x in results)
        return total, io, total - io, r.state.outcome or "-"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def scaling(sizes: list[int], runs: int, console: Console) -> None:
    """Latency and API cost of one incident per fleet size."""
    COUNTER.install()
    table = Table(title=f"fatal XID, alert → verified mitigation, by fleet size ({runs} runs each)")
    for col in ("nodes", "median ms", "p90 ms", "agent ms", "tool I/O ms", "API calls / incident", "MB read"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        one_run(Path(tmp) / "warmup")
        for n in sizes:
            totals, agents, ios = [], [], []
            COUNTER.calls.clear()
            COUNTER.bytes = 0
            for i in track(range(runs), description=f"{n} nodes", console=console):
                total, io, agent, outcome = one_run(Path(tmp) / f"n{n}-{i}", nodes=n)
                assert outcome == "mitigated", outcome
                totals.append(total)
                agents.append(agent)
                ios.append(io)
            calls = ", ".join(f"{k} {v / runs:g}" for k, v in sorted(COUNTER.calls.items()))
            table.add_row(
                str(n),
                f"{statistics.median(totals) * 1000:.0f}",
                f"{pct(totals, 90) * 1000:.0f}",
                f"{statistics.median(agents) * 1000:.0f}",
                f"{statistics.median(ios) * 1000:.0f}",
                calls,
                f"{COUNTER.bytes / runs / 1e6:.1f}",
            )
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--nodes", help="fleet sizes for the scaling table, comma-separated (e.g. 24,1000,10000)")
    args = ap.parse_args()
    configure_logging("json", "warning")
    quiet()
    console = Console()
    if args.nodes:
        scaling([int(x) for x in args.nodes.split(",")], args.runs, console)
        return
    totals, ios, agents, outcomes = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        one_run(Path(tmp) / "warmup")  # imports, first connections
        for i in track(range(args.runs), description="incidents", console=console):
            total, io, agent, outcome = one_run(Path(tmp) / f"r{i}")
            totals.append(total)
            ios.append(io)
            agents.append(agent)
            outcomes.append(outcome)
    table = Table(title=f"fatal XID, alert → verified mitigation, runbook planner, {args.runs} runs")
    for col in ("", "median ms", "p90 ms", "max ms", "target"):
        table.add_column(col)
    for name, xs, target in (
        ("agent's own time", agents, "< 100 ms median"),
        ("tool I/O", ios, ""),
        ("total", totals, "< 1000 ms"),
    ):
        table.add_row(
            name,
            f"{statistics.median(xs) * 1000:.1f}",
            f"{pct(xs, 90) * 1000:.1f}",
            f"{max(xs) * 1000:.1f}",
            target,
        )
    console.print(table)
    console.print(f"outcomes: { {o: outcomes.count(o) for o in set(outcomes)} }")


if __name__ == "__main__":
    main()
