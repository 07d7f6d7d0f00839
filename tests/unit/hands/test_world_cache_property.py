"""A property of the world cache: after any sequence of watch events (and relists), its snapshot is the
world a full list of the same objects gives, and a snapshot taken earlier never changes afterwards (the
copy-on-write sharing). The events are fed to the cache's own event path, as the watch thread does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from supply_agent.hands.world import world_from_raw
from supply_agent.hands.world_cache import WorldCache
from supply_agent.policy.world import WorldView
from tools.kubernetes import CUSTOMER_LABEL, POOL_LABEL
from tools.latches import CONTROL_NAMESPACE

NOW = datetime(2026, 12, 3, tzinfo=UTC)
NODES = [f"n{i}" for i in range(4)]
PODS = [(ns, f"p{i}") for ns in ("tenant-acme", CONTROL_NAMESPACE) for i in range(3)]


def _node(name: str, rv: int, pool: int, ready: bool, cordoned: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": str(rv), "labels": {POOL_LABEL: f"pool-{pool}"}},
        "spec": {"unschedulable": cordoned},
        "status": {
            "capacity": {"nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def _pod(ns: str, name: str, rv: int, node: str | None, ready: bool, deployment: bool) -> dict[str, Any]:
    owner = [{"kind": "ReplicaSet", "name": "train-abc", "controller": True}] if deployment else []
    return {
        "metadata": {
            "namespace": ns,
            "name": name,
            "resourceVersion": str(rv),
            "labels": {CUSTOMER_LABEL: "acme"},
            "ownerReferences": owner,
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "2"}}}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("node"),
            st.sampled_from(NODES),
            st.booleans(),  # deleted
            st.integers(0, 1),
            st.booleans(),
            st.booleans(),
        ),
        st.tuples(
            st.just("pod"),
            st.sampled_from(PODS),
            st.booleans(),
            st.sampled_from([*NODES, None]),
            st.booleans(),
            st.booleans(),
        ),
        st.tuples(st.just("relist"), st.sampled_from(["nodes", "pods"])),
        st.tuples(st.just("snapshot")),
    ),
    max_size=40,
)


def _key(w: WorldView) -> Any:
    pools = {n.pool: w.pool_size(n.pool) for n in w.nodes.values()}
    pods = {f"{p.namespace}/{p.name}": (n.name, p) for n in w.nodes.values() for p in n.pods}
    found = {k: w.find_pod(*k.split("/", 1)) for k in pods}
    deps = {
        k: sorted(q.name for q in w.deployment_pods(p.namespace, p.deployment))
        for k, (_, p) in pods.items()
        if p.deployment
    }
    return w.nodes, pools, {k: (v[0].name, v[1]) if v else None for k, v in found.items()}, deps


@settings(max_examples=300, deadline=None)
@given(ops)
def test_the_cache_is_a_full_list_after_any_events(steps: list[tuple[Any, ...]]) -> None:
    cache = WorldCache(cast(Any, None))
    nodes: dict[str, dict[str, Any]] = {}
    pods: dict[tuple[str, str], dict[str, Any]] = {}
    kept: list[tuple[WorldView, Any]] = []
    for rv, step in enumerate(steps, start=1):
        if step[0] == "node":
            _, name, deleted, pool, ready, cordoned = step
            if deleted:
                if name in nodes:
                    cache._event("nodes", {"type": "DELETED", "object": nodes.pop(name)})
            else:
                etype = "MODIFIED" if name in nodes else "ADDED"
                nodes[name] = _node(name, rv, pool, ready, cordoned)
                cache._event("nodes", {"type": etype, "object": nodes[name]})
        elif step[0] == "pod":
            _, (ns, name), deleted, node, ready, deployment = step
            if deleted:
                if (ns, name) in pods:
                    cache._event("pods", {"type": "DELETED", "object": pods.pop((ns, name))})
            else:
                etype = "MODIFIED" if (ns, name) in pods else "ADDED"
                pods[(ns, name)] = _pod(ns, name, rv, node, ready, deployment)
                cache._event("pods", {"type": etype, "object": pods[(ns, name)]})
        elif step[0] == "relist":
            with cache._lock:
                cache._own()
                if step[1] == "nodes":
                    cache._replace_nodes(list(nodes.values()))
                else:
                    cache._replace_pods(list(pods.values()))
        else:
            cache.synced.set()
            snap = cache.view(NOW)
            kept.append((snap, _key(snap)))
        want = world_from_raw(list(nodes.values()), list(pods.values()), NOW)
        assert _key(cache.view(NOW)) == _key(want)
    # Every snapshot handed out earlier still shows the world as it was then.
    for snap, then in kept:
        assert _key(snap) == then
