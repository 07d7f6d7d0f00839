"""What one incident reads costs O(what it is about): the meters of its customer, not the fleet's; and on
a watch cache, no LIST of the whole cluster at all (the API calls counted in the official client)."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from sandbox.fleet.clock import SimClock
from sandbox.fleet.rbac import policy_from_documents, with_builtins
from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import AGENT_NAMESPACE, Fleet, FleetSpec
from supply_agent.hands.world_cache import WorldCache
from supply_agent.service.terminal import TerminalApprover
from tests.support.agent_harness import Harness, harness
from tests.support.api_counter import COUNTER
from tools.kubernetes import KubeTools, ToolError


def test_a_customers_usage_read_takes_in_only_that_customers_meters(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        meters = h.admin.meters()["meters"]
        acme = [m for m in meters if m["customer"] == "acme"]
        assert acme and len(acme) < len(meters)
        h.admin.advance(60)
        res = h.env.runtime.ingest_meters("inc-scope", 1, {"customer": "acme"})
        assert res is not None and res.outcome == "executed", res
        assert res.result is not None and res.result["meters"] == len(acme)
        # A scope the catalogue does not know is refused before it reaches the feed.
        bad = h.env.runtime.ingest_meters("inc-scope", 2, {"tenant": "acme"})
        assert bad is not None and bad.outcome != "executed"


def _counted_xid_incident(h: Harness) -> None:
    """A fatal XID on one node handled to mitigation, with the API calls it makes counted (COUNTER)."""
    h.inject("xid", node=h.nodes()[0], gpu=1, code=79)
    alerts = h.alerts(300)
    approver = TerminalApprover("auto", "oncall-alice", h.env.runtime.clock, Console(file=StringIO()))
    COUNTER.calls.clear()
    COUNTER.on = True
    try:
        [result] = h.agent.handle(alerts, approver)
    finally:
        COUNTER.on = False
    assert result.state.outcome == "mitigated", result.state.escalation_reason


def test_on_a_watch_cache_an_incident_lists_nothing_cluster_wide(tmp_path: Path) -> None:
    COUNTER.install()
    with harness(tmp_path) as h:
        cache = WorldCache(h.env.runtime.kube).start()
        h.env.runtime.cache = cache
        try:
            _counted_xid_incident(h)
            assert COUNTER.calls.get("LIST all", 0) == 0, dict(COUNTER.calls)
            assert COUNTER.calls["write"] >= 2 and cache.refreshes >= 1
        finally:
            h.env.runtime.cache = None
            cache.stop()


def test_one_shot_lists_the_nodes_once_and_no_pods_cluster_wide(tmp_path: Path) -> None:
    """Without a cache set (``handle``, ``eval``), the first decision starts a cache of nodes only: one
    LIST of the nodes for the process, then each decision reads the pods of its targets by field
    selector; no LIST of every pod, however many decisions the incident makes."""
    COUNTER.install()
    with harness(tmp_path) as h:
        assert h.env.runtime.cache is None
        _counted_xid_incident(h)
        cache = h.env.runtime.cache
        assert cache is not None and not cache.watches_pods and cache.lists == 1
        # The one cluster-wide LIST is the cache's list of nodes; decisions read their targets live.
        assert COUNTER.calls.get("LIST all", 0) == 1, dict(COUNTER.calls)
        assert COUNTER.calls["WATCH"] >= 1 and cache.refreshes >= 3, dict(COUNTER.calls)
        assert cache.size()[1] == 0  # it holds no pods


def test_a_scoped_decision_sees_what_a_full_read_sees_for_its_targets(tmp_path: Path) -> None:
    """The gate's answer on a cache of nodes (the targets' pods read live) equals its answer on a full
    read of the cluster, for a drain (the node's tenants), a pod's deletion and a deployment's restart."""
    from supply_agent.hands.world import read_world
    from supply_agent.models import Action
    from supply_agent.policy.gate import decide

    with harness(tmp_path) as h:
        rt = h.env.runtime
        cache = WorldCache(rt.kube, pods=False).start()
        try:
            ns, pod, node = h.tenant_pod()
            full = read_world(rt.kube, rt.clock())
            found = full.find_pod(ns, pod)
            assert found is not None
            dep = found[1].deployment
            actions = [
                Action(tool="k8s.drain_node", params={"node": node}, incident_id="i", step=1),
                Action(tool="k8s.delete_pod", params={"namespace": ns, "pod": pod}, incident_id="i", step=2),
            ]
            if dep:
                actions.append(
                    Action(
                        tool="k8s.rollout_restart",
                        params={"namespace": ns, "deployment": dep},
                        incident_id="i",
                        step=3,
                    )
                )
            history = rt.history(full)
            for action in actions:
                scoped = cache.scoped(
                    rt.clock(),
                    nodes={node} if "node" in action.params else set(),
                    pods={f"{ns}/{pod}"} if "pod" in action.params else set(),
                    deployments={f"{ns}/{dep}"} if "deployment" in action.params else set(),
                )
                want, got = (
                    decide(action, full, history, rt.playbooks),
                    decide(action, scoped, history, rt.playbooks),
                )
                assert got.targets == want.targets and got.targets.pods, action.tool
                assert (got.verdict, got.reasons) == (want.verdict, want.reasons), action.tool
            scoped = cache.scoped(rt.clock(), nodes={node})
            assert len(scoped.nodes) == len(full.nodes) and scoped.nodes[node] == full.nodes[node]
            assert scoped.pool_size(full.nodes[node].pool) == full.pool_size(full.nodes[node].pool)
            assert scoped.nodes[node].agent_ready == full.nodes[node].agent_ready
        finally:
            cache.stop()


def test_a_scoped_read_the_cluster_refuses_is_a_tool_error_with_the_servers_message(tmp_path: Path) -> None:
    """A live read refused for good (here RBAC: the identity may read nodes, not pods) fails as every
    other read does: a ToolError with the API server's status and message, not the client's raw
    exception (which the runtime would not know from a transient one)."""
    nodes_only = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "nodes-only"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "nodes-only"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "nodes-only"},
            "subjects": [
                {"kind": "ServiceAccount", "name": "supply-agent-reader", "namespace": AGENT_NAMESPACE}
            ],
        },
    ]
    fleet = Fleet(FleetSpec(nodes=4, pools=1, seed=3), SimClock("manual"))
    fleet.generate()
    with FleetServer(fleet, policy=with_builtins(policy_from_documents(nodes_only))) as server:
        server.write_kubeconfig(tmp_path / "kubeconfig")
        kube = KubeTools.from_kubeconfig(tmp_path / "kubeconfig", "sandbox-reader")
        cache = WorldCache(kube, pods=False).start()
        try:
            node = min(n["metadata"]["name"] for n in fleet.store.items("nodes"))
            for read in (
                lambda: cache.scoped(fleet.clock.now(), frozenset(), nodes={node}),
                lambda: cache.scoped(fleet.clock.now(), frozenset(), pods={"tenant-a/p"}),
                lambda: cache.refresh([node]),
            ):
                with pytest.raises(ToolError) as exc:
                    read()
                assert exc.value.status == 403
                assert 'cannot list resource "pods"' in str(exc.value) or 'cannot get resource "pods"' in str(
                    exc.value
                ), str(exc.value)
            assert cache.synced.is_set()  # a refused read breaks no watch
        finally:
            cache.stop()
            kube.close()
