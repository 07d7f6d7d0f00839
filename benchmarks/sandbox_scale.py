"""Sandbox fleet at scale: start time, peak RSS, and list latencies through the official client.

    .venv/bin/python benchmarks/sandbox_scale.py [--nodes 10000] [--gpus-per-node 8] [--pools 4]

Targets (issue 2): start < 20 s, peak RSS < 2 GiB, list all nodes < 2 s, one node's pods < 20 ms;
the simulated NVML of 2,000 nodes built in < 2 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client, config
from rich.console import Console
from rich.table import Table


def rss_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--pools", type=int, default=4)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        cmd = [
            sys.executable,
            "-m",
            "supply_agent.cli",
            "sandbox",
            "serve",
            "--nodes",
            str(args.nodes),
            "--gpus-per-node",
            str(args.gpus_per_node),
            "--pools",
            str(args.pools),
            "--port",
            "0",
            "--clock",
            "manual",
            "--kubeconfig",
            str(kubeconfig),
        ]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            start_s = time.perf_counter() - t0
            if not line.startswith("ready "):
                console.print(f"[red]fleet did not start: {line!r}")
                return 1
            pods_total = int(line.split("pods=")[1])
            api = config.new_client_from_config(config_file=str(kubeconfig))
            v1 = client.CoreV1Api(api)
            typed = timed(lambda: v1.list_node(), 3)
            n_nodes = len(v1.list_node(limit=1, _preload_content=False).data) and args.nodes

            def raw_nodes() -> None:
                resp = v1.list_node(_preload_content=False)
                items = json.loads(resp.data)["items"]
                assert len(items) == args.nodes

            raw = timed(raw_nodes, 3)
            from tools.kubernetes import KubeTools

            kube = KubeTools(api)
            agent = timed(lambda: kube.list_nodes(), 3)
            node = f"{v1.list_node(limit=1).items[0].metadata.name}"
            per_node = timed(
                lambda: v1.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}"), 50
            )
            rss = rss_peak_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    # The simulated NVML of every node (what evals and the node-agent's tests build per node).
    from sandbox.fleet.nvml_sim import SimNvml

    t0 = time.perf_counter()
    sims = [
        SimNvml.healthy(f"node-{i}", args.gpus_per_node, "NVIDIA H100 80GB HBM3", seed=7) for i in range(2000)
    ]
    sim_s = time.perf_counter() - t0
    del sims
    table = Table(title=f"sandbox fleet: {n_nodes} nodes x {args.gpus_per_node} GPUs, {pods_total} pods")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("ok")
    rows = [
        ("start (launch → ready line)", f"{start_s:.2f} s", "< 20 s", start_s < 20),
        ("peak RSS of the server", f"{rss:.0f} MiB", "< 2048 MiB", rss < 2048),
        (
            "list all nodes, typed models (median of 3)",
            f"{statistics.median(typed):.2f} s",
            "< 2 s",
            statistics.median(typed) < 2,
        ),
        (
            "list all nodes, raw JSON (median of 3)",
            f"{statistics.median(raw):.2f} s",
            "< 2 s",
            statistics.median(raw) < 2,
        ),
        (
            "list all nodes, tools.kubernetes.list_nodes (median of 3)",
            f"{statistics.median(agent):.2f} s",
            "< 2 s",
            statistics.median(agent) < 2,
        ),
        (
            "pods on one node, typed (median of 50)",
            f"{statistics.median(per_node) * 1000:.1f} ms",
            "< 20 ms",
            statistics.median(per_node) < 0.020,
        ),
        ("simulated NVML for 2,000 nodes", f"{sim_s:.2f} s", "< 2 s", sim_s < 2),
    ]
    for name, value, target, ok in rows:
        table.add_row(name, value, target, "[green]yes" if ok else "[red]no")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
