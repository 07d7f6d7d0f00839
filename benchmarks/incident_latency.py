"""Alert to verified mitigation for a fatal XID on the sandbox, with the runbook planner.

    .venv/bin/python benchmarks/incident_latency.py [--runs 50] [--nodes 24,1000,10000] [--cache]
    .venv/bin/python benchmarks/incident_latency.py --process --nodes 24,1000,10000 --runs 3

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
from io import StringIO
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supply_agent.hands.world_cache import WorldCache  # noqa: E402
from supply_agent.logging import configure_logging, quiet  # noqa: E402
from supply_agent.models.incident import IncidentState  # noqa: E402
from tests.support.agent_harness import Harness, harness  # noqa: E402
from tests.support.api_counter import COUNTER  # noqa: E402


def one_run(tmp: Path, nodes: int = 24, cache: bool = False) -> tuple[float, float, float, str]:
    """One incident; with ``cache``, the runtime decides on a watch cache (as ``serve`` does), listed
    before the incident starts."""
    with harness(tmp, nodes=nodes) as h:
        if not cache:  # the runtime's own cache of nodes, stopped when the harness closes
            return _incident(h)
        world = WorldCache(h.env.runtime.kube).start()
        h.env.runtime.cache = world
        try:
            return _incident(h)
        finally:
            h.env.runtime.cache = None
            world.stop()


def _incident(h: Harness) -> tuple[float, float, float, str]:
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


def scaling(sizes: list[int], runs: int, console: Console, cache: bool = False) -> None:
    """Latency and API cost of one incident per fleet size."""
    COUNTER.install()
    how = (
        "on a watch cache (serve)"
        if cache
        else "one-shot (handle: a cache of the nodes, each decision's pods read live)"
    )
    table = Table(title=f"fatal XID, alert → verified mitigation, {how}, by fleet size ({runs} runs each)")
    for col in ("nodes", "median ms", "p90 ms", "agent ms", "tool I/O ms", "API calls / incident", "MB read"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        one_run(Path(tmp) / "warmup")
        for n in sizes:
            totals, agents, ios = [], [], []
            COUNTER.calls.clear()
            COUNTER.bytes = 0
            for i in track(range(runs), description=f"{n} nodes", console=console):
                total, io, agent, outcome = one_run(Path(tmp) / f"n{n}-{i}", nodes=n, cache=cache)
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


KINDS = ("thermal", "disk-pressure", "crashloop", "oomkill")


def concurrent_run(tmp: Path, nodes: int, count: int, workers: int) -> tuple[float, float, dict[str, int]]:
    """``count`` incidents of different kinds at once (thermal, disk pressure, a crash loop, an OOM kill,
    each on its own node of another rack) on a watch cache, run by ``workers`` graph threads as serve
    runs them: seconds from the fold until the last one ended, the memory the agent's process grew by
    (MiB; the fleet runs in the same process and was built before), and the outcomes."""
    from concurrent.futures import ThreadPoolExecutor

    from supply_agent.service.terminal import TerminalApprover

    with harness(tmp, nodes=nodes) as h:
        world = WorldCache(h.env.runtime.kube).start()
        h.env.runtime.cache = world
        try:
            picks = h.nodes(0)[::17][:count]
            assert len(picks) == count, f"the pool has room for {len(picks)} incidents on separate racks"
            for i, node in enumerate(picks):
                kind = KINDS[i % len(KINDS)]
                if kind in ("crashloop", "oomkill"):
                    try:
                        ns, pod, _ = h.tenant_pod(node)
                        h.inject(kind, namespace=ns, pod=pod)
                        continue
                    except LookupError:
                        kind = "thermal"
                h.inject(kind, node=node, **({"gpu": 0} if kind == "thermal" else {}))
            alerts = h.alerts(1200)
            approver = TerminalApprover("auto", "oncall-alice", h.env.runtime.clock, Console(file=StringIO()))
            rss0 = _rss_mib()
            t0 = time.perf_counter()
            incidents = h.agent.open(alerts)

            def to_the_end(state: IncidentState) -> str:
                r = h.agent.run(state)
                while r.pending is not None:
                    answer = approver.answer(r.pending)
                    assert answer is not None
                    r = h.agent.run(r.incident_id, resume=answer)
                return r.state.outcome or "-"

            with ThreadPoolExecutor(workers) as pool:
                outcomes = list(pool.map(to_the_end, incidents))
            took = time.perf_counter() - t0
            grew = _rss_mib() - rss0
        finally:
            h.env.runtime.cache = None
            world.stop()
    return took, grew, {o: outcomes.count(o) for o in sorted(set(outcomes))}


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def concurrency(sizes: list[int], counts: list[int], workers: int, console: Console) -> None:
    table = Table(title=f"incidents at once on a watch cache, {workers} graph threads (serve's default 4)")
    for col in ("nodes", "incidents", "all closed s", "per incident ms", "process grew MiB", "outcomes"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for c in counts:
                took, grew, outcomes = concurrent_run(Path(tmp) / f"c{n}-{c}", n, c, workers)
                table.add_row(
                    str(n),
                    str(c),
                    f"{took:.1f}",
                    f"{took / c * 1000:.0f}",
                    f"{grew:.0f}",
                    ", ".join(f"{k} {v}" for k, v in outcomes.items()),
                )
    console.print(table)


def handle_process(sizes: list[int], runs: int, console: Console) -> None:
    """The whole ``supply-agent handle`` process, as an SRE runs it (start, read the cluster, the incident,
    the report), against a sandbox fleet served by ``supply-agent sandbox serve`` in its own process:
    wall seconds and the peak RSS of the handle process alone (``wait4``)."""
    import json
    import os
    import signal
    import subprocess

    exe = str(Path(sys.executable).parent / "supply-agent")
    table = Table(
        title=f"the whole `supply-agent handle` process, fatal XID, by fleet size ({runs} runs each)"
    )
    for col in ("nodes", "median s", "max s", "vs smallest", "peak RSS MiB", "outcome"):
        table.add_column(col, justify="right")
    first: float | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            walls, rss, outcomes = [], [], []
            for i in track(range(runs), description=f"{n} nodes", console=console):
                d = Path(tmp) / f"h{n}-{i}"
                d.mkdir()
                kc = d / "kubeconfig"
                env = {
                    **os.environ,
                    "SUPPLY_AGENT_DATA_DIR": str(d / "var"),
                    "SUPPLY_AGENT_PLAYBOOKS_DIR": str(ROOT / "playbooks"),
                }
                fleet = subprocess.Popen(
                    [
                        exe,
                        "sandbox",
                        "serve",
                        "--nodes",
                        str(n),
                        "--pools",
                        "4",
                        "--clock",
                        "manual",
                        "--kubeconfig",
                        str(kc),
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    deadline = time.monotonic() + 600
                    while not kc.exists() and time.monotonic() < deadline:
                        time.sleep(0.2)
                    node = _first_node(kc)

                    for args in (
                        ("inject", "xid", "--node", node, "--gpu", "2", "--code", "79"),
                        ("clock", "--advance", "600"),
                        ("alerts", "--format", "pagerduty", "--out", str(d / "pd")),
                    ):
                        subprocess.run(
                            [exe, "sandbox", *args, "--kubeconfig", str(kc)],
                            env=env,
                            check=True,
                            capture_output=True,
                        )
                    t0 = time.perf_counter()
                    proc = subprocess.Popen(
                        [
                            exe,
                            "handle",
                            str(d / "pd" / "pagerduty-000.json"),
                            "--kubeconfig",
                            str(kc),
                            "--approve",
                            "auto",
                            "--json",
                        ],
                        env=env,
                        cwd=d,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                    )
                    out = proc.stdout.read() if proc.stdout else b""
                    _, status, usage = os.wait4(proc.pid, 0)
                    walls.append(time.perf_counter() - t0)
                    rss.append(usage.ru_maxrss / 1024)
                    assert os.waitstatus_to_exitcode(status) == 0, out[-2000:]
                    outcomes.append(json.loads(out)["incidents"][0]["outcome"])
                finally:
                    fleet.send_signal(signal.SIGTERM)
                    fleet.wait(60)
            median = statistics.median(walls)
            first = first or median
            table.add_row(
                str(n),
                f"{median:.2f}",
                f"{max(walls):.2f}",
                f"{median / first:.2f}x",
                f"{max(rss):.0f}",
                ", ".join(sorted(set(outcomes))),
            )
    console.print(table)


def _first_node(kubeconfig: Path) -> str:
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    meta = api.list_node(limit=1).items[0].metadata
    assert meta is not None
    return str(meta.name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--nodes", help="fleet sizes for the scaling table, comma-separated (e.g. 24,1000,10000)")
    ap.add_argument("--cache", action="store_true", help="decide on a watch cache, as serve does")
    ap.add_argument(
        "--concurrent", help="incidents at once, comma-separated (e.g. 10,50), on each --nodes size"
    )
    ap.add_argument("--workers", type=int, default=4, help="graph threads for --concurrent")
    ap.add_argument(
        "--process", action="store_true", help="time the whole `supply-agent handle` process per --nodes size"
    )
    args = ap.parse_args()
    configure_logging("json", "warning")
    quiet()
    console = Console()
    if args.concurrent:
        sizes = [int(x) for x in (args.nodes or "24").split(",")]
        concurrency(sizes, [int(x) for x in args.concurrent.split(",")], args.workers, console)
        return
    if args.process:
        handle_process([int(x) for x in (args.nodes or "24").split(",")], args.runs, console)
        return
    if args.nodes:
        scaling([int(x) for x in args.nodes.split(",")], args.runs, console, cache=args.cache)
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
