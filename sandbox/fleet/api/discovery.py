"""What the fleet's API serves: the resource catalogue and the discovery documents built from it.

`RESOURCES` is the one table of the kinds served (their verbs, short names, field selectors and
subresources); routing, RBAC-visible discovery (``/api``, ``/apis``, ``APIResourceList``) and
kubectl's tables all read it, so a kind is added in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

K8S_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.4-sandbox",
    "gitCommit": "supply-agent-sandbox",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.10",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_COMMON = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True)
class Resource:
    plural: str
    singular: str
    kind: str
    group: str
    version: str
    namespaced: bool
    short: tuple[str, ...]
    verbs: tuple[str, ...]
    fields: frozenset[str] = _COMMON
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


_READ = ("get", "list", "watch")
RESOURCES = [
    Resource(
        "nodes",
        "node",
        "Node",
        "",
        "v1",
        False,
        ("no",),
        (*_READ, "patch", "update"),
        _COMMON | {"spec.unschedulable"},
        ("status", "proxy"),
    ),
    Resource(
        "namespaces",
        "namespace",
        "Namespace",
        "",
        "v1",
        False,
        ("ns",),
        (*_READ, "create"),
        _COMMON | {"status.phase"},
    ),
    Resource(
        "configmaps",
        "configmap",
        "ConfigMap",
        "",
        "v1",
        True,
        ("cm",),
        (*_READ, "create", "patch", "update", "delete"),
    ),
    Resource(
        "pods",
        "pod",
        "Pod",
        "",
        "v1",
        True,
        ("po",),
        (*_READ, "patch", "update", "delete"),
        _COMMON | {"spec.nodeName", "status.phase", "spec.schedulerName", "spec.restartPolicy"},
        ("eviction", "log", "proxy", "status"),
    ),
    Resource(
        "events",
        "event",
        "Event",
        "",
        "v1",
        True,
        ("ev",),
        _READ,
        _COMMON
        | {
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "reason",
            "type",
            "source",
            "reportingComponent",
        },
    ),
    Resource(
        "deployments",
        "deployment",
        "Deployment",
        "apps",
        "v1",
        True,
        ("deploy",),
        (*_READ, "patch", "update"),
        subresources=("scale", "status"),
    ),
    Resource("replicasets", "replicaset", "ReplicaSet", "apps", "v1", True, ("rs",), _READ),
    Resource("daemonsets", "daemonset", "DaemonSet", "apps", "v1", True, ("ds",), _READ),
    Resource(
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        "policy",
        "v1",
        True,
        ("pdb",),
        (*_READ, "create", "patch", "update", "delete"),
    ),
    # Leases: the agent's replicas elect their singletons with them (supply_agent/service/kube_lease.py).
    Resource(
        "leases",
        "lease",
        "Lease",
        "coordination.k8s.io",
        "v1",
        True,
        (),
        (*_READ, "create", "patch", "update", "delete"),
    ),
]
RESOURCES += [
    # Multi-node workloads (sandbox/fleet/world/jobsets.py): JobSets and the Jobs they are made of.
    Resource("jobs", "job", "Job", "batch", "v1", True, (), _READ),
    Resource(
        "jobsets",
        "jobset",
        "JobSet",
        "jobset.x-k8s.io",
        "v1alpha2",
        True,
        (),
        (*_READ, "create", "delete"),
    ),
    # Multi-host inference (sandbox/fleet/world/lws.py): groups of pods, each group one unit.
    Resource(
        "leaderworkersets",
        "leaderworkerset",
        "LeaderWorkerSet",
        "leaderworkerset.x-k8s.io",
        "v1",
        True,
        ("lws",),
        (*_READ, "create", "delete"),
    ),
]
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}


def api_groups() -> dict[str, Any]:
    """The ``APIGroupList`` served at ``/apis``."""
    groups = []
    versions = {r.group: r.version for r in RESOURCES if r.group}
    for g in sorted(versions):
        gv = {"groupVersion": f"{g}/{versions[g]}", "version": versions[g]}
        groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def resource_list(group: str, version: str) -> dict[str, Any]:
    """The ``APIResourceList`` of one group version: each kind, followed by its subresources."""
    items: list[dict[str, Any]] = []
    for r in RESOURCES:
        if r.group != group:
            continue
        items.append(
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": list(r.verbs),
                "shortNames": list(r.short),
            }
        )
        for sub in r.subresources:
            kind = {
                "eviction": "Eviction",
                "scale": "Scale",
                "log": "Pod",
                "proxy": "PodProxyOptions",
            }.get(sub, r.kind)
            grp = {
                "eviction": {"group": "policy", "version": "v1"},
                "scale": {"group": "autoscaling", "version": "v1"},
            }.get(sub, {})
            verbs = {
                "eviction": ["create"],
                "log": ["get"],
                "proxy": ["create", "delete", "get", "patch", "update"],
                "scale": ["get", "patch", "update"],
                "status": ["get", "patch", "update"],
            }[sub]
            items.append(
                {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": kind,
                    "verbs": verbs,
                    **grp,
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": items,
    }
