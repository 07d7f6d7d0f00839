"""What a decision reads of the audit log as the log grows: the rows of its budget windows, its own
incident's and the nodes out now, against the whole log (what it read before).

    .venv/bin/python benchmarks/history_reads.py [--days 10,100,300] [--per-day 1000] [--runs 5]

A SQLite audit log (the embedded default) filled here with ``--per-day`` writes a day for each of
``--days`` (cordons, hand-backs, pod deletions and credits over 2,000 nodes; five incidents a day). Per
length: the rows a decision reads and the time to read them and build the gate's history, against the
whole log, median of ``--runs``. Target: flat in the log's length (O(the windows + the incident + the
nodes out)).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.executor.audit import AuditLog, AuditRecord, NodeOutRow
from supply_agent.policy.gate import agent_out_nodes, history_from_audit, lookback
from supply_agent.policy.limits import GlobalLimits
from supply_agent.policy.world import WorldView

NOW = datetime(2026, 6, 1, tzinfo=UTC)
TOOLS = ("k8s.cordon_node", "k8s.uncordon_node", "k8s.delete_pod", "billing.issue_credit")


def fill(audit: AuditLog, per_day: int, days: int) -> None:
    rows = per_day * days
    span = timedelta(days=days)
    batch: list[dict[str, object]] = []
    out: dict[str, dict[str, object]] = {}
    with audit.engine.begin() as conn:
        for i in range(rows):
            at = NOW - span + span * (i / rows)
            tool = TOOLS[i % len(TOOLS)]
            node = f"node-{(i * 7919) % 2000:05d}"
            iid = f"inc-{i // per_day}-{i % 5}"
            batch.append(
                {
                    "at": at,
                    "phase": "after",
                    "outcome": "executed",
                    "incident_id": iid,
                    "step": i,
                    "tool": tool,
                    "action_hash": f"{i:064x}",
                    "idempotency_key": f"k-{i}",
                    "params": {"node": node},
                    "verdict": "allow",
                    "targets": {"nodes": [node] if tool != "billing.issue_credit" else [], "gpus": 8},
                }
            )
            if tool == "k8s.cordon_node":
                out[node] = {"node": node, "audit_id": i + 1, "incident_id": iid, "tool": tool, "at": at}
            elif tool == "k8s.uncordon_node":
                out.pop(node, None)
            if len(batch) == 5000:
                conn.execute(insert(AuditRecord), batch)
                batch = []
        if batch:
            conn.execute(insert(AuditRecord), batch)
        if out:
            conn.execute(insert(NodeOutRow), list(out.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", default="10,100,300")
    ap.add_argument("--per-day", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    world = WorldView(now=NOW, nodes={})
    since = NOW - lookback(GlobalLimits())
    t = Table(title=f"A decision's read of the audit log ({args.per_day:,} writes a day, SQLite)")
    for col in (
        "days, rows in the log",
        "rows read (windows + incident)",
        "nodes out",
        "read + history",
        "whole log",
    ):
        t.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for days in (int(x) for x in args.days.split(",")):
            n = days * args.per_day
            audit = AuditLog.from_url(f"sqlite:///{Path(tmp) / f'audit-{n}.db'}")
            fill(audit, args.per_day, days)
            times, whole_times = [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                rows, out = audit.for_decision(since, f"inc-{days - 1}-0")
                read = history_from_audit(rows, world, nodes_out=out)
                times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                whole = history_from_audit(audit.records(), world)
                whole_times.append(time.perf_counter() - t0)
            assert agent_out_nodes(read) == agent_out_nodes(whole)
            t.add_row(
                f"{days}, {n:,}",
                f"{len(rows):,}",
                f"{len(out):,}",
                f"{statistics.median(times) * 1000:.1f} ms",
                f"{statistics.median(whole_times) * 1000:.0f} ms",
            )
            audit.engine.dispose()
    Console().print(t)


if __name__ == "__main__":
    main()
