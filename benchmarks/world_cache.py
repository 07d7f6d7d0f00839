"""The world cache at fleet scale: its first list, its memory, a snapshot's cost, and how soon a change
reaches it over the watch.

    .venv/bin/python benchmarks/world_cache.py [--nodes 24,1000,10000] [--samples 20]

Each size: a fresh sandbox fleet on loopback (the real HTTP server and the official client), a
:class:`~supply_agent.hands.world_cache.WorldCache` on the agent's read-only credentials. Measured: the
first LIST of nodes and pods (wall time), the cache's own memory (tracemalloc: what its start allocated
and kept), a snapshot (the dict copies a decision's world costs, without the kill switch's GET; median
of 200), and the watch's delivery: a node cordoned through the writer's credentials, time until the
cache shows it (median, p90, max of ``--samples``). Targets (issue 15): snapshot < 1 ms and the cache
< 150 MB at 10,000 nodes / 40,000 pods; events within 100 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supply_agent.hands.world_cache import WorldCache  # noqa: E402
from supply_agent.logging import configure_logging, quiet  # noqa: E402
from tests.support.agent_harness import harness  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def one_size(tmp: Path, nodes: int, samples: int) -> list[str]:
    with harness(tmp, nodes=nodes) as h:
        kube = h.env.runtime.kube
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        t0 = time.perf_counter()
        cache = WorldCache(kube).start()
        listed = time.perf_counter() - t0
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        kept = sum(s.size_diff for s in after.compare_to(before, "filename")) / 2**20
        try:
            n_nodes, n_pods = cache.size()
            now = h.env.runtime.clock()
            snaps = []
            for _ in range(200):
                t = time.perf_counter()
                cache.view(now)
                snaps.append(time.perf_counter() - t)
            lags = []
            for name in h.nodes()[:samples]:
                h.env.writer.cordon_node(name)
                written = time.perf_counter()
                assert cache.wait_until(
                    lambda c, n=name: (v := c._views.get(n)) is not None and v.unschedulable, 10
                )
                lags.append(time.perf_counter() - written)
        finally:
            cache.stop()
    return [
        str(n_nodes),
        str(n_pods),
        f"{listed:.2f}",
        f"{kept:.0f}",
        f"{statistics.median(snaps) * 1000:.2f}",
        f"{statistics.median(lags) * 1000:.1f}",
        f"{pct(lags, 90) * 1000:.1f}",
        f"{max(lags) * 1000:.1f}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="24,1000,10000")
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    configure_logging("json", "warning")
    quiet()
    console = Console()
    table = Table(title="world cache: first list, memory, snapshot, watch delivery")
    for col in ("nodes", "pods", "first list s", "cache MB", "snapshot ms", "event ms p50", "p90", "max"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.nodes.split(",")]:
            console.print(f"{n} nodes ...")
            table.add_row(*one_size(Path(tmp) / f"n{n}", n, args.samples))
    console.print(table)


if __name__ == "__main__":
    main()
