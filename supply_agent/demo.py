"""``make demo``: a sandbox fleet, a fatal XID on one node, then on a third of a pool, seen through the
same Kubernetes API and node-agent path the agent uses. (The agent loop joins it in a later issue.)"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from kubernetes import client, config
from rich.console import Console
from rich.table import Table

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.clock import SimClock
from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import AGENT_NAMESPACE, POOL_LABEL, Fleet, FleetSpec
from supply_agent.gate import decide
from supply_agent.models import Action, Decision
from supply_agent.playbooks import load_playbooks
from supply_agent.worldview import History, enrich, read_world
from tools.kubernetes import KubeTools


def _gpu_table(report: dict[str, Any]) -> Table:
    table = Table(
        title=f"GPU health of {report['node']} (via pods/proxy → node-agent → NVML"
        f"{', simulated' if report['simulated'] else ''})"
    )
    for col in ("GPU", "UUID", "temp °C", "ECC unc. (vol/agg)", "row remap", "XIDs", "clock events"):
        table.add_column(col)
    for g in report["gpus"]:
        rr = g["remapped_rows"] or {}
        table.add_row(
            str(g["index"]),
            g["uuid"][:13] + "…",
            str(g["temperature_c"]),
            f"{g['ecc_uncorrected_volatile']}/{g['ecc_uncorrected_aggregate']}",
            "pending" if rr.get("pending") else ("FAILED" if rr.get("failure") else "ok"),
            ",".join(str(x["xid"]) for x in g["xid_events"]) or "-",
            ",".join(g["clock_event_reasons"]) or "-",
            style="bold red" if g["xid_events"] or g["lost"] else None,
        )
    return table


def _show_decision(console: Console, action: Action, decision: Decision) -> None:
    colour = {"allow": "green", "ask": "yellow", "deny": "red"}[decision.verdict.value]
    console.print(
        f"gate: [bold {colour}]{decision.verdict.value.upper()}[/] {action.tool} {action.params['node']}"
    )
    for reason in decision.reasons:
        console.print(f"  - {reason}")


def run_demo(nodes: int = 24) -> None:
    console = Console()
    fleet = Fleet(FleetSpec(nodes=nodes, pools=2, seed=7), SimClock("manual"))
    fleet.generate()
    with FleetServer(fleet) as server, tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        server.write_kubeconfig(kubeconfig)
        console.print(
            f"[bold]sandbox fleet[/] at {server.url}: {fleet.store.count('nodes')} nodes, "
            f"{fleet.store.count('pods')} pods  (kubectl --kubeconfig {kubeconfig} get nodes)"
        )
        api = config.new_client_from_config(config_file=str(kubeconfig))
        v1 = client.CoreV1Api(api)
        admin = AdminClient.from_kubeconfig(kubeconfig)

        def get(call: Any, *args: Any, **kwargs: Any) -> Any:
            """The official client, raw JSON: the demo reads a few fields, not whole typed models."""
            return json.loads(call(*args, _preload_content=False, **kwargs).data)

        nodes_list = get(v1.list_node)["items"]
        first = nodes_list[0]["metadata"]["name"]
        console.rule("1. a fatal XID on one node")
        fault = admin.inject("xid", node=first, gpu=3, code=79)
        console.print(
            f"injected XID {fault['code']} on {first} GPU 3 (customer pod on it: {fault['labels'].get('pod', '-')})"
        )
        agent = get(v1.list_namespaced_pod, AGENT_NAMESPACE, field_selector=f"spec.nodeName={first}")[
            "items"
        ][0]
        console.print(
            _gpu_table(
                get(
                    v1.connect_get_namespaced_pod_proxy_with_path,
                    agent["metadata"]["name"],
                    AGENT_NAMESPACE,
                    "health",
                )
            )
        )
        node = get(v1.read_node, first)
        gpu_cond = next(c for c in node["status"]["conditions"] if c["type"] == "GpuHealthy")
        console.print(
            f"node condition GpuHealthy={gpu_cond['status']}: {gpu_cond['message']}; "
            f"allocatable nvidia.com/gpu={node['status']['allocatable']['nvidia.com/gpu']}"
        )
        for alert in admin.alerts("raw"):
            console.print(
                f"  alert [bold]{alert['alertname']}[/] severity={alert['labels']['severity']} node={alert['labels'].get('node')}"
            )
        kube = KubeTools(api)
        playbooks = load_playbooks(Path(__file__).resolve().parent.parent / "playbooks")
        cordon = Action(
            tool="k8s.cordon_node",
            params={"node": first},
            incident_id="demo-1",
            step=1,
            playbook_id="xid-fallen-off-bus",
        )
        world = enrich(read_world(kube, fleet.now(), frozenset({first})), kube, [first])
        _show_decision(console, cordon, decide(cordon, world, History(), playbooks))
        admin.clear()

        console.rule("2. the same XID on a third of a pool at once (a bad driver rollout)")
        pool = nodes_list[0]["metadata"]["labels"][POOL_LABEL]
        in_pool = [n["metadata"]["name"] for n in nodes_list if n["metadata"]["labels"][POOL_LABEL] == pool]
        hit = in_pool[: max(1, len(in_pool) // 3)]
        for name in hit:
            admin.inject("xid", node=name, gpu=0, code=79)
        alerts = admin.alerts("raw")
        truth = admin.truth()
        table = Table(title=f"pool {pool}: {len(hit)} of {len(in_pool)} nodes report XID 79")
        for col in ("alerts firing", "GPUs out of service (pool)", "customers affected"):
            table.add_column(col)
        table.add_row(
            str(len(alerts)),
            str(truth["pools"][pool]["gpus_out_of_service"]),
            str(len(truth["customers_affected"])),
        )
        console.print(table)
        cordon = Action(
            tool="k8s.cordon_node",
            params={"node": hit[0]},
            incident_id="demo-2",
            step=1,
            playbook_id="xid-fallen-off-bus",
        )
        world = enrich(read_world(kube, fleet.now(), frozenset(hit)), kube, [hit[0]])
        _show_decision(console, cordon, decide(cordon, world, History(), playbooks))
        console.print(
            "[dim]The same XID on a third of a pool at once: the likely cause is the rollout, not the GPUs, "
            "so the gate's short circuit stops and pages a human.[/]"
        )
