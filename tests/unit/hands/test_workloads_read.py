"""The gang workloads a decision reads, from the sandbox fleet through the official client as the
read-only identity (deploy/base/rbac.yaml): a JobSet's pods by its labels, its nodes and GPUs, the
checkpoint it would restart from; and where a drain's evicted pods could go, read node by node until they
fit (the whole pool only when they do not)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import FleetSpec
from sandbox.fleet.world.spec import JobSetSpec
from supply_agent.hands.workloads import live_pods, read_workload, with_workloads
from supply_agent.hands.world import read_world
from tools.kubernetes import KubeTools


@pytest.fixture
def fleet_spec() -> FleetSpec:
    return FleetSpec(
        nodes=24,
        pools=2,
        seed=11,
        fill=0.0,
        workloads=[JobSetSpec(name="llm", nodes=6, checkpoint_every_s=3600, since_checkpoint_s=1500)],
    )


@pytest.fixture
def reader(fleet_server: FleetServer, kubeconfig: Path) -> Iterator[KubeTools]:
    kube = KubeTools.from_kubeconfig(kubeconfig, context="sandbox-reader")
    yield kube
    kube.close()


def test_a_jobset_is_read_whole_with_its_checkpoint(fleet_server: FleetServer, reader: KubeTools) -> None:
    fleet = fleet_server.fleet
    [js] = fleet.store.items("jobsets")
    ns = js["metadata"]["namespace"]
    w = read_workload(reader, f"JobSet/{ns}/llm")
    assert w is not None
    pods = fleet.jobset_pods(ns, "llm")
    assert w.nodes == tuple(sorted(p["spec"]["nodeName"] for p in pods))
    assert (w.gpus, w.pods, w.checkpoint_every_s) == (48, 6, 3600)
    assert w.since_checkpoint_s(fleet.now()) == 1500  # 25 minutes of work a restart would lose
    assert read_workload(reader, f"JobSet/{ns}/nope") is not None  # no pods, no object: an empty job
    assert read_workload(reader, "Deployment/x/y") is None


def test_a_drains_world_names_the_job_and_reads_room_only_until_the_pods_fit(
    fleet_server: FleetServer, reader: KubeTools
) -> None:
    fleet = fleet_server.fleet
    world = read_world(reader, fleet.now())
    [node] = [n for n, v in world.nodes.items() if any(p.workload for p in v.pods)][:1]
    reads: list[str] = []
    live = live_pods(reader)

    def counted(name: str) -> tuple:  # type: ignore[type-arg]
        reads.append(name)
        return live(name)

    out = with_workloads(world, reader, (node,), (), drain=True, pods_of=counted)
    [key] = out.workloads
    assert key.startswith("JobSet/") and out.workloads[key].gpus == 48
    room = out.room[world.nodes[node].pool]
    assert room.needs == (8,) and not room.unplaced() and not room.complete
    # Read in name order up to the first node with 8 GPUs free (the job's own nodes are full): no more.
    pool_nodes = sorted(n for n, v in world.nodes.items() if v.pool == world.nodes[node].pool and n != node)
    first_free = next(
        i
        for i, n in enumerate(pool_nodes)
        if not fleet.store.pods_on_node(n)
        or all(p["metadata"]["namespace"] == "supply-agent-system" for p in fleet.store.pods_on_node(n))
    )
    assert reads == pool_nodes[: first_free + 1] and len(reads) < len(pool_nodes)
    # Every other node of the pool cordoned: the pool is read to its end, and has no room.
    pool = world.nodes[node].pool
    for name, v in world.nodes.items():
        if v.pool == pool and name != node:
            fleet_server.fleet.store.put(
                "nodes", {**fleet.node(name), "spec": {**fleet.node(name)["spec"], "unschedulable": True}}
            )
    world = read_world(reader, fleet.now() + timedelta(seconds=1))
    reads.clear()
    out = with_workloads(world, reader, (node,), (), drain=True, pods_of=counted)
    room = out.room[pool]
    assert room.unplaced() == (8,) and room.complete and reads == []  # no candidate: nothing to read
