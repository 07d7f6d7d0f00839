"""The world cache against the sandbox fleet's real Kubernetes API: one list, then a watch, the same world
as a full read at every point, and a watch that falls behind (410 Gone) or is cut lists again."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest

from supply_agent.hands.world import read_world
from supply_agent.hands.world_cache import WorldCache
from supply_agent.policy.world import WorldView
from tests.support.agent_harness import Harness, harness


def _same(cache: WorldCache, h: Harness) -> bool:
    """Whether the cache's snapshot is the world a full LIST of nodes and pods gives now."""
    clock = h.env.runtime.clock()
    full = read_world(h.env.runtime.kube, clock)
    snap = cache.snapshot(clock)
    return snap.nodes == full.nodes and _indexes(snap) == _indexes(full)


def _indexes(w: WorldView) -> tuple[dict[str, int], set[tuple[str, str]], dict[str, list[str]]]:
    pools = {n.pool: w.pool_size(n.pool) for n in w.nodes.values()}
    pods = set()
    deployments: dict[str, list[str]] = {}
    for node in w.nodes.values():
        for p in node.pods:
            found = w.find_pod(p.namespace, p.name)
            assert found is not None
            pods.add((found[0].name, f"{p.namespace}/{p.name}"))
            if p.deployment:
                deployments[f"{p.namespace}/{p.deployment}"] = sorted(
                    q.name for q in w.deployment_pods(p.namespace, p.deployment)
                )
    return pools, pods, deployments


def _cut_watches(h: Harness) -> None:
    loop = h.server._loop
    assert loop is not None
    loop.call_soon_threadsafe(h.fleet.store.close_watchers)


def test_the_cache_follows_the_cluster_and_lists_only_at_start(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        cache = WorldCache(h.env.runtime.kube).start()
        try:
            assert cache.lists == 2 and _same(cache, h)
            node = h.nodes()[0]
            ns, pod, on = h.tenant_pod(h.nodes()[1])
            writer = h.env.writer
            writer.cordon_node(node)
            h.inject("notready", node=h.nodes()[2])
            writer.delete_pod(ns, pod, grace_period_s=0)
            assert cache.wait_until(
                lambda c: (
                    (v := c._views.get(node)) is not None
                    and v.unschedulable
                    and all(p.name != pod for p in c._views[on].pods)
                )
            ), "the watch did not deliver the cordon and the deletion"
            assert cache.wait_until(lambda c: c._views[h.nodes()[2]].ready != "True")
            assert cache.lists == 2, "a change is a watch event, not a new list"
            assert cache.events > 0
            assert _same(cache, h)
        finally:
            cache.stop()


def test_a_watch_that_fell_behind_lists_again_and_a_cut_stream_resumes(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        cache = WorldCache(h.env.runtime.kube, backoff_s=0.01).start()
        try:
            writer = h.env.writer
            writer.cordon_node(h.nodes()[0])
            assert cache.wait_until(lambda c: c._views[h.nodes()[0]].unschedulable)
            # The server ends every watch stream (an API server restart): the cache watches again from
            # where it was, without listing.
            _cut_watches(h)
            writer.cordon_node(h.nodes()[1])
            assert cache.wait_until(lambda c: c._views[h.nodes()[1]].unschedulable)
            assert cache.lists == 2
            # The cache's resourceVersion is older than the history the server keeps (etcd compacted it
            # during a long partition): the server answers 410 Gone, and the cache lists again.
            store = h.fleet.store
            store._history = deque(list(store._history)[-2:], maxlen=2)
            with cache._lock:
                cache.resource_version["nodes"] = "1"
            _cut_watches(h)
            writer.cordon_node(h.nodes()[2])
            assert cache.wait_until(lambda c: c.lists >= 3 and c._views[h.nodes()[2]].unschedulable, 10.0)
            assert _same(cache, h)
        finally:
            cache.stop()


def test_a_live_refresh_shows_a_write_before_the_watch_does(tmp_path: Path) -> None:
    """Read-your-writes: the runtime refreshes the nodes it wrote and those it targets, live (a GET and a
    field-selected pod LIST each), so a decision never waits on the watch for its own last write."""
    with harness(tmp_path) as h:
        cache = WorldCache(h.env.runtime.kube).start()
        try:
            node = h.nodes()[3]
            cache.stop()  # no more watch events: only a refresh can show the write
            cache.synced.set()
            h.env.writer.cordon_node(node)
            assert not cache.snapshot(h.env.runtime.clock()).nodes[node].unschedulable
            cache.refresh([node])
            snap = cache.snapshot(h.env.runtime.clock())
            assert snap.nodes[node].unschedulable and cache.refreshes == 1
            full = read_world(h.env.runtime.kube, h.env.runtime.clock())
            assert snap.nodes[node] == full.nodes[node]
            cache.refresh(["no-such-node"])
            assert "no-such-node" not in cache.snapshot(h.env.runtime.clock()).nodes
        finally:
            cache.stop()


def test_while_the_api_refuses_the_cache_is_not_used_and_it_lists_again_after(tmp_path: Path) -> None:
    """The API server refuses every request (an outage) when the watch has to reconnect: the cache says
    it is not synced (decisions read the cluster themselves, and fail as it does) until a list works
    again; then it follows the cluster as before."""
    with harness(tmp_path) as h:
        cache = WorldCache(h.env.runtime.kube, backoff_s=0.05).start()
        try:
            h.admin.outage(2.0, "refuse")
            _cut_watches(h)
            assert cache.wait_until(lambda c: not c.synced.is_set(), 5.0), (
                "a broken watch kept the cache in use"
            )
            assert cache.wait_until(lambda c: c.synced.is_set() and c.lists >= 3, 15.0)
            h.env.writer.cordon_node(h.nodes()[5])
            assert cache.wait_until(lambda c: c._views[h.nodes()[5]].unschedulable)
            assert _same(cache, h)
        finally:
            h.admin.outage(0)
            cache.stop()


def test_a_written_node_stays_to_be_read_live_until_a_read_succeeds(tmp_path: Path) -> None:
    """The runtime reads the nodes it wrote live before its next decision; when that read fails (the API
    refusing), they are read at the decision after, not forgotten; and a cache whose watch broke in
    between is not used (the runtime reads the cluster itself)."""
    with harness(tmp_path) as h:
        rt = h.env.runtime
        cache = WorldCache(rt.kube).start()
        rt.cache = cache
        try:
            node = h.nodes()[6]
            cache._stop.set()  # no watch events from now on: only live reads show a change
            cache.synced.set()
            h.env.writer.cordon_node(node)
            rt._dirty.add(node)
            h.admin.outage(30.0, "refuse")
            try:
                with pytest.raises(Exception):  # noqa: B017 - the read's own error, whichever it is
                    rt._read_world(frozenset())
            finally:
                h.admin.outage(0)
            assert node in rt._dirty
            assert rt._read_world(frozenset()).nodes[node].unschedulable
            assert node not in rt._dirty
            # The watch broke (the cache says so): the decision reads the cluster itself.
            cache.synced.clear()
            lists = cache.lists
            assert rt._read_world(frozenset()).nodes[node].unschedulable and cache.lists == lists
        finally:
            rt.cache = None
            cache.stop()
