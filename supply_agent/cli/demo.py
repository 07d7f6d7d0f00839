"""``make demo``: the agent on a sandbox fleet, on embedded defaults (SQLite, the runbook planner, no key).

1. A fatal XID (79, fell off the bus) on one node: the agent investigates, cordons, tells the customer,
   drains, asks a human before crediting (answered here), verifies each step, hands the GPU to a human.
2. The same XID on a third of a pool at once (a bad driver rollout): the nodes' labels make it one
   incident about the pool, whose playbook writes nothing, and the agent escalates with one page
   instead of draining a third of the pool.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.clock import SimClock
from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import POOL_LABEL, Fleet, FleetSpec
from supply_agent.cli.report import results_table, timeline_printer
from supply_agent.incidents.agent import RunResult, open_agent
from supply_agent.logging import quiet
from supply_agent.mind.planners.runbook import RunbookPlanner
from supply_agent.models.incident import AlertIn, parse_alerts
from supply_agent.service.terminal import TerminalApprover
from supply_agent.settings import Settings

APPROVER = "demo-oncall"


def _alerts(admin: AdminClient) -> list[AlertIn]:
    """What Alertmanager would POST now, read back the way the agent's intake reads it."""
    out: list[AlertIn] = []
    for body in admin.alerts("alertmanager"):
        out += parse_alerts(body)[0]
    return out


def _truth_table(admin: AdminClient) -> Table:
    """What the fleet itself says happened (never the agent's own claims)."""
    truth = admin.truth()
    table = Table(title="the fleet's truth afterwards (/sandbox/v1/truth)")
    for col in ("pool", "nodes", "cordoned", "GPUs out of service", "nodes not ready"):
        table.add_column(col)
    for name, pool in sorted(truth["pools"].items()):
        table.add_row(
            name,
            str(pool["nodes"]),
            str(pool["nodes_cordoned"]),
            f"{pool['gpus_out_of_service']} of {pool['gpus']}",
            str(pool["nodes_not_ready"]),
        )
    table.caption = (
        f"{len(truth['writes'])} writes by the agent; pods disrupted: {len(truth['pods_disrupted'])}; "
        f"customers affected: {len(truth['customers_affected'])}"
    )
    return table


def run_demo(nodes: int = 24, keep: Path | None = None) -> None:
    """``keep``: the agent's data (the store, the audit log) is written there and kept, for
    ``supply-agent console --store sqlite:///KEEP/supply-agent.db`` to show afterwards."""
    t0 = time.perf_counter()
    console = Console()
    quiet()
    fleet = Fleet(FleetSpec(nodes=nodes, pools=2, seed=7), SimClock("manual"))
    fleet.generate()
    with FleetServer(fleet) as server, tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        server.write_kubeconfig(kubeconfig)
        admin = AdminClient.from_kubeconfig(kubeconfig)
        console.print(
            f"[bold]sandbox fleet[/] at {server.url}: {fleet.store.count('nodes')} nodes, "
            f"{fleet.store.count('pods')} pods  (kubectl --kubeconfig {kubeconfig} get nodes)"
        )
        data = keep if keep is not None else Path(tmp) / "var"
        settings = Settings(data_dir=data, approvers=[APPROVER], planner="runbook")
        nodes_by_pool: dict[str, list[str]] = {}
        for n in sorted(fleet.store.items("nodes"), key=lambda o: o["metadata"]["name"]):
            nodes_by_pool.setdefault(n["metadata"]["labels"][POOL_LABEL], []).append(n["metadata"]["name"])
        first_pool, second_pool = sorted(nodes_by_pool)[:2]
        results: list[RunResult] = []
        with open_agent(
            settings, kubeconfig, planner=RunbookPlanner(), on_entry=timeline_printer(console)
        ) as (agent, env):
            approver = TerminalApprover("auto", APPROVER, env.runtime.clock, console)

            console.rule("1. a fatal XID on one node")
            target = nodes_by_pool[first_pool][0]
            fault = admin.inject("xid", node=target, gpu=3, code=79)
            console.print(
                f"injected XID 79 on {target} GPU 3 (customer pod: {fault['labels'].get('pod', '-')})"
            )
            admin.advance(120)  # past the alert rule's `for`
            results += agent.handle(_alerts(admin), approver)

            console.rule("2. the same XID on a third of a pool at once (a bad driver rollout)")
            pool = nodes_by_pool[second_pool]
            hit = pool[: max(2, len(pool) // 3)]
            for name in hit:
                admin.inject("xid", node=name, gpu=0, code=79)
            console.print(f"injected XID 79 on {len(hit)} of {len(pool)} nodes of pool {second_pool}")
            admin.advance(120)
            results += agent.handle(_alerts(admin), approver)

        console.rule("result")
        console.print(results_table(results))
        for r in results:
            if r.state.escalation_reason:
                console.print(f"[bold red]{r.incident_id} escalated:[/] {r.state.escalation_reason}")
            if r.state.handoff:
                console.print(f"[cyan]{r.incident_id} hand-off:[/] {r.state.handoff}")
        console.print(_truth_table(admin))
        console.print(f"[dim]demo finished in {time.perf_counter() - t0:.1f} s[/]")
        if keep is not None:
            console.print(
                f"kept in {keep}: SUPPLY_AGENT_CONSOLE_TOKEN=... supply-agent console "
                f"--store sqlite:///{(keep / 'supply-agent.db').as_posix()}"
            )
