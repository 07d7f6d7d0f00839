"""A node a drain cannot finish on the sandbox fleet, and the fleet's count of real evictions: what the
deadline tests of the drain and of the executor stand on."""

from __future__ import annotations

from kubernetes import client

from sandbox.fleet.server import FleetServer
from tools.kubernetes import KubeTools


def pdb_held_node(kube: KubeTools, policy: client.PolicyV1Api) -> str:
    """A node whose tenant pods a PodDisruptionBudget will not let go: a drain of it polls forever."""
    for n in kube.list_nodes():
        tenants = [p for p in kube.list_pods_on_node(n.name) if not p.daemonset]
        if tenants:
            break
    else:
        raise AssertionError("no node with tenant pods")
    ns, app = tenants[0].namespace, (tenants[0].owner_name or "").rsplit("-", 1)[0]
    for existing in policy.list_namespaced_pod_disruption_budget(ns).items:
        assert existing.metadata is not None and existing.metadata.name is not None
        policy.delete_namespaced_pod_disruption_budget(existing.metadata.name, ns)
    policy.create_namespaced_pod_disruption_budget(
        ns,
        client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name="hold"),
            spec=client.V1PodDisruptionBudgetSpec(
                max_unavailable=0, selector=client.V1LabelSelector(match_labels={"app": app})
            ),
        ),
    )
    return n.name


def evictions(server: FleetServer) -> int:
    """How many real (not dry-run) eviction requests the fleet has answered, refused ones included."""
    return sum(1 for w in server.fleet.writes if w["subresource"] == "eviction" and not w["dry_run"])
