"""A property of the world cache: after any sequence of watch events (and relists), its snapshot is the
world a full list of the same objects gives, and a snapshot taken earlier never changes afterwards (the
copy-on-write sharing). The events are fed to the cache's own event path, as the watch thread does, and a
relist runs the cache's own paged list against an API that serves the same objects two per page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from supply_agent.hands import world_cache
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


class _Pages:
    """The list calls the cache makes, answered from ``objects(kind)`` a page at a time (``limit`` and
    ``continue``, as the API server pages)."""

    def __init__(self, objects: Callable[[str], list[dict[str, Any]]]) -> None:
        self.objects = objects

    def _page(self, kind: str, limit: int, _continue: str | None = None, **_: Any) -> Any:
        items = sorted(
            self.objects(kind), key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )
        start = int(_continue or 0)
        meta: dict[str, Any] = {"resourceVersion": "1"}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        return SimpleNamespace(data=orjson.dumps({"metadata": meta, "items": items[start : start + limit]}))

    def list_node(self, **kw: Any) -> Any:
        return self._page("nodes", **kw)

    def list_pod_for_all_namespaces(self, **kw: Any) -> Any:
        return self._page("pods", **kw)


@settings(max_examples=300, deadline=None)
@given(ops)
# Found by this test: two node-agent pods on a node, one ready, then a relist that applies them in page
# order. Readiness taken from "the last one listed" then depended on that order.
@example(
    [
        ("node", "n3", False, 0, False, False),
        ("pod", ("supply-agent-system", "p1"), False, "n3", True, False),
        ("pod", ("supply-agent-system", "p0"), False, "n3", False, False),
        ("relist", "pods"),
    ]
)
def test_the_cache_is_a_full_list_after_any_events(steps: list[tuple[Any, ...]]) -> None:
    nodes: dict[str, dict[str, Any]] = {}
    pods: dict[tuple[str, str], dict[str, Any]] = {}
    api = _Pages(lambda kind: list(nodes.values()) if kind == "nodes" else list(pods.values()))
    cache = WorldCache(cast(Any, SimpleNamespace(core=api, timeout=(1.0, 1.0))))
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
            page, world_cache.PAGE = world_cache.PAGE, 2
            try:
                cache._relist(step[1])
            finally:
                world_cache.PAGE = page
        else:
            cache.synced.set()
            snap = cache.view(NOW)
            kept.append((snap, _key(snap)))
        want = world_from_raw(list(nodes.values()), list(pods.values()), NOW)
        assert _key(cache.view(NOW)) == _key(want)
    # Every snapshot handed out earlier still shows the world as it was then.
    for snap, then in kept:
        assert _key(snap) == then
