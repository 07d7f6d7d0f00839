"""The world an incident is replayed in: the fleet its file describes, and its ``$names`` bound to
real objects in that fleet.

It exists apart from the replay because building the world happens once, before the clock starts, and
is a function of the incident file and the fleet alone: ``build_fleet`` makes the fleet (a generated
``FleetSpec`` or a saved snapshot), ``resolve`` binds each ``world.bind`` name to a node, a list of
nodes or a tenant pod, and ``add_pdbs`` adds the disruption budgets the incident asks for. ``subst``
and the reference helpers turn ``$name`` in the rest of the file into what it is bound to; the replay
and scoring use them too.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from evals.schema import REF, Incident
from sandbox.fleet.clock import SimClock
from sandbox.fleet.world import POOL_LABEL, Fleet, FleetSpec

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
    fleet = Fleet(FleetSpec(**w.fleet.model_dump()), SimClock("manual"))
    fleet.generate()
    return fleet


def _pools(fleet: Fleet) -> list[list[str]]:
    pools: dict[str, list[str]] = {}
    for n in fleet.store.items("nodes"):
        pools.setdefault(n["metadata"]["labels"][POOL_LABEL], []).append(n["metadata"]["name"])
    return [sorted(pools[p]) for p in sorted(pools)]


def _replicas(fleet: Fleet, ns: str, deployment: str) -> int:
    dep = fleet.store.get("deployments", ns, deployment)
    return int((dep or {}).get("spec", {}).get("replicas") or 0)


def resolve(incident: Incident, fleet: Fleet) -> Names:
    """``$name`` → a node name, a list of node names, or ``namespace/pod``."""
    pools = _pools(fleet)
    names: Names = {}

    def pool(i: int, name: str) -> list[str]:
        if i >= len(pools):
            raise ReplayError(f"world.bind.{name}: the fleet has {len(pools)} pool(s), not pool {i}")
        return pools[i]

    for name, b in incident.world.bind.items():
        if b.node is not None:
            nodes = pool(b.node.pool, name)
            try:
                names[name] = nodes[b.node.index]
            except IndexError:
                raise ReplayError(
                    f"world.bind.{name}: pool {b.node.pool} has {len(nodes)} nodes, no index {b.node.index}"
                ) from None
        elif b.nodes is not None:
            nodes = pool(b.nodes.pool, name)
            count = b.nodes.count or max(1, math.ceil((b.nodes.fraction or 0) * len(nodes)))
            chosen = nodes[b.nodes.start : b.nodes.start + count]
            if len(chosen) < count:
                raise ReplayError(f"world.bind.{name}: pool {b.nodes.pool} has too few nodes for {count}")
            names[name] = chosen
        else:
            assert b.tenant_pod is not None
            ref = b.tenant_pod
            on = names.get(_bound(ref.on)) if ref.on else None
            pods = []
            for p in sorted(fleet.store.items("pods"), key=lambda o: o["metadata"]["name"]):
                ns = p["metadata"]["namespace"]
                node = p["spec"].get("nodeName")
                app = (p["metadata"].get("labels") or {}).get("app", "")
                if not ns.startswith(TENANT_PREFIX) or not node or p["status"].get("phase") != "Running":
                    continue
                if on is not None and node != on:
                    continue
                if _replicas(fleet, ns, app) < ref.replicas_min:
                    continue
                pods.append(f"{ns}/{p['metadata']['name']}")
            if len(pods) <= ref.index:
                raise ReplayError(
                    f"world.bind.{name}: {len(pods)} matching tenant pod(s), no index {ref.index}"
                )
            names[name] = pods[ref.index]
    return names


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
