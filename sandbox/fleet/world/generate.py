"""Building the initial fleet from a `FleetSpec`: namespaces, nodes in pools, the node-agent DaemonSet's
pods, and the tenants' deployments and disruption budgets. Every name and value is drawn from the
fleet's seeded random stream in a fixed order, so the same spec always builds the same fleet.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import timedelta
from typing import Any

from sandbox.fleet.clock import ts
from sandbox.fleet.store import Obj
from sandbox.fleet.world.jobsets import LAST_CHECKPOINT, RESTARTED_AT, gpu_pod_template, jobset_object
from sandbox.fleet.world.lws import lws_object
from sandbox.fleet.world.spec import (
    AGENT_NAMESPACE,
    CUSTOMER_LABEL,
    DEFAULT_DRIVER_VERSION,
    DRIVER_LABEL,
    EXPORTER_NAMESPACE,
    GPU,
    POOL_LABEL,
    PRODUCT_LABEL,
    RACK_LABEL,
    REGION_LABEL,
    SWITCH_LABEL,
    TIER_LABEL,
    ZONE_LABEL,
    FleetSpec,
    rack_name,
    switch_name,
)
from sandbox.fleet.world.state import FleetState

_POOL_SHAPES = [
    ("east-h100", "us-east-1", "NVIDIA-H100-80GB-HBM3", "p5.48xlarge"),
    ("west-a100", "us-west-2", "NVIDIA-A100-SXM4-80GB", "p4de.24xlarge"),
    ("east-h200", "us-east-1", "NVIDIA-H200", "p5e.48xlarge"),
    ("eu-l40s", "eu-central-1", "NVIDIA-L40S", "g6e.48xlarge"),
]
_CUSTOMER_WORDS = [
    "acme",
    "borealis",
    "cobalt",
    "dynamo",
    "ember",
    "fathom",
    "granite",
    "helix",
    "ion",
    "juniper",
    "kestrel",
    "lumen",
    "meridian",
    "nimbus",
    "onyx",
    "prism",
    "quasar",
    "relay",
    "summit",
    "tundra",
]
_GPU_SIZES = [(1, 60), (2, 25), (4, 10), (8, 5)]


def _customer_names(spec: FleetSpec) -> list[str]:
    n = spec.customers or max(3, spec.nodes // 10)
    words = _CUSTOMER_WORDS
    return [f"{words[i % len(words)]}{'' if i < len(words) else i // len(words)}" for i in range(n)]


def _pool_shape(i: int) -> tuple[str, str, str, str]:
    name, region, product, itype = _POOL_SHAPES[i % len(_POOL_SHAPES)]
    return (name if i < len(_POOL_SHAPES) else f"{name}-{i // len(_POOL_SHAPES)}"), region, product, itype


class GenerateMixin(FleetState):
    """Creates the fleet's objects once, before the API serves it."""

    def generate(self) -> None:
        spec, at = self.spec, self.stamp()
        pools = [_pool_shape(i) for i in range(spec.pools)]
        for ns in ["default", "kube-system", AGENT_NAMESPACE] + (
            [EXPORTER_NAMESPACE] if spec.dcgm_exporter else []
        ):
            self._create_namespace(ns, {})
        node_names: dict[str, list[str]] = {p[0]: [] for p in pools}
        for i in range(spec.nodes):
            pool, region, product, itype = pools[i % spec.pools]
            idx = len(node_names[pool])
            name = f"{pool}-{idx:05d}"
            node_names[pool].append(name)
            self.store.put("nodes", self._node_object(name, pool, region, product, itype, idx, at))
            self._gpu_owner[name] = [None] * spec.gpus_per_node
            self._rebucket(name)
        self._create_daemonset()
        for name in self._gpu_owner:
            self._ensure_daemon_pods(name, refresh=False)
        for namespace, ds in self._daemonsets():
            self._refresh_daemonset_status(namespace, ds)
        taken = self._generate_jobsets(pools, node_names)
        self._generate_lws(pools, node_names, taken)
        self._generate_tenants(pools, node_names, taken)

    def _generate_jobsets(
        self, pools: list[tuple[str, str, str, str]], node_names: dict[str, list[str]]
    ) -> dict[str, int]:
        """``spec.jobsets`` training JobSets, round-robin over the pools, each on ``spec.jobset_nodes``
        whole nodes (a random of its own: a fleet without them is the fleet it always was). The GPUs
        each pool gave them."""
        spec = self.spec
        taken = {p[0]: 0 for p in pools}
        customers = _customer_names(spec)
        for w in spec.workloads:
            pool = _whole_nodes(
                "workloads", w.name, w.pool, w.nodes, pools, node_names, taken, spec.gpus_per_node
            )
            customer = customers[w.customer % len(customers)]
            self._jobset_namespace(customer)
            began = self.now() - timedelta(seconds=w.since_checkpoint_s)
            obj = jobset_object(
                f"tenant-{customer}",
                w.name,
                customer,
                pool,
                w.nodes,
                spec.gpus_per_node,
                w.checkpoint_every_s,
                w.max_restarts,
            )
            if w.tier is not None:  # admitted under a flavor of that tier: Kueue's nodeLabels in its pods
                template = obj["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
                template["spec"]["nodeSelector"][TIER_LABEL] = w.tier
            obj["metadata"]["annotations"][RESTARTED_AT] = ts(began)
            if w.since_checkpoint_s:
                obj["metadata"]["annotations"][LAST_CHECKPOINT] = ts(began)
            self.create_jobset(obj)
            taken[pool] += w.nodes * spec.gpus_per_node
        if not spec.jobsets:
            return taken
        rng = random.Random(f"jobsets-{spec.seed}")
        for i in range(spec.jobsets):
            pool = pools[i % len(pools)][0]
            nodes = min(spec.jobset_nodes, max(2, len(node_names[pool]) // 4))
            customer = customers[i % len(customers)]
            self._jobset_namespace(customer)
            name = f"{rng.choice(['pretrain', 'llm', 'moe'])}-{''.join(rng.choices('abcdefghjkmnpqrstvwxyz', k=4))}"
            every = rng.choice([600, 1800, 3600])
            self.create_jobset(
                jobset_object(f"tenant-{customer}", name, customer, pool, nodes, spec.gpus_per_node, every)
            )
            taken[pool] += nodes * spec.gpus_per_node
        return taken

    def _generate_lws(
        self, pools: list[tuple[str, str, str, str]], node_names: dict[str, list[str]], taken: dict[str, int]
    ) -> None:
        """``spec.leaderworkersets``, each group's pods on whole nodes of its pool (``taken``: the GPUs
        each pool has given, added to)."""
        spec = self.spec
        customers = _customer_names(spec)
        for w in spec.leaderworkersets:
            pool = _whole_nodes(
                "leaderworkersets",
                w.name,
                w.pool,
                w.groups * w.size,
                pools,
                node_names,
                taken,
                spec.gpus_per_node,
            )
            customer = customers[w.customer % len(customers)]
            self._jobset_namespace(customer)
            self.create_lws(
                lws_object(f"tenant-{customer}", w.name, customer, pool, w.groups, w.size, spec.gpus_per_node)
            )
            taken[pool] += w.groups * w.size * spec.gpus_per_node

    def _jobset_namespace(self, customer: str) -> None:
        if self.store.get("namespaces", "", f"tenant-{customer}") is None:
            self._create_namespace(f"tenant-{customer}", {CUSTOMER_LABEL: customer})

    def _node_object(
        self, name: str, pool: str, region: str, product: str, itype: str, idx: int, at: str
    ) -> Obj:
        g = str(self.spec.gpus_per_node)
        zone = f"{region}{'abc'[idx % 3]}"
        pool_index = [p[0] for p in (_pool_shape(i) for i in range(self.spec.pools))].index(pool)
        ip = f"10.{pool_index % 250}.{idx // 250 % 250}.{idx % 250 + 1}"
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": self._uid(),
                "creationTimestamp": at,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": itype,
                    REGION_LABEL: region,
                    ZONE_LABEL: zone,
                    POOL_LABEL: pool,
                    RACK_LABEL: rack_name(pool, idx),
                    SWITCH_LABEL: switch_name(pool, idx),
                    PRODUCT_LABEL: product,
                    TIER_LABEL: _tier(self.spec.reserved_nodes, pool_index, idx),
                    "nvidia.com/gpu.count": g,
                    DRIVER_LABEL: DEFAULT_DRIVER_VERSION,
                },
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"providerID": f"sandbox://{region}/{name}"},
            "status": {
                "capacity": {
                    "cpu": "192",
                    "memory": "2063425Mi",
                    "pods": "110",
                    GPU: g,
                    "ephemeral-storage": "7325904Mi",
                },
                "allocatable": {
                    "cpu": "190",
                    "memory": "2000000Mi",
                    "pods": "110",
                    GPU: g,
                    "ephemeral-storage": "7000000Mi",
                },
                "conditions": self._healthy_conditions(at),
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "kubeletVersion": "v1.31.4",
                    "containerRuntimeVersion": "containerd://1.7.24",
                    "kernelVersion": "6.8.0-1021-nvidia",
                    "osImage": "Ubuntu 24.04.1 LTS",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "machineID": hashlib.md5(name.encode()).hexdigest(),
                    "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                    "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                    "kubeProxyVersion": "",
                },
            },
        }

    def _create_namespace(self, name: str, labels: dict[str, str]) -> None:
        self.store.put(
            "namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "uid": self._uid(),
                    "creationTimestamp": self.stamp(),
                    "labels": {"kubernetes.io/metadata.name": name, **labels},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )

    def _generate_tenants(
        self,
        pools: list[tuple[str, str, str, str]],
        node_names: dict[str, list[str]],
        taken: dict[str, int] | None = None,
    ) -> None:
        spec = self.spec
        customers = _customer_names(spec)
        for c in customers:
            if self.store.get("namespaces", "", f"tenant-{c}") is None:
                self._create_namespace(f"tenant-{c}", {CUSTOMER_LABEL: c})
        sizes, weights = zip(*[(s, w) for s, w in _GPU_SIZES if s <= spec.gpus_per_node], strict=True)
        budget = {
            p[0]: int(len(node_names[p[0]]) * spec.gpus_per_node * spec.fill) - (taken or {}).get(p[0], 0)
            for p in pools
        }
        deployments: list[tuple[str, str, str, int, int]] = []
        ci = 0
        for pool, *_ in pools:
            while budget[pool] > 0:
                gpus = self.rng.choices(sizes, weights)[0]
                replicas = min(self.rng.randint(1, 12), max(1, budget[pool] // gpus))
                if gpus > budget[pool]:
                    break
                customer = customers[ci % len(customers)]
                ci += 1
                name = f"{self.rng.choice(['train', 'infer', 'finetune', 'eval'])}-{self._suffix(4)}"
                deployments.append((customer, name, pool, gpus, replicas))
                budget[pool] -= gpus * replicas
        for customer, name, pool, gpus, replicas in deployments:
            ns = f"tenant-{customer}"
            self._create_deployment(ns, name, customer, pool, gpus, replicas)
            if replicas > 1 and self.rng.random() < spec.pdb_fraction:
                budget_field = (
                    {"maxUnavailable": 1}
                    if self.rng.random() < 0.7
                    else {"minAvailable": max(1, replicas - 1)}
                )
                self._create_pdb(ns, name, {"app": name}, budget_field)
        for ns_obj in list(self.store.items("namespaces")):
            self._refresh_pdbs(ns_obj["metadata"]["name"])

    def _create_deployment(
        self, ns: str, name: str, customer: str, pool: str, gpus: int, replicas: int
    ) -> Obj:
        labels = {"app": name, CUSTOMER_LABEL: customer}
        dep = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": self._uid(),
                "creationTimestamp": self.stamp(),
                "generation": 1,
                "labels": labels,
                "annotations": {"deployment.kubernetes.io/revision": "1"},
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                },
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
                "template": gpu_pod_template(
                    labels,
                    "main",
                    f"registry.{customer}.example/{name.split('-')[0]}:v{self.rng.randint(1, 9)}",
                    pool,
                    gpus,
                    "Always",
                ),
            },
            "status": {},
        }
        self.store.put("deployments", dep)
        self.reconcile_deployment(ns, name)
        return dep

    def _create_pdb(self, ns: str, name: str, match_labels: dict[str, str], budget: dict[str, Any]) -> Obj:
        return self.store.put(
            "poddisruptionbudgets",
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": self._uid(),
                    "creationTimestamp": self.stamp(),
                    "generation": 1,
                },
                "spec": {"selector": {"matchLabels": match_labels}, **budget},
                "status": {},
            },
        )


def _whole_nodes(
    what: str,
    name: str,
    pool_index: int,
    nodes: int,
    pools: list[tuple[str, str, str, str]],
    node_names: dict[str, list[str]],
    taken: dict[str, int],
    gpus_per_node: int,
) -> str:
    """The pool a named workload of ``nodes`` whole nodes goes to; an error naming it when the fleet has
    no such pool or the pool too few free nodes."""
    if pool_index >= len(pools):
        raise ValueError(f"{what}: {name}: the fleet has {len(pools)} pool(s), not pool {pool_index}")
    pool = pools[pool_index][0]
    free = len(node_names[pool]) - taken[pool] // gpus_per_node
    if nodes > free:
        raise ValueError(f"{what}: {name}: pool {pool} has {free} free node(s), not {nodes}")
    return pool


def _tier(reserved_nodes: int | None, pool_index: int, idx: int) -> str:
    """A node's tenant tier: the first pool is reserved capacity (its first ``reserved_nodes`` nodes
    alone, when given), the others on demand."""
    if pool_index != 0:
        return "on-demand"
    return "reserved" if reserved_nodes is None or idx < reserved_nodes else "on-demand"
