"""The world an incident is replayed in: the fleet its file describes, and its ``$names`` bound to
real objects in that fleet.

It exists apart from the replay because building the world happens once, before the clock starts, and
is a function of the incident file and the fleet alone: ``build_fleet`` makes the fleet (a generated
``FleetSpec`` or a saved snapshot), ``resolve`` binds each ``world.bind`` name to a node (any, or an idle
one), a list of nodes, a tenant pod (any, or the one on a given GPU), or a rack or leaf switch name, and
``add_pdbs`` adds the disruption budgets the incident asks for. ``subst`` and the reference helpers turn
``$name`` in the rest of the file into what it is bound to; the replay and scoring use them too, and
``fault_requests``/``clear_requests`` turn a fault or clear step into the fleet's admin calls.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from evals.schema import REF, Binding, FaultStep, Incident
from sandbox.fleet.clock import SimClock
from sandbox.fleet.faults import COMPONENT_FAULTS
from sandbox.fleet.world import POOL_LABEL, Fleet, FleetSpec
from sandbox.fleet.world.jobsets import JOB_INDEX, JOBSET_NAME
from sandbox.fleet.world.lws import GROUP_INDEX, LWS_NAME, WORKER_INDEX
from sandbox.fleet.world.spec import GPU_INDICES_ANNOTATION, RACK_LABEL, SWITCH_LABEL

TENANT_PREFIX = "tenant-"

Names = dict[str, str | list[str]]


class ReplayError(RuntimeError):
    """The incident file cannot be replayed on this fleet (a binding that finds nothing, a bad fault)."""


def build_fleet(incident: Incident, path: Path) -> Fleet:
    w = incident.world
    if w.snapshot is not None:
        data = json.loads((path.parent / w.snapshot).read_text())
        return Fleet.restore(data, clock_mode="manual")
    assert w.fleet is not None
    fleet = Fleet(FleetSpec(**w.fleet.spec()), SimClock("manual"))
    try:
        fleet.generate()
    except ValueError as exc:  # a JobSet the fleet has no room for, or in a pool it does not have
        raise ReplayError(f"world.fleet.{exc}") from None
    return fleet


def _pools(fleet: Fleet) -> list[list[str]]:
    pools: dict[str, list[str]] = {}
    for n in fleet.store.items("nodes"):
        pools.setdefault(n["metadata"]["labels"][POOL_LABEL], []).append(n["metadata"]["name"])
    return [sorted(pools[p]) for p in sorted(pools)]


def _replicas(fleet: Fleet, ns: str, deployment: str) -> int:
    dep = fleet.store.get("deployments", ns, deployment)
    return int((dep or {}).get("spec", {}).get("replicas") or 0)


def _idle(fleet: Fleet, node: str) -> bool:
    """No tenant pod is bound to the node (pods of the node-agent DaemonSet do not count)."""
    return not any(
        p["metadata"]["namespace"].startswith(TENANT_PREFIX) for p in fleet.store.pods_on_node(node)
    )


def _component_names(fleet: Fleet, nodes: list[str], label: str) -> list[str]:
    """The racks or leaf switches (the values of their node label) these nodes are in, in name order."""
    return sorted({fleet.node(n)["metadata"]["labels"].get(label) or "" for n in nodes} - {""})


def _pod_on_gpu(fleet: Fleet, node: str, gpu: int) -> str | None:
    """``namespace/pod`` of the tenant pod the scheduler gave GPU ``gpu`` of ``node``, from its annotation."""
    for p in fleet.store.pods_on_node(node):
        ns = p["metadata"]["namespace"]
        indices = (p["metadata"].get("annotations") or {}).get(GPU_INDICES_ANNOTATION, "")
        if ns.startswith(TENANT_PREFIX) and str(gpu) in indices.split(","):
            return f"{ns}/{p['metadata']['name']}"
    return None


def resolve(incident: Incident, fleet: Fleet) -> Names:
    """``$name`` → a node name, a list of node names, ``namespace/pod``, or a rack's or switch's name.

    Nodes, racks and switches are bound before pods, so a pod binding may name a node bound after it."""
    pools = _pools(fleet)
    names: Names = {}

    def pool(i: int, name: str) -> list[str]:
        if i >= len(pools):
            raise ReplayError(f"world.bind.{name}: the fleet has {len(pools)} pool(s), not pool {i}")
        return pools[i]

    def bind(name: str, b: Binding) -> str | list[str]:
        if b.node is not None:
            nodes = pool(b.node.pool, name)
            what = "nodes"
            if b.node.idle:
                nodes, what = [n for n in nodes if _idle(fleet, n)], "idle nodes (no tenant pod)"
            try:
                return nodes[b.node.index]
            except IndexError:
                raise ReplayError(
                    f"world.bind.{name}: pool {b.node.pool} has {len(nodes)} {what}, no index {b.node.index}"
                ) from None
        if b.nodes is not None:
            nodes = pool(b.nodes.pool, name)
            count = b.nodes.count or max(1, math.ceil((b.nodes.fraction or 0) * len(nodes)))
            chosen = nodes[b.nodes.start :: b.nodes.step][:count]
            if len(chosen) < count:
                raise ReplayError(f"world.bind.{name}: pool {b.nodes.pool} has too few nodes for {count}")
            return chosen
        if b.jobset_node is not None:
            jref = b.jobset_node
            hosts = [
                str(p["spec"]["nodeName"])
                for p in fleet.store.items("pods")
                if (p["metadata"].get("labels") or {}).get(JOBSET_NAME) == jref.jobset
                and (p["metadata"].get("labels") or {}).get(JOB_INDEX) == str(jref.index)
                and p["spec"].get("nodeName")
            ]
            if not hosts:
                raise ReplayError(
                    f"world.bind.{name}: JobSet {jref.jobset!r} has no running pod of job index {jref.index}"
                )
            return hosts[0]
        if b.lws_node is not None:
            lref = b.lws_node
            hosts = [
                str(p["spec"]["nodeName"])
                for p in fleet.store.items("pods")
                if (labels := p["metadata"].get("labels") or {}).get(LWS_NAME) == lref.lws
                and labels.get(GROUP_INDEX) == str(lref.group)
                and labels.get(WORKER_INDEX) == str(lref.worker)
                and p["spec"].get("nodeName")
            ]
            if not hosts:
                raise ReplayError(
                    f"world.bind.{name}: LeaderWorkerSet {lref.lws!r} has no running pod of group "
                    f"{lref.group}, worker {lref.worker}"
                )
            return hosts[0]
        if b.rack is not None or b.switch is not None:
            ref, label, what = (
                (b.rack, RACK_LABEL, "racks") if b.rack else (b.switch, SWITCH_LABEL, "switches")
            )
            assert ref is not None
            found = _component_names(fleet, pool(ref.pool, name), label)
            try:
                return found[ref.index]
            except IndexError:
                raise ReplayError(
                    f"world.bind.{name}: pool {ref.pool} has {len(found)} {what}, no index {ref.index}"
                ) from None
        if b.gpu_pod is not None:
            node = names.get(_bound(b.gpu_pod.on))
            if not isinstance(node, str):
                raise ReplayError(f"world.bind.{name}.gpu_pod.on: {b.gpu_pod.on} is not a bound node")
            if not 0 <= b.gpu_pod.gpu < fleet.spec.gpus_per_node:
                raise ReplayError(
                    f"world.bind.{name}: {node} has GPUs 0..{fleet.spec.gpus_per_node - 1}, not {b.gpu_pod.gpu}"
                )
            found_pod = _pod_on_gpu(fleet, node, b.gpu_pod.gpu)
            if found_pod is None:
                raise ReplayError(
                    f"world.bind.{name}: no tenant pod runs on GPU {b.gpu_pod.gpu} of {node} (the GPU is idle)"
                )
            return found_pod
        if b.daemon_pod is not None:
            dref = b.daemon_pod
            node = names.get(_bound(dref.on))
            if not isinstance(node, str):
                raise ReplayError(f"world.bind.{name}.daemon_pod.on: {dref.on} is not a bound node")
            ns, _, ds = dref.daemonset.partition("/")
            for p in fleet.store.pods_on_node(node):
                owners = p["metadata"].get("ownerReferences") or []
                if p["metadata"]["namespace"] == ns and any(
                    o.get("kind") == "DaemonSet" and o.get("name") == ds for o in owners
                ):
                    return str(p["metadata"]["name"])
            raise ReplayError(
                f"world.bind.{name}: DaemonSet {dref.daemonset} has no pod on {node}"
                " (world.fleet.dcgm_exporter makes gpu-operator/nvidia-dcgm-exporter)"
            )
        assert b.tenant_pod is not None
        ref_pod = b.tenant_pod
        on = names.get(_bound(ref_pod.on)) if ref_pod.on else None
        pods = []
        for p in sorted(fleet.store.items("pods"), key=lambda o: o["metadata"]["name"]):
            ns = p["metadata"]["namespace"]
            node = p["spec"].get("nodeName")
            app = (p["metadata"].get("labels") or {}).get("app", "")
            if not ns.startswith(TENANT_PREFIX) or not node or p["status"].get("phase") != "Running":
                continue
            if on is not None and node != on:
                continue
            if _replicas(fleet, ns, app) < ref_pod.replicas_min:
                continue
            pods.append(f"{ns}/{p['metadata']['name']}")
        if len(pods) <= ref_pod.index:
            raise ReplayError(
                f"world.bind.{name}: {len(pods)} matching tenant pod(s), no index {ref_pod.index}"
            )
        return pods[ref_pod.index]

    binds = incident.world.bind
    for name, b in sorted(
        binds.items(), key=lambda item: item[1].kind in ("pod", "daemon_pod")
    ):  # stable: file order
        names[name] = bind(name, b)
    return {name: names[name] for name in binds}


def _bound(ref: str) -> str:
    """The name in a reference: ``$bad`` and ``${bad}`` are ``bad``."""
    m = REF.fullmatch(ref.strip())
    return m.group(1) if m else ref


def subst(value: str, names: Names) -> str:
    """``$name`` and ``${name}`` replaced by what they are bound to (a list joins with commas)."""

    def one(m: re.Match[str]) -> str:
        v = names.get(m.group(1))
        if v is None:
            return m.group(0)
        return ",".join(v) if isinstance(v, list) else v

    return REF.sub(one, value)


def node_list(value: str, names: Names) -> list[str]:
    """The nodes a reference names: a bound list as it is, anything else one node after ``subst``."""
    bound = names.get(_bound(value))
    if isinstance(bound, list):
        return bound
    return [subst(value, names)]


def bound_pod(value: str, names: Names) -> tuple[str, str]:
    """``(namespace, pod)`` of a reference to a bound tenant pod; a ``ReplayError`` for anything else."""
    ns, _, pod = subst(value, names).partition("/")
    if not pod:
        raise ReplayError(f"{value} is not a bound tenant pod (namespace/pod)")
    return ns, pod


def add_pdbs(incident: Incident, fleet: Fleet, names: Names) -> None:
    """PodDisruptionBudgets that block every eviction of the bound pods' deployments."""
    for i, setup in enumerate(incident.world.pdbs):
        ns, pod = bound_pod(setup.pod, names)
        obj = fleet.store.get("pods", ns, pod)
        if obj is None:
            raise ReplayError(f"world.pdbs[{i}]: no pod {ns}/{pod}")
        app = (obj["metadata"].get("labels") or {}).get("app", "")
        for old in list(fleet.store.items("poddisruptionbudgets")):
            if old["metadata"]["namespace"] == ns and old["spec"].get("selector", {}).get("matchLabels") == {
                "app": app
            }:
                fleet.store.delete("poddisruptionbudgets", ns, old["metadata"]["name"])
        want = _replicas(fleet, ns, app) if setup.min_available == "all" else setup.min_available
        fleet._create_pdb(ns, f"{app}-eval-blocking", {"app": app}, {"minAvailable": want})
        fleet._refresh_pdbs(ns)


def fault_requests(step: FaultStep, names: Names) -> list[dict[str, Any]]:
    """The fleet admin calls (``AdminClient.inject`` keyword arguments) a fault step makes: one per node
    of a node list for a node fault, one for a pod fault, one for a component fault (its nodes named by
    a rack, a switch or the whole node list)."""
    base: dict[str, Any] = {
        "kind": step.kind.value,
        "gpu": step.gpu,
        "code": step.code,
        "detail": subst(step.detail, names) or None,
    }
    if step.kind in COMPONENT_FAULTS:
        target: dict[str, Any]
        if step.rack is not None:
            target = {"rack": subst(step.rack, names)}
        elif step.switch is not None:
            target = {"switch": subst(step.switch, names)}
        else:
            target = {"nodes": node_list(step.nodes or "", names)}
        return [{**base, **target, "driver": step.driver}]
    if step.pod is not None:
        ns, pod = bound_pod(step.pod, names)
        return [{**base, "namespace": ns, "pod": pod}]
    return [{**base, "node": node} for node in node_list(step.node or step.nodes or "", names)]


def clear_requests(value: str, incident: Incident, names: Names) -> list[dict[str, Any]]:
    """The fleet admin calls (``AdminClient.clear`` keyword arguments) a clear step makes: everything,
    each node of a node or node list, or a rack's or a switch's nodes."""
    if value == "all":
        return [{}]
    bound = incident.world.bind.get(_bound(value))
    if bound is not None and bound.kind in ("rack", "switch"):
        return [{bound.kind: subst(value, names)}]
    return [{"node": node} for node in node_list(value, names)]
