"""The ``supply-agent`` command line: the root group and the sandbox fleet's commands.

Long because it holds the whole ``sandbox`` group (serve, inject, alerts, fleet, clock, snapshot) next to
the root; that group is the next to move into a module of its own, as the other groups did."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from supply_agent import __version__
from supply_agent.logging import configure_logging, get_logger
from supply_agent.settings import SettingsError, get_settings

FAULTS = [
    "xid",
    "ecc",
    "off-bus",
    "thermal",
    "notready",
    "partition",
    "agent-down",
    "monitor-silent",
    "disk-pressure",
    "crashloop",
    "oomkill",
    "stuck-terminating",
    "double-metering",
]
# Faults of a component several nodes share, and how each names its nodes (sandbox/fleet/faults.py).
COMPONENT_FAULTS = {
    "rack-cooling": ("rack", "nodes"),
    "rack-power": ("rack", "nodes"),
    "switch-down": ("switch",),
    "driver-rollout": ("nodes",),
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="supply-agent")
def main() -> None:
    """supply-agent: the on-call agent for GPU infrastructure whose every action is checked first."""
    try:
        settings = get_settings()
    except SettingsError as exc:
        raise click.ClickException(f"the settings cannot be read: {exc}") from exc
    except ValidationError as exc:  # which variable, and what was expected; never the value (a secret?)
        wrong = "; ".join(
            f"SUPPLY_AGENT_{str(e['loc'][0]).upper() if e['loc'] else '?'}: {e['msg']}" for e in exc.errors()
        )
        raise click.ClickException(f"the settings cannot be read: {wrong}") from exc
    configure_logging(settings.log_format, settings.log_level)


# -- the sandbox fleet -----------------------------------------------------------------------------
@main.group()
def sandbox() -> None:
    """The sandbox fleet: a simulated GPU cluster that speaks the Kubernetes API."""


@sandbox.command("serve")
@click.option(
    "--nodes", type=click.IntRange(1, 50_000), default=12, show_default=True, help="Number of GPU nodes."
)
@click.option("--gpus-per-node", type=click.IntRange(1, 16), default=8, show_default=True)
@click.option("--pools", type=click.IntRange(1, 64), default=2, show_default=True, help="Node pools.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same fleet.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0 picks a free port."
)
@click.option(
    "--fill",
    type=click.FloatRange(0.0, 1.0),
    default=0.7,
    show_default=True,
    help="Fraction of GPUs tenant workloads request.",
)
@click.option(
    "--jobsets",
    type=click.IntRange(0, 1000),
    default=2,
    show_default=True,
    help="Multi-node training JobSets (jobset.x-k8s.io), each on whole nodes of one pool.",
)
@click.option(
    "--clock",
    "clock_mode",
    type=click.Choice(["real", "manual"]),
    default="real",
    show_default=True,
    help="real: time passes; manual: only /sandbox/v1/clock/advance moves it.",
)
@click.option(
    "--snapshot",
    "snapshot_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from a saved world instead of generating one.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the kubeconfig (bearer token inside, mode 0600).",
)
def sandbox_serve(
    nodes: int,
    gpus_per_node: int,
    pools: int,
    seed: int,
    port: int,
    fill: float,
    jobsets: int,
    clock_mode: str,
    snapshot_file: Path | None,
    kubeconfig: Path,
) -> None:
    """Serve a sandbox fleet on 127.0.0.1 until SIGINT or SIGTERM."""
    from sandbox.fleet.clock import SimClock
    from sandbox.fleet.server import FleetServer
    from sandbox.fleet.world import Fleet, FleetSpec

    log = get_logger(component="sandbox")
    if snapshot_file is not None:
        try:
            fleet = Fleet.restore(json.loads(snapshot_file.read_text()), clock_mode=clock_mode)
        except (ValueError, KeyError, TypeError) as exc:
            raise click.BadParameter(
                f"{snapshot_file}: not a fleet snapshot: {exc}", param_hint="--snapshot"
            ) from exc
    else:
        if pools > nodes:
            raise click.BadParameter(
                f"{pools} pools need at least {pools} nodes, not {nodes}", param_hint="--pools"
            )
        spec = FleetSpec(
            nodes=nodes, gpus_per_node=gpus_per_node, pools=pools, seed=seed, fill=fill, jobsets=jobsets
        )
        fleet = Fleet(spec, SimClock("real" if clock_mode == "real" else "manual"))
        fleet.generate()
    try:
        server = FleetServer(fleet, port=port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from exc
    server.write_kubeconfig(kubeconfig)

    def ready() -> None:
        click.echo(
            f"ready {server.url} kubeconfig={kubeconfig} nodes={fleet.store.count('nodes')} "
            f"pods={fleet.store.count('pods')}",
            nl=True,
        )
        sys.stdout.flush()
        log.info(
            "fleet serving", url=server.url, nodes=fleet.store.count("nodes"), pods=fleet.store.count("pods")
        )

    server.run(on_ready=ready)
    log.info("fleet stopped")


def _admin(kubeconfig: Path) -> Any:
    from sandbox.fleet.admin import AdminClient

    return _admin_call(AdminClient.from_kubeconfig, kubeconfig)


def _admin_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from sandbox.fleet.admin import AdminError

    try:
        return fn(*args, **kwargs)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from exc


_kubeconfig_option = click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The kubeconfig `sandbox serve` wrote.",
)


@sandbox.command("inject")
@_kubeconfig_option
@click.argument("fault", type=click.Choice([*FAULTS, *COMPONENT_FAULTS, "clear"]))
@click.option(
    "--node",
    help="Target node (node and GPU faults; `clear --node` clears one node, with --gpu resets one GPU).",
)
@click.option(
    "--gpu",
    type=click.IntRange(0, 15),
    help="GPU index on the node (GPU faults; monitor-silent: only that GPU's series).",
)
@click.option("--code", type=click.IntRange(1, 1000), help="XID code (xid; driver-rollout, default 119).")
@click.option("--namespace", "-n", help="Namespace of the pod (pod faults).")
@click.option("--pod", help="Target pod (crashloop, oomkill, stuck-terminating, double-metering).")
@click.option("--rack", help="A rack's name (rack-cooling, rack-power; `clear --rack`).")
@click.option("--switch", help="A leaf switch's name (switch-down; `clear --switch`).")
@click.option(
    "--nodes", "nodes_csv", help="Nodes, comma separated (driver-rollout; rack-cooling and rack-power)."
)
@click.option("--driver", help="The driver version the nodes take (driver-rollout, default 560.35.03).")
@click.option("--detail", default="", help="Free text stored with the fault.")
def sandbox_inject(
    kubeconfig: Path,
    fault: str,
    node: str | None,
    gpu: int | None,
    code: int | None,
    namespace: str | None,
    pod: str | None,
    rack: str | None,
    switch: str | None,
    nodes_csv: str | None,
    driver: str | None,
    detail: str,
) -> None:
    """Inject FAULT into a running fleet, or `clear` every fault (or a node's, a rack's, a switch's)."""
    nodes = [n.strip() for n in nodes_csv.split(",") if n.strip()] if nodes_csv is not None else None
    if nodes_csv is not None and not nodes:
        raise click.UsageError("--nodes names no node (give them comma separated: a,b,c)")
    component = {"rack": rack, "switch": switch, "nodes": nodes}
    if fault == "clear":
        given = [f"--{k}" for k, v in (("node", node), ("rack", rack), ("switch", switch)) if v]
        if len(given) > 1 or nodes is not None or driver is not None:
            raise click.UsageError("clear takes at most one of --node, --rack and --switch")
        if gpu is not None and node is None:
            raise click.UsageError("clear --gpu resets one GPU: it needs --node")
        admin = _admin(kubeconfig)
        result = _admin_call(admin.clear, node, rack=rack, switch=switch, gpu=gpu)
        click.echo(f"cleared {len(result['cleared'])} fault(s)")
        return
    if fault in COMPONENT_FAULTS:
        allowed = COMPONENT_FAULTS[fault]
        wrong = [f"--{k}" for k, v in (("node", node), ("gpu", gpu), ("pod", pod)) if v is not None]
        wrong += [f"--{k}" for k, v in component.items() if v is not None and k not in allowed]
        if driver is not None and fault != "driver-rollout":
            wrong.append("--driver")
        if code is not None and fault != "driver-rollout":
            wrong.append("--code")
        if wrong:
            raise click.UsageError(
                f"fault {fault!r} takes no {', '.join(wrong)} (it names its nodes by "
                f"{' or '.join('--' + a for a in allowed)})"
            )
        given = [k for k in allowed if component[k] is not None]
        if len(given) != 1:
            choice = " or ".join("--" + a for a in allowed)
            raise click.UsageError(
                f"fault {fault!r} needs {choice}"
                if not given
                else f"fault {fault!r} takes one of {choice}, not both"
            )
        admin = _admin(kubeconfig)
        result = _admin_call(
            admin.inject,
            fault,
            code=code,
            driver=driver,
            detail=detail or None,
            **{given[0]: component[given[0]]},
        )
        covered = list(result.get("nodes") or [])
        of = "".join(f" of {k} {result[k]}" for k in ("rack", "switch") if result.get(k))
        click.echo(
            f"injected {result['id']} {fault} on {len(covered)} node{'s' if len(covered) != 1 else ''}{of}"
            + (f" driver={result['driver']}" if result.get("driver") else "")
            + (f" xid={result['code']}" if result.get("code") else "")
            + f": {','.join(covered)}"
        )
        return
    if given_component := [f"--{k}" for k, v in (*component.items(), ("driver", driver)) if v is not None]:
        raise click.UsageError(
            f"{', '.join(given_component)} only with the component faults ({', '.join(COMPONENT_FAULTS)})"
        )
    missing = {
        "xid": ["node", "gpu", "code"],
        "ecc": ["node", "gpu"],
        "off-bus": ["node", "gpu"],
        "thermal": ["node", "gpu"],
    }.get(
        fault,
        ["node"]
        if fault in ("notready", "partition", "agent-down", "monitor-silent", "disk-pressure")
        else ["pod"],
    )
    given_fields = {"node": node, "gpu": gpu, "code": code, "pod": pod}
    if absent := [m for m in missing if given_fields[m] is None]:
        raise click.UsageError(f"fault {fault!r} needs {', '.join('--' + a for a in absent)}")
    admin = _admin(kubeconfig)
    result = _admin_call(
        admin.inject,
        fault,
        node=node,
        gpu=gpu,
        code=code,
        namespace=namespace,
        pod=pod,
        detail=detail or None,
    )
    target = result.get("node") or f"{result.get('namespace')}/{result.get('pod')}"
    click.echo(
        f"injected {result['id']} {fault} on {target}"
        + (f" gpu={gpu}" if gpu is not None else "")
        + (f" xid={result['code']}" if result.get("code") else "")
    )


@sandbox.command("alerts")
@_kubeconfig_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["alertmanager", "pagerduty", "raw"]),
    default="alertmanager",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one webhook body per file into this folder instead of printing a JSON array.",
)
def sandbox_alerts(kubeconfig: Path, fmt: str, out: Path | None) -> None:
    """Print the alerts the injected faults fire, as Alertmanager or PagerDuty V3 webhook bodies."""
    bodies = _admin_call(_admin(kubeconfig).alerts, fmt)
    if out is None:
        click.echo(json.dumps(bodies, indent=2))
        return
    out.mkdir(parents=True, exist_ok=True)
    for i, body in enumerate(bodies):
        (out / f"{fmt}-{i:03d}.json").write_text(json.dumps(body, indent=2))
    click.echo(f"wrote {len(bodies)} {fmt} webhook bodies to {out}")


@sandbox.command("clock")
@_kubeconfig_option
@click.option("--advance", type=click.FloatRange(0), help="Seconds to move the simulated clock forward.")
def sandbox_clock(kubeconfig: Path, advance: float | None) -> None:
    """Show the fleet's clock, or advance it."""
    admin = _admin(kubeconfig)
    result = (
        _admin_call(admin.advance, advance)
        if advance is not None
        else _admin_call(admin.request, "GET", "clock")
    )
    click.echo(f"{result['now']} ({result['mode']})")


@sandbox.command("truth")
@_kubeconfig_option
def sandbox_truth(kubeconfig: Path) -> None:
    """Print the fleet's truth (for evals, never for the agent) as JSON."""
    click.echo(json.dumps(_admin_call(_admin(kubeconfig).truth), indent=2))


@sandbox.command("meters")
@_kubeconfig_option
@click.option("--namespace", "-n")
@click.option("--pod")
def sandbox_meters(kubeconfig: Path, namespace: str | None, pod: str | None) -> None:
    """Print the GPU-seconds meters as JSON."""
    click.echo(json.dumps(_admin_call(_admin(kubeconfig).meters, namespace, pod), indent=2))


@sandbox.command("snapshot")
@_kubeconfig_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def sandbox_snapshot(kubeconfig: Path, out: Path) -> None:
    """Save the whole world to a file."""
    snap = _admin_call(_admin(kubeconfig).snapshot)
    out.write_text(json.dumps(snap))
    click.echo(f"wrote snapshot to {out} ({sum(len(v) for v in snap['objects'].values())} objects)")


@sandbox.command("restore")
@_kubeconfig_option
@click.argument("snapshot", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def sandbox_restore(kubeconfig: Path, snapshot: Path) -> None:
    """Replace the running world with a saved one."""
    try:
        data = json.loads(snapshot.read_text())
    except ValueError as exc:
        raise click.BadParameter(f"{snapshot} is not JSON: {exc}", param_hint="SNAPSHOT") from exc
    result = _admin_call(_admin(kubeconfig).restore, data)
    click.echo(f"restored {result['nodes']} nodes, {result['pods']} pods at {result['now']}")


@sandbox.command("fleet")
@click.option("--nodes", type=click.IntRange(1, 50_000), default=12, show_default=True)
@click.option("--gpus-per-node", type=click.IntRange(1, 16), default=8, show_default=True)
@click.option("--pools", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fill", type=click.FloatRange(0.0, 1.0), default=0.7, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def sandbox_fleet(nodes: int, gpus_per_node: int, pools: int, seed: int, fill: float, fmt: str) -> None:
    """Print the fleet `sandbox serve` would generate with these options, without serving it: each
    node's pool, rack and GPU product, and the tenant pods on it."""
    from sandbox.fleet.clock import SimClock
    from sandbox.fleet.world import CUSTOMER_LABEL, POOL_LABEL, PRODUCT_LABEL, RACK_LABEL, Fleet, FleetSpec

    if pools > nodes:
        raise click.BadParameter(
            f"{pools} pools need at least {pools} nodes, not {nodes}", param_hint="--pools"
        )
    spec = FleetSpec(nodes=nodes, gpus_per_node=gpus_per_node, pools=pools, seed=seed, fill=fill)
    fleet = Fleet(spec, SimClock("manual"))
    fleet.generate()
    tenants: dict[str, list[dict[str, str]]] = {}
    for pod in fleet.store.items("pods"):
        meta, node = pod["metadata"], pod["spec"].get("nodeName")
        customer = (meta.get("labels") or {}).get(CUSTOMER_LABEL)
        if node and customer:
            tenants.setdefault(node, []).append(
                {"namespace": meta["namespace"], "name": meta["name"], "customer": customer}
            )
    rows: list[dict[str, Any]] = []
    for n in sorted(fleet.store.items("nodes"), key=lambda o: o["metadata"]["name"]):
        name, labels = n["metadata"]["name"], n["metadata"].get("labels") or {}
        pods = sorted(tenants.get(name, []), key=lambda p: (p["namespace"], p["name"]))
        rows.append(
            {
                "name": name,
                "pool": labels.get(POOL_LABEL, ""),
                "rack": labels.get(RACK_LABEL, ""),
                "gpu_product": labels.get(PRODUCT_LABEL, ""),
                "pods": pods,
            }
        )
    if fmt == "json":
        click.echo(json.dumps({"spec": spec.model_dump(), "nodes": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sandbox fleet seed={seed}: {len(rows)} nodes")
    for col in ("node", "pool", "rack", "gpu product", "tenant pods"):
        table.add_column(col, overflow="fold")
    for r in rows:
        cell = "\n".join(f"{p['namespace']}/{p['name']} ({p['customer']})" for p in r["pods"])
        table.add_row(r["name"], r["pool"], r["rack"], r["gpu_product"], cell or "-")
    Console(width=200).print(table)


# -- playbooks -------------------------------------------------------------------------------------
from supply_agent.cli.playbooks import register as _register_playbooks  # noqa: E402

_register_playbooks(main)

from supply_agent.cli.agent import register as _register_agent  # noqa: E402

_register_agent(main)

from supply_agent.cli.console import register as _register_console  # noqa: E402
from supply_agent.cli.db import register as _register_db  # noqa: E402
from supply_agent.cli.mcp import register as _register_mcp  # noqa: E402
from supply_agent.cli.serve import register as _register_serve  # noqa: E402

_register_serve(main)
_register_db(main)
_register_console(main)
_register_mcp(main)

# Command groups from other packages (the evals' `eval`) plug in through an entry point, so the agent's
# package never imports the package that scores it.
for _plugin in entry_points(group="supply_agent.commands"):
    _plugin.load()(main)


def _kube(kubeconfig: Path | None, context: str | None = None) -> Any:
    from tools.kubernetes import KubeTools

    settings = get_settings()
    path = kubeconfig or settings.kubeconfig
    if path is None:
        raise click.UsageError("give --kubeconfig (or set SUPPLY_AGENT_KUBECONFIG)")
    if not Path(path).exists():
        raise click.BadParameter(f"{path} does not exist", param_hint="--kubeconfig")
    return KubeTools.from_kubeconfig(Path(path), context or settings.kube_context)


@main.commands["playbooks"].command("explain")  # type: ignore[attr-defined]
@click.argument("action_json", required=False)
@click.option(
    "--xid",
    type=click.IntRange(1, 65535),
    help="Say what the agent does for this XID and why (NVIDIA's catalogue, the playbook), instead.",
)
@click.option(
    "--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), help="The cluster to judge against."
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Playbooks folder (default: SUPPLY_AGENT_PLAYBOOKS_DIR or playbooks/).",
)
@click.option("--audit-db", help="SQLAlchemy URL of the audit log, for the agent's own history.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@click.option(
    "--node",
    help="Say which limits hold on this node of the --kubeconfig cluster (its node group), instead.",
)
@click.option("--pool", help="With no cluster: which limits hold on a node of this pool, ...")
@click.option("--gpu-model", help="... of this GPU model (nvidia.com/gpu.product), ...")
@click.option("--tier", help="... and this tenant tier (supply-agent.io/tenant-tier).")
@click.option("--pool-size", type=click.IntRange(min=1), help="With --pool: the nodes in the pool.")
@click.option("--fleet-size", type=click.IntRange(min=1), help="With --pool: the nodes in the fleet.")
def playbooks_explain(
    action_json: str | None,
    xid: int | None,
    kubeconfig: Path | None,
    directory: Path | None,
    audit_db: str | None,
    as_json: bool,
    node: str | None,
    pool: str | None,
    gpu_model: str | None,
    tier: str | None,
    pool_size: int | None,
    fleet_size: int | None,
) -> None:
    """Print the gate's decision on ACTION_JSON (a JSON object, or @FILE) and every reason; with
    ``--xid N``, what the agent does for XID N and why; with ``--node NAME`` (or ``--pool``,
    ``--gpu-model``, ``--tier`` without a cluster), which node group and limits hold on a node."""
    from datetime import UTC, datetime

    from rich.console import Console

    from supply_agent.hands.world import enrich, read_breaker, read_world
    from supply_agent.models import Action
    from supply_agent.policy import PlaybookSetError, load_playbooks
    from supply_agent.policy.gate import decide, history_from_audit
    from supply_agent.policy.world import History

    if xid is not None:
        from supply_agent.cli.playbooks import explain_xid

        try:
            pset = load_playbooks(directory or get_settings().playbooks_dir)
        except PlaybookSetError as exc:
            raise click.ClickException(str(exc)) from exc
        answer = explain_xid(pset, xid)
        if as_json:
            click.echo(json.dumps(answer, indent=2))
        else:
            Console().print(answer["text"], markup=False, highlight=False)
        return
    if node is not None or pool is not None or gpu_model is not None or tier is not None:
        where = {"pool": pool, "gpu_model": gpu_model, "tenant_tier": tier}
        _explain_node(directory, kubeconfig, node, where, (pool_size, fleet_size))
        return
    if action_json is None:
        raise click.UsageError("give ACTION_JSON, --xid N, or --node NAME")

    text = Path(action_json[1:]).read_text() if action_json.startswith("@") else action_json
    try:
        raw = json.loads(text)
        raw.setdefault("incident_id", "explain")
        raw.setdefault("step", 0)
        raw.setdefault("proposed_by", "human")
        action = Action.model_validate(raw)
    except (ValueError, ValidationError, AttributeError) as exc:
        raise click.BadParameter(f"not an action: {exc}", param_hint="ACTION_JSON") from exc
    try:
        playbooks = load_playbooks(directory or get_settings().playbooks_dir)
    except PlaybookSetError as exc:
        raise click.ClickException(str(exc)) from exc
    kube = _kube(kubeconfig)
    world = read_world(kube, datetime.now(UTC))
    node = action.params.get("node")
    if isinstance(node, str):
        world = enrich(world, kube, [node])
    history = History(breaker_tripped=read_breaker(kube)[0], breaker_reason=read_breaker(kube)[1])
    if audit_db:
        from sandbox.executor.audit import AuditLog

        history = history_from_audit(AuditLog.from_url(audit_db).records(), world, read_breaker(kube))
    decision = decide(action, world, history, playbooks)
    if as_json:
        click.echo(decision.model_dump_json(indent=2))
        return
    colour = {"allow": "green", "ask": "yellow", "deny": "red"}[decision.verdict.value]
    console = Console()
    console.print(
        f"[bold {colour}]{decision.verdict.value.upper()}[/] {action.tool} {json.dumps(action.params)}"
    )
    for reason in decision.reasons:
        console.print(f"  - {reason}")
    t = decision.targets
    console.print(
        f"  targets: nodes={list(t.nodes)} pods={len(t.pods)} customers={list(t.customers)} gpus={t.gpus} "
        f"dollars={t.dollars}"
    )
    console.print(f"  limits consulted: {', '.join(decision.limits_consulted)}")
    group = next(
        (c.split(".", 1)[1] for c in decision.limits_consulted if c.startswith("node_groups.")), None
    )
    if group is not None:
        console.print(
            f"  node group: {group} (see `playbooks explain --node {t.nodes[0] if t.nodes else '...'}`)"
        )


def _explain_node(
    directory: Path | None,
    kubeconfig: Path | None,
    node: str | None,
    where: dict[str, str | None],
    sizes: tuple[int | None, int | None],
) -> None:
    """``playbooks explain --node``: the node group and the limits on one node, read from the cluster,
    or described by ``where`` (--pool, --gpu-model, --tier) with the pool's and the fleet's ``sizes``."""
    from rich.console import Console

    from supply_agent.cli.playbooks import group_choices_table, limits_table
    from supply_agent.policy import PlaybookSetError, load_playbooks
    from supply_agent.policy.world import GROUP_LABELS

    try:
        pset = load_playbooks(directory or get_settings().playbooks_dir)
    except PlaybookSetError as exc:
        raise click.ClickException(str(exc)) from exc
    labels = {k: v for k, v in where.items() if v}
    pool_size, fleet_size = sizes
    if node is not None:
        kube = _kube(kubeconfig)
        info = kube.get_node(node)
        labels = {k: info.labels[v] for k, v in GROUP_LABELS.items() if v in info.labels}
        if info.pool:
            labels["pool"] = info.pool
            pool_size = len(kube.list_nodes(label_selector=f"{GROUP_LABELS['pool']}={info.pool}"))
        fleet_size = len(kube.list_nodes())
    what = ", ".join(f"{k}={v}" for k, v in labels.items()) or "no group labels"
    why, table = limits_table(pset.limits, labels, pool_size, fleet_size)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 160))  # a file or a pipe: whole cells, not wrapped
    console.print(
        f"{f'node {node}' if node else 'a node'} ({what}): {why}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(table)
    choices = group_choices_table(pset, labels)
    if choices is not None:
        console.print(choices)


def _control(kubeconfig: Path | None, tool: str, reason: str, by: str) -> tuple[bool, str]:
    """Run one control action for a human through the guarded executor (the writer's credentials, an
    audit row naming ``by``); the latch as read back with the reader's."""
    import uuid

    from supply_agent.hands.wiring import build_environment
    from supply_agent.hands.world import read_breaker, read_freeze
    from supply_agent.models import Action

    settings = get_settings()
    path = kubeconfig or settings.kubeconfig
    if path is None:
        raise click.UsageError("give --kubeconfig (or set SUPPLY_AGENT_KUBECONFIG)")
    if not Path(path).exists():
        raise click.BadParameter(f"{path} does not exist", param_hint="--kubeconfig")
    env = build_environment(settings, Path(path))
    try:
        action = Action(
            tool=tool, params={"reason": reason, "by": by}, incident_id="control", step=0, proposed_by=by
        )
        result = env.runtime.executor.control(action, by=by, key=f"{tool}:{uuid.uuid4()}")
        if result.outcome != "executed":
            raise click.ClickException(
                f"{tool} {result.outcome}: {result.error or '; '.join(result.reasons)}"
            )
        read = read_freeze if tool.endswith("freeze") else read_breaker
        return read(env.runtime.kube)
    finally:
        env.close()


@main.command()
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reason", required=True, help="Why every write stops now.")
@click.option("--by", default=lambda: __import__("getpass").getuser(), help="Who froze it.")
def freeze(kubeconfig: Path | None, reason: str, by: str) -> None:
    """Kill switch: stop every write of every incident at once (ConfigMap supply-agent-freeze)."""
    _control(kubeconfig, "control.freeze", reason, by)
    click.echo(f"frozen: every write is denied until `supply-agent unfreeze` ({reason})")


@main.command()
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reason", default="lifted by a human", show_default=True)
@click.option("--by", default=lambda: __import__("getpass").getuser())
def unfreeze(kubeconfig: Path | None, reason: str, by: str) -> None:
    """Lift the kill switch."""
    _control(kubeconfig, "control.unfreeze", reason, by)
    click.echo("unfrozen: writes are decided by the gate again")


@main.command()
@click.argument("what", type=click.Choice(["status", "reset"]))
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reason", default="reset by a human", show_default=True)
@click.option("--by", default=lambda: __import__("getpass").getuser())
def breaker(what: str, kubeconfig: Path | None, reason: str, by: str) -> None:
    """The circuit breaker: show it, or reset it (a human's call; it never resets itself)."""
    from supply_agent.hands.world import read_breaker

    if what == "reset":
        tripped, why = _control(kubeconfig, "control.reset_breaker", reason, by)
    else:
        tripped, why = read_breaker(_kube(kubeconfig))
    click.echo(f"circuit breaker {'TRIPPED: ' + why if tripped else 'CLOSED'}")


# -- the node agent --------------------------------------------------------------------------------
def _pod_resources_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    from tools.podresources import DEFAULT_SOCKET

    return click.option(
        "--pod-resources-socket",
        envvar="SUPPLY_AGENT_POD_RESOURCES_SOCKET",
        default=DEFAULT_SOCKET,
        show_default=True,
        help="The kubelet's pod-resources socket (which pod holds which GPU); 'none' reads no pods.",
    )(fn)


def _node_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--node",
        envvar="NODE_NAME",
        default=lambda: __import__("socket").gethostname(),
        help="This node's name (env NODE_NAME, as the DaemonSet's downward API sets it).",
    )(fn)


def _socket_or_none(path: str) -> str | None:
    return None if path.strip().lower() in ("", "none") else path


@main.group("node-agent")
def node_agent() -> None:
    """The per-node GPU health agent (runs as a DaemonSet)."""


@node_agent.command("serve")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=9400, show_default=True)
@_node_option
@_pod_resources_option
def node_agent_serve(host: str, port: int, node: str, pod_resources_socket: str) -> None:
    """Serve this node's GPU health report (NVML) on /health."""
    from supply_agent.node_agent import serve

    serve(host, port, node, pod_resources_socket=_socket_or_none(pod_resources_socket))


@node_agent.command("report")
@_node_option
@_pod_resources_option
def node_agent_report(node: str, pod_resources_socket: str) -> None:
    """Print this node's GPU health report once, as JSON (what /health serves): to check a node by hand,
    or to keep a real GPU's report as a test fixture. Without NVML the report says why."""
    from supply_agent.node_agent import make_collector

    collector = make_collector(node, pod_resources_socket=_socket_or_none(pod_resources_socket))
    try:
        collector.start()
        click.echo(collector.report().model_dump_json(indent=2))
    finally:
        collector.close()


# -- demo ------------------------------------------------------------------------------------------
@main.command()
@click.option("--nodes", type=click.IntRange(3, 5000), default=24, show_default=True)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the agent's store in this directory (for `supply-agent console --store`).",
)
def demo(nodes: int, keep: Path | None) -> None:
    """The agent on a sandbox fleet: one fatal XID mitigated, a bad driver rollout stopped and escalated."""
    from supply_agent.cli.demo import run_demo

    run_demo(nodes, keep)


if __name__ == "__main__":  # pragma: no cover
    main()
