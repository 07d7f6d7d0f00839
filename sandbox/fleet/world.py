"""The simulated GPU fleet: nodes in pools, tenant workloads, controllers, faults, meters and truth.

Everything here runs on the server's event loop, one change at a time, so the controllers reconcile
synchronously after each write, as a real control plane would eventually. The agent never imports
this module: it reaches the fleet over the Kubernetes API only.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, Field

from sandbox.fleet.clock import SimClock, ts
from sandbox.fleet.faults import GPU_FAULTS, NODE_FAULTS, POD_FAULTS, Fault, FaultKind
from sandbox.fleet.nvml_sim import SimNvml
from sandbox.fleet.selectors import labels_match, selector_from_match_labels
from sandbox.fleet.store import Obj, Store, thaw
from tools.nvml import NvmlCollector

POOL_LABEL = "supply-agent.io/pool"
RACK_LABEL = "supply-agent.io/rack"
CUSTOMER_LABEL = "supply-agent.io/customer"
GPU_INDICES_ANNOTATION = "supply-agent.io/gpu-indices"
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU = "nvidia.com/gpu"
AGENT_NAMESPACE = "supply-agent-system"
AGENT_NAME = "node-agent"
AGENT_PORT = 9400
TOLERATION_SECONDS = 300  # the default not-ready/unreachable NoExecute toleration of a pod

# NVIDIA's device plugin treats these XIDs as the application's fault and keeps the GPU healthy.
XID_APPLICATION = frozenset({13, 31, 43, 45, 68})
# Informational: the GPU keeps serving (63: a row remap was recorded; 92: high single-bit ECC rate).
XID_INFORMATIONAL = frozenset({63, 92})

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
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_GPU_SIZES = [(1, 60), (2, 25), (4, 10), (8, 5)]


class FleetError(Exception):
    """An API-level failure: rendered as a Kubernetes ``Status`` with this code and reason."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def not_found(kind: str, name: str, group: str = "") -> FleetError:
    resource = f"{kind}.{group}" if group else kind
    return FleetError(404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": kind})


class FleetSpec(BaseModel):
    nodes: int = Field(12, ge=1, le=50_000)
    gpus_per_node: int = Field(8, ge=1, le=16)
    pools: int = Field(2, ge=1, le=64)
    seed: int = 0
    fill: float = Field(0.7, ge=0.0, le=1.0, description="Fraction of GPUs the tenant workloads request.")
    customers: int | None = Field(None, ge=1, description="Default: one per ten nodes, at least three.")
    pdb_fraction: float = Field(0.5, ge=0.0, le=1.0, description="Fraction of deployments with a PDB.")


@dataclass(slots=True)
class Meter:
    """A GPU-seconds meter for one pod, as a billing pipeline's exporter would keep it."""

    id: str
    namespace: str
    pod: str
    pod_uid: str
    customer: str
    node: str
    gpus: int
    rate: int  # 1 while the pod runs and is metered, 0 when stopped
    since: str
    accumulated: float = 0.0

    def reading(self, now: datetime) -> float:
        running = (now - datetime.fromisoformat(self.since)).total_seconds() if self.rate else 0.0
        return self.accumulated + self.gpus * max(running, 0.0)

    def set_rate(self, rate: int, now: datetime) -> None:
        self.accumulated = self.reading(now)
        self.since, self.rate = now.isoformat(), rate


def _pool_shape(i: int) -> tuple[str, str, str, str]:
    name, region, product, itype = _POOL_SHAPES[i % len(_POOL_SHAPES)]
    return (name if i < len(_POOL_SHAPES) else f"{name}-{i // len(_POOL_SHAPES)}"), region, product, itype


def _template_hash(template: Any) -> str:
    digest = hashlib.sha256(orjson.dumps(template, option=orjson.OPT_SORT_KEYS)).digest()
    return "".join(_SUFFIX_ALPHABET[b % len(_SUFFIX_ALPHABET)] for b in digest[:10])


def _condition(ctype: str, status: str, reason: str, message: str, at: str) -> dict[str, str]:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": at,
        "lastTransitionTime": at,
    }


def _resource_count(pod: Obj) -> int:
    total = 0
    for c in pod["spec"]["containers"]:
        total += int((c.get("resources", {}).get("limits") or {}).get(GPU, 0))
    return total


def is_terminating(pod: Obj) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_ready(pod: Obj) -> bool:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return bool(cond["status"] == "True")
    return False


class Fleet:
    """The world. Methods that change it return the stored objects; FleetError carries API failures."""

    def __init__(self, spec: FleetSpec, clock: SimClock | None = None) -> None:
        self.spec = spec
        self.clock = clock or SimClock("manual")
        self.store = Store()
        self.rng = random.Random(spec.seed)
        self.faults: dict[str, Fault] = {}
        self.meters: dict[str, Meter] = {}
        self.writes: list[dict[str, Any]] = []
        self.disruptions: list[dict[str, Any]] = []
        self.logs: dict[str, list[str]] = {}  # "ns/pod" -> extra log lines
        self._fault_seq = 0
        self._event_seq = 0
        self._gpu_owner: dict[str, list[str | None]] = {}  # node -> per GPU index, owning "ns/pod"
        self._unhealthy: dict[str, set[int]] = {}  # node -> GPU indices the device plugin marked bad
        self._bucket_of: dict[str, tuple[str, int]] = {}  # node -> (pool, free GPUs) while schedulable
        self._buckets: dict[str, list[dict[str, None]]] = {}  # pool -> free count -> nodes (ordered)
        self._pending: dict[tuple[str, str], None] = {}
        self._agents: dict[str, tuple[SimNvml, NvmlCollector]] = {}
        self._reconciling: set[tuple[str, str]] = set()
        self._restart_base: dict[str, int] = {}  # fault id -> restarts before the crash loop began

    # == time ====================================================================================
    def now(self) -> datetime:
        return self.clock.now()

    def stamp(self) -> str:
        return ts(self.now())

    def _uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _suffix(self, n: int = 5) -> str:
        return "".join(self.rng.choice(_SUFFIX_ALPHABET) for _ in range(n))

    # == generation ==============================================================================
    def generate(self) -> None:
        spec, at = self.spec, self.stamp()
        pools = [_pool_shape(i) for i in range(spec.pools)]
        for ns in ["default", "kube-system", AGENT_NAMESPACE]:
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
            self._ensure_agent_pod(name, refresh=False)
        self._refresh_daemonset_status()
        self._generate_tenants(pools, node_names)

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
                    RACK_LABEL: f"{pool}-rack-{idx // 16:03d}",
                    PRODUCT_LABEL: product,
                    "nvidia.com/gpu.count": g,
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

    def _healthy_conditions(self, at: str) -> list[dict[str, str]]:
        return [
            _condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                at,
            ),
            _condition(
                "DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", at
            ),
            _condition(
                "PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", at
            ),
            _condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", at),
            _condition("GpuHealthy", "True", "AllGpusHealthy", "node-agent: all GPUs report healthy", at),
        ]

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

    def _create_daemonset(self) -> None:
        labels = {"app.kubernetes.io/name": AGENT_NAME}
        self.store.put(
            "daemonsets",
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {
                    "name": AGENT_NAME,
                    "namespace": AGENT_NAMESPACE,
                    "uid": self._uid(),
                    "creationTimestamp": self.stamp(),
                    "generation": 1,
                    "labels": labels,
                },
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": self._agent_pod_spec()},
                    "updateStrategy": {"type": "RollingUpdate"},
                },
                "status": {},
            },
        )

    def _agent_pod_spec(self) -> dict[str, Any]:
        return {
            "containers": [
                {
                    "name": AGENT_NAME,
                    "image": "ghcr.io/supply-agent/supply-agent:0.1.0",
                    "args": ["node-agent", "serve", "--port", str(AGENT_PORT)],
                    "ports": [{"containerPort": AGENT_PORT, "name": "health", "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                }
            ],
            "tolerations": [{"operator": "Exists"}],
            "priorityClassName": "system-node-critical",
            "serviceAccountName": AGENT_NAME,
        }

    def _generate_tenants(
        self, pools: list[tuple[str, str, str, str]], node_names: dict[str, list[str]]
    ) -> None:
        spec = self.spec
        n_customers = spec.customers or max(3, spec.nodes // 10)
        customers = [
            f"{_CUSTOMER_WORDS[i % len(_CUSTOMER_WORDS)]}{'' if i < len(_CUSTOMER_WORDS) else i // len(_CUSTOMER_WORDS)}"
            for i in range(n_customers)
        ]
        for c in customers:
            self._create_namespace(f"tenant-{c}", {CUSTOMER_LABEL: c})
        sizes, weights = zip(*[(s, w) for s, w in _GPU_SIZES if s <= spec.gpus_per_node], strict=True)
        budget = {p[0]: int(len(node_names[p[0]]) * spec.gpus_per_node * spec.fill) for p in pools}
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
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": f"registry.{customer}.example/{name.split('-')[0]}:v{self.rng.randint(1, 9)}",
                                "resources": {
                                    "requests": {
                                        "cpu": str(8 * gpus),
                                        "memory": f"{64 * gpus}Gi",
                                        GPU: str(gpus),
                                    },
                                    "limits": {GPU: str(gpus)},
                                },
                            }
                        ],
                        "nodeSelector": {POOL_LABEL: pool},
                        "restartPolicy": "Always",
                        "terminationGracePeriodSeconds": 30,
                        "tolerations": [
                            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        ],
                    },
                },
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

    # == scheduling ==============================================================================
    def node(self, name: str) -> Obj:
        node = self.store.get("nodes", "", name)
        if node is None:
            raise not_found("nodes", name)
        return node

    def node_faults(self, name: str) -> list[Fault]:
        return [f for f in self.faults.values() if f.node == name]

    def _node_down(self, name: str) -> bool:
        return any(f.kind in (FaultKind.NOT_READY, FaultKind.PARTITION) for f in self.node_faults(name))

    def schedulable(self, node: Obj) -> bool:
        if node["spec"].get("unschedulable") or self._node_down(node["metadata"]["name"]):
            return False
        return not any(
            t.get("effect") in ("NoSchedule", "NoExecute") for t in node["spec"].get("taints") or []
        )

    def free_gpus(self, name: str) -> list[int]:
        bad = self._unhealthy.get(name, set())
        return [i for i, owner in enumerate(self._gpu_owner[name]) if owner is None and i not in bad]

    def _rebucket(self, name: str) -> None:
        old = self._bucket_of.pop(name, None)
        if old is not None:
            self._buckets[old[0]][old[1]].pop(name, None)
        node = self.store.get("nodes", "", name)
        if node is None or not self.schedulable(node):
            return
        pool = node["metadata"]["labels"][POOL_LABEL]
        free = len(self.free_gpus(name))
        buckets = self._buckets.setdefault(pool, [{} for _ in range(self.spec.gpus_per_node + 1)])
        buckets[free][name] = None
        self._bucket_of[name] = (pool, free)

    def _pick_node(self, pool: str | None, gpus: int) -> str | None:
        pools = [pool] if pool else sorted(self._buckets)
        for p in pools:
            buckets = self._buckets.get(p)
            if not buckets:
                continue
            for free in range(max(gpus, 1) if gpus else 0, self.spec.gpus_per_node + 1):
                if buckets[free]:
                    return next(iter(buckets[free]))
        return None

    def _bind(self, pod: Obj, node_name: str) -> Obj:
        """Bind a pod to a node with GPUs free and start it (the scheduler and kubelet in one)."""
        gpus = _resource_count(pod)
        indices = self.free_gpus(node_name)[:gpus]
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        for i in indices:
            self._gpu_owner[node_name][i] = key
        at = self.stamp()
        pod["spec"]["nodeName"] = node_name
        if gpus:
            pod["metadata"].setdefault("annotations", {})[GPU_INDICES_ANNOTATION] = ",".join(
                map(str, indices)
            )
        node = self.node(node_name)
        host_ip = node["status"]["addresses"][0]["address"]
        pod["status"] = self._running_status(pod, host_ip, at)
        self._rebucket(node_name)
        return pod

    def _running_status(self, pod: Obj, host_ip: str, at: str, restarts: int = 0) -> dict[str, Any]:
        c = pod["spec"]["containers"][0]
        h = hashlib.sha256(pod["metadata"]["uid"].encode()).digest()
        return {
            "phase": "Running",
            "conditions": [
                {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": at}
                for t in (
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                )
            ],
            "hostIP": host_ip,
            "podIP": f"172.{16 + h[0] % 16}.{h[1]}.{h[2] % 254 + 1}",
            "startTime": at,
            "qosClass": "Burstable",
            "containerStatuses": [
                {
                    "name": c["name"],
                    "ready": True,
                    "started": True,
                    "restartCount": restarts,
                    "image": c["image"],
                    "imageID": f"{c['image']}@sha256:{h.hex()}",
                    "containerID": f"containerd://{h.hex()}",
                    "state": {"running": {"startedAt": at}},
                    "lastState": {},
                }
            ],
        }

    def _pending_status(self, message: str) -> dict[str, Any]:
        return {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": self.stamp(),
                }
            ],
            "qosClass": "Burstable",
        }

    def _new_pod(
        self, owner_kind: str, owner: Obj, template: dict[str, Any], name: str, extra_labels: dict[str, str]
    ) -> Obj:
        meta = owner["metadata"]
        pod_template = thaw(template)
        labels = {**(pod_template.get("metadata", {}).get("labels") or {}), **extra_labels}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "uid": self._uid(),
                "creationTimestamp": self.stamp(),
                "labels": labels,
                "annotations": dict(pod_template.get("metadata", {}).get("annotations") or {}),
                "generateName": name.rsplit("-", 1)[0] + "-",
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": owner_kind,
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                **pod_template["spec"],
                "schedulerName": "default-scheduler",
                "enableServiceLinks": True,
                "tolerations": [
                    *(pod_template["spec"].get("tolerations") or []),
                    {
                        "key": "node.kubernetes.io/not-ready",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": TOLERATION_SECONDS,
                    },
                    {
                        "key": "node.kubernetes.io/unreachable",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": TOLERATION_SECONDS,
                    },
                ]
                if owner_kind != "DaemonSet"
                else list(pod_template["spec"].get("tolerations") or []),
            },
            "status": {},
        }

    def _place(self, pod: Obj) -> Obj:
        """Schedule a new pod now, or leave it Pending with the scheduler's message."""
        pool = (pod["spec"].get("nodeSelector") or {}).get(POOL_LABEL)
        node_name = self._pick_node(pool, _resource_count(pod))
        if node_name is None:
            ready = len(self._bucket_of)
            msg = (
                f"0/{self.store.count('nodes')} nodes are available: {self.store.count('nodes') - ready} node(s) "
                f"were unschedulable, {ready} Insufficient {GPU}. preemption: 0/{self.store.count('nodes')} "
                "nodes are available: No preemption victims found for incoming pod."
            )
            pod["status"] = self._pending_status(msg)
            self._pending[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = None
            stored = self.store.put("pods", pod)
            self.event(stored, "Warning", "FailedScheduling", msg, "default-scheduler")
            return stored
        stored = self.store.put("pods", self._bind(pod, node_name))
        self._start_meter(stored)
        return stored

    def schedule_pending(self) -> None:
        for ns, name in list(self._pending):
            pod = self.store.get("pods", ns, name)
            if pod is None or is_terminating(pod):
                self._pending.pop((ns, name), None)
                continue
            pool = (pod["spec"].get("nodeSelector") or {}).get(POOL_LABEL)
            node_name = self._pick_node(pool, _resource_count(pod))
            if node_name is None:
                continue
            self._pending.pop((ns, name), None)
            bound = self.store.put("pods", self._bind(thaw(pod), node_name))
            self.event(
                bound,
                "Normal",
                "Scheduled",
                f"Successfully assigned {ns}/{name} to {node_name}",
                "default-scheduler",
            )
            self._start_meter(bound)
            self._refresh_pdbs(ns)
            self._refresh_owner(bound)

    # == controllers =============================================================================
    def _owned_pods(self, ns: str, owner_uid: str) -> list[Obj]:
        return [
            p
            for p in self.store.items("pods", ns)
            if any(r.get("uid") == owner_uid for r in p["metadata"].get("ownerReferences") or [])
        ]

    def reconcile_deployment(self, ns: str, name: str) -> None:
        # Deleting a pod re-enters the owner's reconcile; one pass at a time per deployment.
        if (ns, name) in self._reconciling:
            return
        self._reconciling.add((ns, name))
        try:
            self._reconcile_deployment(ns, name)
        finally:
            self._reconciling.discard((ns, name))

    def _reconcile_deployment(self, ns: str, name: str) -> None:
        dep = self.store.get("deployments", ns, name)
        if dep is None:
            return
        template = dep["spec"]["template"]
        pth = _template_hash(template)
        rs_name = f"{name}-{pth}"
        rs = self.store.get("replicasets", ns, rs_name)
        desired = int(dep["spec"].get("replicas", 1))
        if rs is None:
            revision = 1 + sum(
                1
                for r in self.store.items("replicasets", ns)
                if any(
                    o.get("uid") == dep["metadata"]["uid"] for o in r["metadata"].get("ownerReferences") or []
                )
            )
            rs = self.store.put(
                "replicasets",
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": rs_name,
                        "namespace": ns,
                        "uid": self._uid(),
                        "creationTimestamp": self.stamp(),
                        "generation": 1,
                        "labels": {**template["metadata"].get("labels", {}), "pod-template-hash": pth},
                        "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "Deployment",
                                "name": name,
                                "uid": dep["metadata"]["uid"],
                                "controller": True,
                                "blockOwnerDeletion": True,
                            }
                        ],
                    },
                    "spec": {
                        "replicas": desired,
                        "selector": {
                            "matchLabels": {
                                **dep["spec"]["selector"]["matchLabels"],
                                "pod-template-hash": pth,
                            }
                        },
                        "template": thaw(template),
                    },
                    "status": {},
                },
            )
            if revision > 1:
                self.event(
                    dep,
                    "Normal",
                    "ScalingReplicaSet",
                    f"Scaled up replica set {rs_name} to {desired}",
                    "deployment-controller",
                )
        rs_revision = rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        if (dep["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision") != rs_revision:
            annotated = thaw(dep)
            annotated["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = (
                rs_revision
            )
            dep = self.store.put("deployments", annotated)
        current = [p for p in self._owned_pods(ns, rs["metadata"]["uid"]) if not is_terminating(p)]
        for _ in range(desired - len(current)):
            pod = self._new_pod(
                "ReplicaSet", rs, template, f"{rs_name}-{self._suffix()}", {"pod-template-hash": pth}
            )
            self._place(pod)
        if len(current) > desired:
            surplus = sorted(
                current,
                key=lambda p: (p["status"].get("phase") == "Running", p["metadata"]["creationTimestamp"]),
            )
            for pod in surplus[: len(current) - desired]:
                if self.store.get("pods", ns, pod["metadata"]["name"]) is not None:
                    self.delete_pod(ns, pod["metadata"]["name"], grace=None, reason="ScaledDown")
        # Old replica sets of the deployment are scaled to zero once the new one is created.
        for other in list(self.store.items("replicasets", ns)):
            if other["metadata"]["name"] == rs_name:
                continue
            if not any(
                o.get("uid") == dep["metadata"]["uid"] for o in other["metadata"].get("ownerReferences") or []
            ):
                continue
            for pod in self._owned_pods(ns, other["metadata"]["uid"]):
                if (
                    not is_terminating(pod)
                    and self.store.get("pods", ns, pod["metadata"]["name"]) is not None
                ):
                    self.delete_pod(ns, pod["metadata"]["name"], grace=None, reason="RolloutReplaced")
            if other["spec"].get("replicas"):
                old = thaw(other)
                old["spec"]["replicas"] = 0
                self.store.put("replicasets", old)
        self._refresh_owner_status(ns, name)
        self._refresh_pdbs(ns)

    def _refresh_owner_status(self, ns: str, dep_name: str) -> None:
        dep = self.store.get("deployments", ns, dep_name)
        if dep is None:
            return
        pth = _template_hash(dep["spec"]["template"])
        total = updated = ready = 0
        for rs in list(self.store.items("replicasets", ns)):
            if not any(
                o.get("uid") == dep["metadata"]["uid"] for o in rs["metadata"].get("ownerReferences") or []
            ):
                continue
            pods = [p for p in self._owned_pods(ns, rs["metadata"]["uid"]) if not is_terminating(p)]
            rs_ready = sum(1 for p in pods if is_ready(p))
            status = {
                "replicas": len(pods),
                "fullyLabeledReplicas": len(pods),
                "readyReplicas": rs_ready,
                "availableReplicas": rs_ready,
                "observedGeneration": rs["metadata"].get("generation", 1),
            }
            if rs["status"] != status:
                new = thaw(rs)
                new["status"] = status
                self.store.put("replicasets", new)
            total += len(pods)
            ready += rs_ready
            if rs["metadata"]["labels"].get("pod-template-hash") == pth:
                updated = len(pods)
        desired = int(dep["spec"].get("replicas", 1))
        at = self.stamp()
        available = ready >= desired
        status = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(desired - ready, 0),
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if available else "False",
                    "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                    "message": "Deployment has minimum availability."
                    if available
                    else "Deployment does not have minimum availability.",
                    "lastUpdateTime": at,
                    "lastTransitionTime": at,
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": f'ReplicaSet "{dep_name}-{pth}" has successfully progressed.',
                    "lastUpdateTime": at,
                    "lastTransitionTime": at,
                },
            ],
        }
        old = {k: v for k, v in dep["status"].items() if k != "conditions"}
        if old != {k: v for k, v in status.items() if k != "conditions"}:
            new = thaw(dep)
            new["status"] = status
            self.store.put("deployments", new)

    def _refresh_owner(self, pod: Obj) -> None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "ReplicaSet":
                rs = self.store.get("replicasets", pod["metadata"]["namespace"], ref["name"])
                for dref in (rs or {}).get("metadata", {}).get("ownerReferences") or []:
                    if dref.get("kind") == "Deployment":
                        self._refresh_owner_status(pod["metadata"]["namespace"], dref["name"])

    def _reconcile_owner(self, pod: Obj) -> None:
        """After a pod goes away: its ReplicaSet's deployment, or its DaemonSet, replaces it."""
        ns = pod["metadata"]["namespace"]
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "ReplicaSet":
                rs = self.store.get("replicasets", ns, ref["name"])
                for dref in (rs or {}).get("metadata", {}).get("ownerReferences") or []:
                    if dref.get("kind") == "Deployment":
                        self.reconcile_deployment(ns, dref["name"])
            elif ref.get("kind") == "DaemonSet" and pod["spec"].get("nodeName"):
                self._ensure_agent_pod(pod["spec"]["nodeName"])

    def _ensure_agent_pod(self, node_name: str, refresh: bool = True) -> None:
        ds = self.store.get("daemonsets", AGENT_NAMESPACE, AGENT_NAME)
        if ds is None or self.store.get("nodes", "", node_name) is None:
            return
        for pod in self.store.pods_on_node(node_name):
            if pod["metadata"]["namespace"] == AGENT_NAMESPACE and not is_terminating(pod):
                return
        pod = self._new_pod("DaemonSet", ds, ds["spec"]["template"], f"{AGENT_NAME}-{self._suffix()}", {})
        pod["spec"]["nodeName"] = node_name
        pod["spec"]["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
                    ]
                }
            }
        }
        host_ip = self.node(node_name)["status"]["addresses"][0]["address"]
        pod["status"] = self._running_status(pod, host_ip, self.stamp())
        if self._agent_down(node_name) or self._node_down(node_name):
            self._set_crashloop_status(pod, "Error", 1, 1)
        self.store.put("pods", pod)
        if refresh:
            self._refresh_daemonset_status()

    def _refresh_daemonset_status(self) -> None:
        ds = self.store.get("daemonsets", AGENT_NAMESPACE, AGENT_NAME)
        if ds is None:
            return
        pods = [p for p in self.store.items("pods", AGENT_NAMESPACE) if not is_terminating(p)]
        ready = sum(1 for p in pods if is_ready(p))
        n = self.store.count("nodes")
        status = {
            "currentNumberScheduled": len(pods),
            "desiredNumberScheduled": n,
            "numberMisscheduled": 0,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": n - ready,
            "updatedNumberScheduled": len(pods),
            "observedGeneration": 1,
        }
        if ds["status"] != status:
            new = thaw(ds)
            new["status"] = status
            self.store.put("daemonsets", new)

    # == disruption budgets ======================================================================
    def pdbs_for(self, pod: Obj) -> list[Obj]:
        labels = pod["metadata"].get("labels") or {}
        return [
            pdb
            for pdb in self.store.items("poddisruptionbudgets", pod["metadata"]["namespace"])
            if labels_match(selector_from_match_labels(pdb["spec"].get("selector")), labels)
        ]

    def _refresh_pdbs(self, ns: str) -> None:
        pdbs = list(self.store.items("poddisruptionbudgets", ns))
        if not pdbs:
            return
        pods = [p for p in self.store.items("pods", ns) if not is_terminating(p)]
        for pdb in pdbs:
            reqs = selector_from_match_labels(pdb["spec"].get("selector"))
            matched = [p for p in pods if labels_match(reqs, p["metadata"].get("labels"))]
            expected = len(matched)
            healthy = sum(1 for p in matched if is_ready(p))
            desired = self._desired_healthy(pdb["spec"], expected)
            allowed = max(healthy - desired, 0)
            status = {
                "observedGeneration": pdb["metadata"].get("generation", 1),
                "currentHealthy": healthy,
                "desiredHealthy": desired,
                "expectedPods": expected,
                "disruptionsAllowed": allowed,
                "conditions": [
                    {
                        "type": "DisruptionAllowed",
                        "status": "True" if allowed else "False",
                        "reason": "SufficientPods" if allowed else "InsufficientPods",
                        "message": "",
                        "observedGeneration": pdb["metadata"].get("generation", 1),
                        "lastTransitionTime": self.stamp(),
                    }
                ],
            }
            old = {k: v for k, v in pdb["status"].items() if k != "conditions"}
            if old != {k: v for k, v in status.items() if k != "conditions"}:
                new = thaw(pdb)
                new["status"] = status
                self.store.put("poddisruptionbudgets", new)

    @staticmethod
    def _scaled(value: Any, total: int, round_up: bool) -> int:
        if isinstance(value, str) and value.endswith("%"):
            frac = int(value[:-1]) * total / 100
            return int(-(-frac // 1)) if round_up else int(frac)
        return int(value)

    def _desired_healthy(self, spec: dict[str, Any], expected: int) -> int:
        if spec.get("minAvailable") is not None:
            return self._scaled(spec["minAvailable"], expected, True)
        if spec.get("maxUnavailable") is not None:
            return max(expected - self._scaled(spec["maxUnavailable"], expected, True), 0)
        return 0

    # == pod lifecycle ===========================================================================
    def _kubelet_confirms(self, pod: Obj) -> bool:
        """Whether the node's kubelet can finish a graceful deletion (not when dead, cut off or stuck)."""
        node = pod["spec"].get("nodeName")
        if node and self._node_down(node):
            return False
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        return not any(
            f.kind == FaultKind.STUCK_TERMINATING and (f.namespace, f.pod) == key
            for f in self.faults.values()
        )

    def delete_pod(
        self, ns: str, name: str, grace: int | None, reason: str = "Deleted", dry_run: bool = False
    ) -> Obj:
        pod = self.store.get("pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        marked = thaw(pod)
        if not marked["metadata"].get("deletionTimestamp"):
            grace_s = (
                grace if grace is not None else int(pod["spec"].get("terminationGracePeriodSeconds", 30))
            )
            marked["metadata"]["deletionTimestamp"] = ts(self.now() + timedelta(seconds=grace_s))
            marked["metadata"]["deletionGracePeriodSeconds"] = grace_s
        if dry_run:
            return marked
        if grace != 0 and not self._kubelet_confirms(pod):
            if not pod["metadata"].get("deletionTimestamp"):
                stored = self.store.put("pods", marked)
                self._stop_meters(stored)
                self._record_disruption(stored, reason)
                self.event(
                    stored,
                    "Normal",
                    "Killing",
                    f"Stopping container {pod['spec']['containers'][0]['name']}",
                    "kubelet",
                )
                self._after_pod_change(stored)
            return self.store.get("pods", ns, name) or marked
        self._release(pod)
        gone = self.store.delete("pods", ns, name)
        assert gone is not None
        self._pending.pop((ns, name), None)
        self._stop_meters(pod)
        if not pod["metadata"].get("deletionTimestamp"):
            self._record_disruption(pod, reason)
        self._after_pod_change(pod)
        marked["metadata"]["resourceVersion"] = gone["metadata"]["resourceVersion"]
        return marked

    def _after_pod_change(self, pod: Obj) -> None:
        ns = pod["metadata"]["namespace"]
        self._reconcile_owner(pod)
        self._refresh_owner(pod)
        self._refresh_pdbs(ns)
        if ns == AGENT_NAMESPACE:
            self._refresh_daemonset_status()
        self.schedule_pending()

    def _release(self, pod: Obj) -> None:
        node = pod["spec"].get("nodeName")
        if not node or node not in self._gpu_owner:
            return
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        owners = self._gpu_owner[node]
        for i, owner in enumerate(owners):
            if owner == key:
                owners[i] = None
        self._rebucket(node)

    def _record_disruption(self, pod: Obj, reason: str) -> None:
        if pod["metadata"]["namespace"] == AGENT_NAMESPACE:
            return
        self.disruptions.append(
            {
                "at": self.stamp(),
                "namespace": pod["metadata"]["namespace"],
                "pod": pod["metadata"]["name"],
                "customer": (pod["metadata"].get("labels") or {}).get(CUSTOMER_LABEL, ""),
                "node": pod["spec"].get("nodeName") or "",
                "reason": reason,
            }
        )

    def evict(self, ns: str, name: str, dry_run: bool = False) -> None:
        pod = self.store.get("pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        if is_terminating(pod):
            return
        pdbs = self.pdbs_for(pod)
        if len(pdbs) > 1:
            raise FleetError(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            )
        if pdbs and pod["status"].get("phase") == "Running":
            pdb = pdbs[0]
            st = pdb["status"]
            healthy_pod = is_ready(pod)
            policy = pdb["spec"].get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
            unhealthy_ok = not healthy_pod and (
                policy == "AlwaysAllow" or st.get("currentHealthy", 0) >= st.get("desiredHealthy", 0)
            )
            if not unhealthy_ok and st.get("disruptionsAllowed", 0) <= 0:
                msg = (
                    f"The disruption budget {pdb['metadata']['name']} needs {st.get('desiredHealthy', 0)} healthy pods "
                    f"and has {st.get('currentHealthy', 0)} currently"
                )
                raise FleetError(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    {"causes": [{"reason": "DisruptionBudget", "message": msg}]},
                )
        if dry_run:
            return
        self.event(pod, "Normal", "Evicted", "Evicted by the eviction API", "eviction-api")
        self.delete_pod(ns, name, grace=None, reason="Evicted")

    # == nodes ===================================================================================
    def node_changed(self, old: Obj, new: Obj) -> None:
        """Side effects of a write to a node (cordon, uncordon, taints)."""
        name = new["metadata"]["name"]
        was, now = bool(old["spec"].get("unschedulable")), bool(new["spec"].get("unschedulable"))
        if was != now:
            reason = "NodeNotSchedulable" if now else "NodeSchedulable"
            self.event(new, "Normal", reason, f"Node {name} status is now: {reason}", "kubelet")
        self._rebucket(name)
        self.schedule_pending()

    def _refresh_node(self, name: str) -> Obj:
        """Recompute a node's status, taints and allocatable from the faults on it."""
        node = thaw(self.node(name))
        at = self.stamp()
        faults = self.node_faults(name)
        kinds = {f.kind for f in faults}
        conditions = {c["type"]: c for c in node["status"]["conditions"]}

        def setc(ctype: str, status: str, reason: str, message: str) -> None:
            cur = conditions.get(ctype)
            if cur is None or (cur["status"], cur["reason"]) != (status, reason):
                conditions[ctype] = _condition(ctype, status, reason, message, at)
            else:
                cur["lastHeartbeatTime"] = at

        down = kinds & {FaultKind.NOT_READY, FaultKind.PARTITION}
        if down:
            for ctype in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready", "GpuHealthy"):
                setc(ctype, "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
        else:
            healthy = {c["type"]: c for c in self._healthy_conditions(at)}
            for ctype in ("MemoryPressure", "PIDPressure", "Ready"):
                setc(ctype, healthy[ctype]["status"], healthy[ctype]["reason"], healthy[ctype]["message"])
            if FaultKind.DISK_PRESSURE in kinds:
                setc("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure")
            else:
                setc("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure")
            bad = sorted(self._unhealthy.get(name, set()))
            if FaultKind.AGENT_DOWN in kinds:
                setc(
                    "GpuHealthy", "Unknown", "NodeAgentNotReporting", "node-agent is not reporting GPU health"
                )
            elif bad:
                xids = sorted({f.code for f in faults if f.kind in GPU_FAULTS and f.gpu in bad and f.code})
                setc(
                    "GpuHealthy",
                    "False",
                    "GpuUnhealthy",
                    f"node-agent: GPU(s) {','.join(map(str, bad))} unhealthy (XID {','.join(map(str, xids))})",
                )
            else:
                setc("GpuHealthy", "True", "AllGpusHealthy", "node-agent: all GPUs report healthy")
        node["status"]["conditions"] = list(conditions.values())
        own = {"node.kubernetes.io/unreachable", "node.kubernetes.io/disk-pressure"}
        taints = [t for t in node["spec"].get("taints") or [] if t["key"] not in own]
        if down:
            taints += [
                {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": at},
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": at},
            ]
        if FaultKind.DISK_PRESSURE in kinds and not down:
            taints.append(
                {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule", "timeAdded": at}
            )
        old_taints = {(t["key"], t["effect"]): t for t in node["spec"].get("taints") or []}
        taints = [old_taints.get((t["key"], t["effect"]), t) for t in taints]
        if taints:
            node["spec"]["taints"] = taints
        else:
            node["spec"].pop("taints", None)
        node["status"]["allocatable"][GPU] = str(
            self.spec.gpus_per_node - len(self._unhealthy.get(name, set()))
        )
        stored = self.store.put("nodes", node)
        self._rebucket(name)
        return stored

    # == node agent (NVML) =======================================================================
    def agent(self, node_name: str) -> tuple[SimNvml, NvmlCollector]:
        """The node's simulated NVML and the real collector over it, created on first use."""
        if node_name not in self._agents:
            node = self.node(node_name)
            sim = SimNvml.healthy(
                node_name, self.spec.gpus_per_node, node["metadata"]["labels"][PRODUCT_LABEL], self.spec.seed
            )
            collector = NvmlCollector(node_name, nvml=sim, clock=self.now)
            collector.start()
            self._agents[node_name] = (sim, collector)
        return self._agents[node_name]

    def _agent_down(self, node_name: str) -> bool:
        return any(f.kind == FaultKind.AGENT_DOWN for f in self.node_faults(node_name))

    def agent_pod(self, node_name: str) -> Obj | None:
        for pod in self.store.pods_on_node(node_name):
            if pod["metadata"]["namespace"] == AGENT_NAMESPACE:
                return pod
        return None

    def proxy(self, ns: str, name: str, port: str | None, path: str) -> tuple[int, str, bytes]:
        """What a request through ``pods/{name}/proxy`` gets: the node-agent's health report."""
        pod = self.store.get("pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        node_name = pod["spec"].get("nodeName")
        ip = pod.get("status", {}).get("podIP", "")
        target = f"{ip}:{port or AGENT_PORT}"
        if not node_name or self._node_down(node_name):
            raise FleetError(
                503, "ServiceUnavailable", f"error trying to reach service: dial tcp {target}: i/o timeout"
            )
        is_agent = ns == AGENT_NAMESPACE and (port in (None, "", str(AGENT_PORT), "health"))
        if not is_agent or self._agent_down(node_name) or is_terminating(pod):
            raise FleetError(
                503,
                "ServiceUnavailable",
                f"error trying to reach service: dial tcp {target}: connect: connection refused",
            )
        path = path.strip("/")
        if path == "healthz":
            return 200, "text/plain", b"ok"
        if path in ("", "health"):
            _, collector = self.agent(node_name)
            return 200, "application/json", orjson.dumps(collector.report().model_dump(mode="json"))
        return 404, "text/plain", b"404 page not found\n"

    # == faults ==================================================================================
    def _find_pod(self, namespace: str | None, pod: str) -> Obj:
        if namespace:
            found = self.store.get("pods", namespace, pod)
            if found is None:
                raise not_found("pods", pod)
            return found
        matches = [p for p in self.store.items("pods") if p["metadata"]["name"] == pod]
        if not matches:
            raise not_found("pods", pod)
        if len(matches) > 1:
            raise FleetError(422, "Invalid", f'pod name "{pod}" is in several namespaces: give the namespace')
        return matches[0]

    def _gpu_labels(self, node: Obj, gpu: int | None) -> dict[str, str]:
        labels = node["metadata"]["labels"]
        out = {
            "node": node["metadata"]["name"],
            "pool": labels[POOL_LABEL],
            "region": labels[REGION_LABEL],
            "gpu_product": labels[PRODUCT_LABEL],
            "rack": labels[RACK_LABEL],
        }
        if gpu is not None:
            sim, _ = self.agent(node["metadata"]["name"])
            out["gpu_uuid"] = sim.gpus[gpu].uuid
            owner = self._gpu_owner[node["metadata"]["name"]][gpu]
            if owner:
                ns, pod_name = owner.split("/", 1)
                out.update(namespace=ns, pod=pod_name)
                pod = self.store.get("pods", ns, pod_name)
                if pod:
                    out["customer"] = (pod["metadata"].get("labels") or {}).get(CUSTOMER_LABEL, "")
        return out

    def inject(
        self,
        kind: FaultKind,
        *,
        node: str | None = None,
        gpu: int | None = None,
        code: int | None = None,
        namespace: str | None = None,
        pod: str | None = None,
        detail: str = "",
    ) -> Fault:
        """Inject a fault; every API (NVML report, conditions, events, pod status, meters) shows it."""
        if kind in NODE_FAULTS:
            if not node:
                raise FleetError(422, "Invalid", f"fault {kind.value!r} needs a node")
            node_obj = self.node(node)
            if kind in GPU_FAULTS:
                if gpu is None:
                    raise FleetError(422, "Invalid", f"fault {kind.value!r} needs a GPU index")
                if not 0 <= gpu < self.spec.gpus_per_node:
                    raise FleetError(
                        422, "Invalid", f"node {node} has GPUs 0..{self.spec.gpus_per_node - 1}, not {gpu}"
                    )
            if kind == FaultKind.XID and (code is None or not 1 <= code <= 1000):
                raise FleetError(422, "Invalid", "an xid fault needs an XID code between 1 and 1000")
            labels = self._gpu_labels(node_obj, gpu if kind in GPU_FAULTS else None)
        elif kind in POD_FAULTS:
            if not pod:
                raise FleetError(422, "Invalid", f"fault {kind.value!r} needs a pod")
            pod_obj = self._find_pod(namespace, pod)
            namespace = pod_obj["metadata"]["namespace"]
            node = pod_obj["spec"].get("nodeName")
            labels = {
                "namespace": namespace,
                "pod": pod,
                "customer": (pod_obj["metadata"].get("labels") or {}).get(CUSTOMER_LABEL, ""),
                "deployment": (pod_obj["metadata"].get("labels") or {}).get("app", ""),
            }
            if node:
                labels["node"] = node
        else:  # pragma: no cover - every kind is a node or a pod fault
            raise FleetError(422, "Invalid", f"unknown fault {kind}")
        if kind == FaultKind.ECC:
            code = 48
        elif kind == FaultKind.OFF_BUS:
            code = 79
        if code is not None:
            labels["xid"] = str(code)
        self._fault_seq += 1
        fault = Fault(
            id=f"f{self._fault_seq:04d}",
            kind=kind,
            started_at=self.now(),
            node=node if kind in NODE_FAULTS else None,
            gpu=gpu,
            code=code,
            namespace=namespace,
            pod=pod,
            labels=labels,
            detail=detail,
        )
        if kind in POD_FAULTS and node:
            fault = fault.model_copy(update={"node": None})
            labels["node"] = node
        self.faults[fault.id] = fault
        self._apply(fault)
        return fault

    def _apply(self, fault: Fault) -> None:
        kind = fault.kind
        pod: Obj | None
        if kind in GPU_FAULTS:
            assert fault.node is not None and fault.gpu is not None
            sim, _ = self.agent(fault.node)
            node = self.node(fault.node)
            uuid_ = sim.gpus[fault.gpu].uuid
            if kind == FaultKind.XID:
                assert fault.code is not None
                sim.inject_xid(fault.gpu, fault.code)
            elif kind == FaultKind.ECC:
                sim.inject_ecc_uncorrectable(fault.gpu)
            elif kind == FaultKind.OFF_BUS:
                sim.fall_off_bus(fault.gpu)
            elif kind == FaultKind.THERMAL:
                sim.set_thermal(fault.gpu, True)
            if kind == FaultKind.THERMAL:
                self.event(
                    node,
                    "Warning",
                    "GpuThermalThrottling",
                    f"GPU {fault.gpu} ({uuid_}): thermal slowdown active, clocks reduced",
                    "node-agent",
                )
            else:
                xid = fault.code or 0
                fatal = xid not in XID_APPLICATION and xid not in XID_INFORMATIONAL
                self.event(
                    node,
                    "Warning",
                    "GpuXidError",
                    f"XID {xid} on GPU {fault.gpu} ({uuid_})"
                    + ("" if fatal else " (application error; GPU healthy)"),
                    "node-agent",
                )
                if fatal:
                    self._unhealthy.setdefault(fault.node, set()).add(fault.gpu)
                    self._refresh_node(fault.node)
                owner = self._gpu_owner[fault.node][fault.gpu]
                if owner and xid not in XID_INFORMATIONAL:
                    self._container_crashed(owner, f"CUDA error: XID {xid} on GPU {fault.gpu}")
        elif kind in (FaultKind.NOT_READY, FaultKind.PARTITION):
            assert fault.node is not None
            node = self._refresh_node(fault.node)
            self.event(
                node,
                "Normal",
                "NodeNotReady",
                f"Node {fault.node} status is now: NodeNotReady",
                "node-controller",
            )
            if kind == FaultKind.NOT_READY:
                self.event(
                    node,
                    "Warning",
                    "HostUnresponsive",
                    "out-of-band: BMC reports host not responding (power state unknown); no traffic from the "
                    "node's workloads",
                    "bmc-monitor",
                )
            else:
                self.event(
                    node,
                    "Warning",
                    "ControlPlanePathDown",
                    f"out-of-band: BMC reports host up; peers in {node['metadata']['labels'][RACK_LABEL]} reach it on "
                    "the data plane; the control-plane network path is lost",
                    "network-monitor",
                )
            for pod in self.store.pods_on_node(fault.node):
                new = thaw(pod)
                for cond in new["status"].get("conditions") or []:
                    if cond["type"] in ("Ready", "ContainersReady"):
                        cond["status"], cond["lastTransitionTime"] = "False", self.stamp()
                for cs in new["status"].get("containerStatuses") or []:
                    cs["ready"] = False
                stored = self.store.put("pods", new)
                if kind == FaultKind.NOT_READY:
                    self._stop_meters(stored)
                self._refresh_owner(stored)
                self._refresh_pdbs(stored["metadata"]["namespace"])
            self._refresh_daemonset_status()
        elif kind == FaultKind.AGENT_DOWN:
            assert fault.node is not None
            pod = self.agent_pod(fault.node)
            if pod is not None:
                new = thaw(pod)
                self._set_crashloop_status(new, "Error", 1, 1)
                stored = self.store.put("pods", new)
                self.event(
                    stored,
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {AGENT_NAME} in pod "
                    f"{pod['metadata']['name']}_{AGENT_NAMESPACE}",
                    "kubelet",
                )
                self._refresh_daemonset_status()
            self._refresh_node(fault.node)
        elif kind == FaultKind.DISK_PRESSURE:
            assert fault.node is not None
            node = self._refresh_node(fault.node)
            self.event(
                node,
                "Warning",
                "NodeHasDiskPressure",
                f"Node {fault.node} status is now: NodeHasDiskPressure",
                "kubelet",
            )
            self.event(
                node, "Warning", "EvictionThresholdMet", "Attempting to reclaim ephemeral-storage", "kubelet"
            )
        elif kind in (FaultKind.CRASHLOOP, FaultKind.OOMKILL):
            assert fault.namespace and fault.pod
            pod = self.store.get("pods", fault.namespace, fault.pod)
            if pod is not None and pod["status"].get("phase") == "Running":
                new = thaw(pod)
                self._restart_base[fault.id] = (pod["status"].get("containerStatuses") or [{}])[0].get(
                    "restartCount", 0
                )
                reason, code = ("OOMKilled", 137) if kind == FaultKind.OOMKILL else ("Error", 1)
                self._set_crashloop_status(new, reason, code, 1)
                stored = self.store.put("pods", new)
                if kind == FaultKind.OOMKILL:
                    self.event(
                        stored,
                        "Warning",
                        "OOMKilling",
                        "Memory cgroup out of memory: Killed process (python) in container main",
                        "kernel-monitor",
                    )
                self.event(
                    stored,
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container main in pod {fault.pod}_{fault.namespace}",
                    "kubelet",
                )
                self._after_status(stored)
        elif kind == FaultKind.STUCK_TERMINATING:
            assert fault.namespace and fault.pod
            self.delete_pod(fault.namespace, fault.pod, grace=None, reason="StuckTerminating")
        elif kind == FaultKind.DOUBLE_METERING:
            assert fault.namespace and fault.pod
            pod = self.store.get("pods", fault.namespace, fault.pod)
            if pod is not None:
                base = self.meters.get(f"m-{pod['metadata']['uid']}")
                if base is not None:
                    dup = Meter(
                        **{
                            **asdict(base),
                            "id": f"m-{pod['metadata']['uid']}-dup",
                            "accumulated": 0.0,
                            "since": self.now().isoformat(),
                        }
                    )
                    self.meters[dup.id] = dup

    def _set_crashloop_status(self, pod: Obj, reason: str, exit_code: int, restarts: int) -> None:
        at = self.stamp()
        for cond in pod["status"].get("conditions") or []:
            if cond["type"] in ("Ready", "ContainersReady"):
                cond["status"], cond["lastTransitionTime"] = "False", at
        for cs in pod["status"].get("containerStatuses") or []:
            cs.update(
                ready=False,
                started=False,
                restartCount=cs.get("restartCount", 0) + restarts,
                state={
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off 10s restarting failed container={cs['name']} pod={pod['metadata']['name']}",
                    }
                },
                lastState={
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": reason,
                        "startedAt": at,
                        "finishedAt": at,
                        "containerID": cs.get("containerID", ""),
                    }
                },
            )

    def _container_crashed(self, owner: str, message: str) -> None:
        ns, name = owner.split("/", 1)
        pod = self.store.get("pods", ns, name)
        if pod is None:
            return
        new = thaw(pod)
        for cs in new["status"].get("containerStatuses") or []:
            started = cs.get("state", {}).get("running", {}).get("startedAt", self.stamp())
            cs["restartCount"] = cs.get("restartCount", 0) + 1
            cs["lastState"] = {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "message": message,
                    "startedAt": started,
                    "finishedAt": self.stamp(),
                }
            }
            cs["state"] = {"running": {"startedAt": self.stamp()}}
        stored = self.store.put("pods", new)
        self._record_disruption(stored, "GpuError")
        self.logs.setdefault(owner, []).append(f"{self.stamp()} RuntimeError: {message}")

    def _after_status(self, pod: Obj) -> None:
        self._refresh_owner(pod)
        self._refresh_pdbs(pod["metadata"]["namespace"])

    def clear(self, node: str | None = None) -> list[Fault]:
        """Clear every fault (or a node's): the underlying problem is repaired, the world heals."""
        if node is not None:
            self.node(node)
        cleared = [
            f
            for f in self.faults.values()
            if node is None or f.node == node or (f.labels.get("node") == node)
        ]
        for f in cleared:
            del self.faults[f.id]
        nodes = {f.node for f in cleared if f.node} | {
            f.labels.get("node") for f in cleared if f.labels.get("node")
        }
        for name in sorted(n for n in nodes if n):
            if name in self._agents:
                self._agents[name][0].reset()
            self._unhealthy.pop(name, None)
            self._refresh_node(name)
            for on_node in self.store.pods_on_node(name):
                self._heal_pod(on_node)
        pod: Obj | None
        for f in cleared:
            if f.kind in (FaultKind.CRASHLOOP, FaultKind.OOMKILL) and f.namespace and f.pod:
                pod = self.store.get("pods", f.namespace, f.pod)
                if pod is not None:
                    self._heal_pod(pod)
            elif f.kind == FaultKind.STUCK_TERMINATING and f.namespace and f.pod:
                if self.store.get("pods", f.namespace, f.pod) is not None:
                    self.delete_pod(f.namespace, f.pod, grace=0, reason="StuckTerminating")
            elif f.kind == FaultKind.DOUBLE_METERING:
                pod = self.store.get("pods", f.namespace or "", f.pod or "")
                dup = self.meters.get(f"m-{pod['metadata']['uid']}-dup") if pod else None
                if dup is not None:
                    dup.set_rate(0, self.now())
        self.schedule_pending()
        return cleared

    def _heal_pod(self, pod: Obj) -> None:
        if is_terminating(pod):
            if self._kubelet_confirms(pod):
                self.delete_pod(
                    pod["metadata"]["namespace"], pod["metadata"]["name"], grace=0, reason="Deleted"
                )
            return
        if pod["status"].get("phase") != "Running" or is_ready(pod):
            return
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if any((f.namespace, f.pod) == key for f in self.faults.values()):
            return
        new = thaw(pod)
        restarts = (new["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0)
        new["status"] = self._running_status(new, new["status"].get("hostIP", ""), self.stamp(), restarts)
        stored = self.store.put("pods", new)
        self._start_meter(stored)
        self._after_status(stored)
        if key[0] == AGENT_NAMESPACE:
            self._refresh_daemonset_status()

    # == meters ==================================================================================
    def _start_meter(self, pod: Obj) -> None:
        gpus = _resource_count(pod)
        node = pod["spec"].get("nodeName")
        if not gpus or not node or pod["status"].get("phase") != "Running":
            return
        mid = f"m-{pod['metadata']['uid']}"
        meter = self.meters.get(mid)
        if meter is None:
            self.meters[mid] = Meter(
                mid,
                pod["metadata"]["namespace"],
                pod["metadata"]["name"],
                pod["metadata"]["uid"],
                (pod["metadata"].get("labels") or {}).get(CUSTOMER_LABEL, ""),
                node,
                gpus,
                1,
                self.now().isoformat(),
            )
        elif not meter.rate:
            meter.set_rate(1, self.now())

    def _stop_meters(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        for mid in (f"m-{uid}", f"m-{uid}-dup"):
            if mid in self.meters and self.meters[mid].rate:
                self.meters[mid].set_rate(0, self.now())

    def meter_readings(self, namespace: str | None = None, pod: str | None = None) -> list[dict[str, Any]]:
        now = self.now()
        out = []
        for m in self.meters.values():
            if (namespace and m.namespace != namespace) or (pod and m.pod != pod):
                continue
            out.append(
                {
                    "meter": m.id,
                    "namespace": m.namespace,
                    "pod": m.pod,
                    "pod_uid": m.pod_uid,
                    "customer": m.customer,
                    "node": m.node,
                    "gpus": m.gpus,
                    "running": bool(m.rate),
                    "gpu_seconds": round(m.reading(now), 3),
                }
            )
        return out

    # == events ==================================================================================
    def event(self, obj: Obj, etype: str, reason: str, message: str, component: str) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        self._event_seq += 1
        at = self.stamp()
        name = f"{meta['name']}.{self._event_seq:016x}"
        self.store.put(
            "events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": ns, "uid": self._uid(), "creationTimestamp": at},
                "involvedObject": {
                    "kind": obj["kind"],
                    "name": meta["name"],
                    "namespace": meta.get("namespace", ""),
                    "uid": meta.get("uid", ""),
                    "apiVersion": obj["apiVersion"],
                },
                "reason": reason,
                "message": message,
                "type": etype,
                "count": 1,
                "firstTimestamp": at,
                "lastTimestamp": at,
                "source": {
                    "component": component,
                    **(
                        {"host": obj["spec"]["nodeName"]}
                        if obj["kind"] == "Pod" and obj["spec"].get("nodeName")
                        else {}
                    ),
                },
                "reportingComponent": component,
                "reportingInstance": "",
            },
        )

    # == time passing ============================================================================
    def tick(self) -> None:
        """Controllers that act on elapsed time: crash-loop restarts, taint-based eviction, event TTL."""
        now = self.now()
        for fault in list(self.faults.values()):
            elapsed = (now - fault.started_at).total_seconds()
            if fault.kind in (FaultKind.CRASHLOOP, FaultKind.OOMKILL) and fault.namespace and fault.pod:
                pod = self.store.get("pods", fault.namespace, fault.pod)
                if pod is not None and pod["status"].get("containerStatuses"):
                    want = 1 + _restarts_after(elapsed)
                    cs = pod["status"]["containerStatuses"][0]
                    base = self._restart_base.get(fault.id, 0)
                    if cs.get("restartCount", 0) < base + want:
                        new = thaw(pod)
                        new["status"]["containerStatuses"][0]["restartCount"] = base + want
                        self.store.put("pods", new)
            if (
                fault.kind in (FaultKind.NOT_READY, FaultKind.PARTITION)
                and fault.node
                and elapsed >= TOLERATION_SECONDS
            ):
                for pod in self.store.pods_on_node(fault.node):
                    if pod["metadata"]["namespace"] != AGENT_NAMESPACE and not is_terminating(pod):
                        self.event(
                            pod,
                            "Normal",
                            "TaintManagerEviction",
                            f"Marking for deletion Pod {pod['metadata']['namespace']}/{pod['metadata']['name']}",
                            "taint-eviction-controller",
                        )
                        self.delete_pod(
                            pod["metadata"]["namespace"],
                            pod["metadata"]["name"],
                            grace=None,
                            reason="TaintManagerEviction",
                        )
        cutoff = ts(now - timedelta(hours=1))
        for ev in [e for e in self.store.items("events") if e["lastTimestamp"] < cutoff]:
            self.store.delete("events", ev["metadata"]["namespace"], ev["metadata"]["name"])

    def advance(self, seconds: float) -> datetime:
        self.clock.advance(seconds)
        self.tick()
        return self.now()

    # == truth (for evals, never for the agent) ==================================================
    def truth(self) -> dict[str, Any]:
        pools: dict[str, dict[str, int]] = {}
        for node in self.store.items("nodes"):
            name = node["metadata"]["name"]
            pool = node["metadata"]["labels"][POOL_LABEL]
            p = pools.setdefault(
                pool,
                {
                    "nodes": 0,
                    "gpus": 0,
                    "gpus_out_of_service": 0,
                    "nodes_cordoned": 0,
                    "nodes_not_ready": 0,
                    "nodes_tainted": 0,
                },
            )
            p["nodes"] += 1
            p["gpus"] += self.spec.gpus_per_node
            down = self._node_down(name)
            cordoned = bool(node["spec"].get("unschedulable"))
            p["nodes_cordoned"] += cordoned
            p["nodes_not_ready"] += down
            p["nodes_tainted"] += any(
                t["key"].startswith("supply-agent.io/") for t in node["spec"].get("taints") or []
            )
            if down or cordoned:
                p["gpus_out_of_service"] += self.spec.gpus_per_node
            else:
                p["gpus_out_of_service"] += len(self._unhealthy.get(name, set()))
        not_ready_pods = []
        for pod in self.store.items("pods"):
            ns = pod["metadata"]["namespace"]
            if ns == AGENT_NAMESPACE:
                continue
            if pod["status"].get("phase") != "Running" or not is_ready(pod) or is_terminating(pod):
                not_ready_pods.append(
                    {
                        "namespace": ns,
                        "pod": pod["metadata"]["name"],
                        "customer": (pod["metadata"].get("labels") or {}).get(CUSTOMER_LABEL, ""),
                        "phase": "Terminating" if is_terminating(pod) else pod["status"].get("phase"),
                    }
                )
        customers = sorted({d["customer"] for d in self.disruptions + not_ready_pods if d["customer"]})
        return {
            "now": self.stamp(),
            "pools": pools,
            "gpus_out_of_service": sum(p["gpus_out_of_service"] for p in pools.values()),
            "pods_disrupted": self.disruptions,
            "pods_not_ready": not_ready_pods,
            "customers_affected": customers,
            "faults": [f.model_dump(mode="json") for f in self.faults.values()],
            "writes": self.writes,
        }

    def record_write(
        self, verb: str, resource: str, namespace: str, name: str, subresource: str, dry_run: bool, code: int
    ) -> None:
        self.writes.append(
            {
                "at": self.stamp(),
                "verb": verb,
                "resource": resource,
                "namespace": namespace,
                "name": name,
                "subresource": subresource,
                "dry_run": dry_run,
                "code": code,
            }
        )

    # == snapshot ================================================================================
    def snapshot(self) -> dict[str, Any]:
        return {
            "format": "supply-agent-fleet/v1",
            "spec": self.spec.model_dump(),
            "clock": self.clock.to_dict(),
            "rv": self.store.rv,
            "objects": self.store.dump(),
            "faults": [f.model_dump(mode="json") for f in self.faults.values()],
            "meters": [asdict(m) for m in self.meters.values()],
            "nvml": {n: sim.to_dict() for n, (sim, _) in self._agents.items()},
            "unhealthy": {n: sorted(s) for n, s in self._unhealthy.items() if s},
            "disruptions": self.disruptions,
            "writes": self.writes,
            "logs": self.logs,
            "seq": [self._fault_seq, self._event_seq],
            "restart_base": self._restart_base,
            "rng": self.rng.getstate()[1],
        }

    @classmethod
    def restore(cls, data: dict[str, Any], clock_mode: str | None = None) -> Fleet:
        if data.get("format") != "supply-agent-fleet/v1":
            raise ValueError(
                f"not a fleet snapshot (format {data.get('format')!r}, expected 'supply-agent-fleet/v1')"
            )
        clock = SimClock.from_dict(data["clock"])
        if clock_mode in ("real", "manual"):
            clock.mode = clock_mode  # type: ignore[assignment]
        fleet = cls(FleetSpec(**data["spec"]), clock)
        fleet.rng.setstate((3, tuple(data["rng"]), None))
        for kind, objs in data["objects"].items():
            fleet.store.load(kind, objs)
        fleet.store.rv = max(fleet.store.rv, int(data["rv"]))
        fleet.faults = {f["id"]: Fault(**f) for f in data["faults"]}
        fleet.meters = {m["id"]: Meter(**m) for m in data["meters"]}
        fleet.disruptions, fleet.writes, fleet.logs = data["disruptions"], data["writes"], data["logs"]
        fleet._fault_seq, fleet._event_seq = data["seq"]
        fleet._restart_base = dict(data.get("restart_base", {}))
        fleet._unhealthy = {n: set(v) for n, v in data["unhealthy"].items()}
        for node in fleet.store.items("nodes"):
            fleet._gpu_owner[node["metadata"]["name"]] = [None] * fleet.spec.gpus_per_node
        for pod in fleet.store.items("pods"):
            node_name = pod["spec"].get("nodeName")
            indices = (pod["metadata"].get("annotations") or {}).get(GPU_INDICES_ANNOTATION)
            if node_name and indices and not (is_terminating(pod) and False):
                for i in map(int, indices.split(",")):
                    fleet._gpu_owner[node_name][i] = (
                        f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
                    )
            if pod["status"].get("phase") == "Pending":
                fleet._pending[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = None
        for name in fleet._gpu_owner:
            fleet._rebucket(name)
        for name, state in data["nvml"].items():
            sim = SimNvml.from_dict(state)
            collector = NvmlCollector(name, nvml=sim, clock=fleet.now)
            collector.start()
            fleet._agents[name] = (sim, collector)
        return fleet

    def pod_log(self, ns: str, name: str, container: str | None, tail: int | None, previous: bool) -> str:
        pod = self.store.get("pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        if container and container not in names:
            raise FleetError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        if pod["status"].get("phase") == "Pending":
            raise FleetError(
                400,
                "BadRequest",
                f'container "{names[0]}" in pod "{name}" is waiting to start: ContainerCreating',
            )
        lines = list(_generated_log(pod, previous, self.now()))
        lines += self.logs.get(f"{ns}/{name}", [])
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        return "".join(line + "\n" for line in lines)

    def append_log(self, ns: str, name: str, lines: Iterable[str]) -> None:
        if self.store.get("pods", ns, name) is None:
            raise not_found("pods", name)
        self.logs.setdefault(f"{ns}/{name}", []).extend(lines)


def _restarts_after(elapsed: float) -> int:
    """Kubelet crash-loop back-off: 10 s doubling to a 300 s cap between restarts."""
    count, t, delay = 0, 0.0, 10.0
    while t + delay <= elapsed:
        t += delay
        count += 1
        delay = min(delay * 2, 300.0)
    return count


def _generated_log(pod: Obj, previous: bool, now: datetime) -> Iterable[str]:
    """Plausible, deterministic container output for a pod."""
    meta = pod["metadata"]
    if meta["namespace"] == AGENT_NAMESPACE:
        yield f"{meta['creationTimestamp']} node-agent: serving GPU health on :{AGENT_PORT} (simulated NVML)"
        return
    cs = (pod["status"].get("containerStatuses") or [{}])[0]
    last = (cs.get("lastState") or {}).get("terminated")
    if previous or (cs.get("state") or {}).get("waiting"):
        if last and last.get("reason") == "OOMKilled":
            yield f"{last['startedAt']} loading dataset shard 17/64 into pinned memory"
            yield f"{last['finishedAt']} Killed"
            return
        if last:
            yield f"{last['startedAt']} Traceback (most recent call last):"
            yield f'{last["startedAt"]}   File "/app/train.py", line 211, in <module>'
            yield f"{last['finishedAt']} RuntimeError: CUDA error: an illegal memory access was encountered"
            return
    start = datetime.fromisoformat(
        pod["status"].get("startTime", meta["creationTimestamp"]).replace("Z", "+00:00")
    )
    seed = int(hashlib.sha256(meta["uid"].encode()).hexdigest()[:8], 16)
    steps = max(1, min(int((now - start).total_seconds() // 30) + 1, 50))
    for i in range(steps):
        at = ts(start + timedelta(seconds=30 * i))
        loss = 2.5 / (1 + 0.05 * (i + seed % 100))
        yield f"{at} step={1000 * (seed % 7) + 100 * i} loss={loss:.4f} tokens/s={9000 + seed % 3000}"
