"""Containment-gate decision latency on a 10,000-node world.

    .venv/bin/python benchmarks/gate.py [--nodes 10000] [--decisions 5000]

Target (issue 3): p99 < 1 ms per decision.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from supply_agent.models import Action
from supply_agent.policy import load_playbooks
from supply_agent.policy.gate import decide
from supply_agent.policy.world import History, NodeView, PastAction, PodRef, WorldView

ROOT = Path(__file__).resolve().parent.parent


def world(n: int, pools: int) -> WorldView:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    nodes = {}
    for i in range(n):
        name = f"pool{i % pools}-{i:05d}"
        pods = [PodRef(namespace="supply-agent-system", name=f"agent-{i}", daemonset=True)]
        pods += [
            PodRef(
                namespace=f"tenant-c{(i + k) % 1000}",
                name=f"w-{i}-{k}",
                customer=f"c{(i + k) % 1000}",
                gpus=2,
                deployment=f"d{(i + k) % 5000}",
            )
            for k in range(3)
        ]
        nodes[name] = NodeView(name=name, pool=f"pool{i % pools}", gpus=8, pods=tuple(pods))
    return WorldView(now=now, nodes=nodes, alerting_nodes=frozenset(list(nodes)[:20]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--pools", type=int, default=4)
    ap.add_argument("--decisions", type=int, default=5_000)
    args = ap.parse_args()
    playbooks = load_playbooks(ROOT / "playbooks")
    w = world(args.nodes, args.pools)
    names = list(w.nodes)
    rng = random.Random(1)
    history = History(
        actions=tuple(
            PastAction(
                tool="k8s.cordon_node",
                incident_id=f"inc-{i}",
                at=w.now - timedelta(minutes=i),
                nodes=(names[i],),
                gpus=8,
            )
            for i in range(50)
        )
    )
    actions = []
    for i in range(args.decisions):
        node = rng.choice(names)
        pod = w.nodes[node].pods[1]
        actions.append(
            rng.choice(
                [
                    Action(
                        tool="k8s.cordon_node",
                        params={"node": node},
                        incident_id="b",
                        step=i,
                        playbook_id="disk-pressure",
                    ),
                    Action(
                        tool="k8s.drain_node",
                        params={"node": node},
                        incident_id="b",
                        step=i,
                        playbook_id="xid-fallen-off-bus",
                    ),
                    Action(
                        tool="k8s.delete_pod",
                        params={"namespace": pod.namespace, "pod": pod.name},
                        incident_id="b",
                        step=i,
                    ),
                    Action(
                        tool="billing.issue_credit",
                        params={"customer": "c1", "amount_usd": "12.50", "reason": "r"},
                        incident_id="b",
                        step=i,
                    ),
                    Action(tool="k8s.get_node", params={"node": node}, incident_id="b", step=i),
                ]
            )
        )
    for a in actions[:200]:  # warm up
        decide(a, w, history, playbooks)
    times = []
    for a in actions:
        t = time.perf_counter()
        decide(a, w, history, playbooks)
        times.append(time.perf_counter() - t)
    times.sort()
    p50, p99 = statistics.median(times) * 1000, times[int(len(times) * 0.99)] * 1000
    table = Table(
        title=f"gate.decide on {args.nodes} nodes, {len(history.actions)} past actions, {len(times)} decisions"
    )
    for col in ("p50", "p99", "max", "target p99", "ok"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{p50:.3f} ms", f"{p99:.3f} ms", f"{times[-1] * 1000:.3f} ms", "< 1 ms", "yes" if p99 < 1 else "no"
    )
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
