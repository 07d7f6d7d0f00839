"""What a fleet is made of, before any controller runs: its shape (`FleetSpec`), the label and annotation
names its objects carry, the API error every controller raises, and the pod predicates they all share.
(What each XID does to a GPU and its job is `sandbox.fleet.xids`, from NVIDIA's Xid catalogue.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sandbox.fleet.store import Obj

POOL_LABEL = "supply-agent.io/pool"
RACK_LABEL = "supply-agent.io/rack"
# The leaf (top-of-rack) switch a node's network hangs off. Leaves are not racks: each serves
# NODES_PER_SWITCH nodes offset by half a leaf, so every other leaf spans the boundary of two racks.
SWITCH_LABEL = "supply-agent.io/switch"
# The label NVIDIA's GPU feature discovery publishes for the installed driver (the full version).
DRIVER_LABEL = "nvidia.com/cuda.driver-version.full"
# Every node's driver before any rollout: the version the simulated NVML reports (less its "-sim").
DEFAULT_DRIVER_VERSION = "550.90.07"
NODES_PER_RACK = 16
NODES_PER_SWITCH = 8
CUSTOMER_LABEL = "supply-agent.io/customer"
GPU_INDICES_ANNOTATION = "supply-agent.io/gpu-indices"
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
PRODUCT_LABEL = "nvidia.com/gpu.product"
# The tenant tier of a node's capacity (a provider's own label): the first pool is reserved capacity, the
# rest on demand, so that a node group can tell them apart.
TIER_LABEL = "supply-agent.io/tenant-tier"
GPU = "nvidia.com/gpu"
AGENT_NAMESPACE = "supply-agent-system"
AGENT_NAME = "node-agent"
# The GPU Operator's dcgm-exporter DaemonSet (FleetSpec.dcgm_exporter), in the operator's namespace.
EXPORTER_NAMESPACE = "gpu-operator"
EXPORTER_NAME = "nvidia-dcgm-exporter"
AGENT_PORT = 9400
TOLERATION_SECONDS = 300  # the default not-ready/unreachable NoExecute toleration of a pod

_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


class FleetError(Exception):
    """An API-level failure: rendered as a Kubernetes ``Status`` with this code and reason."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def not_found(kind: str, name: str, group: str = "") -> FleetError:
    resource = f"{kind}.{group}" if group else kind
    return FleetError(404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": kind})


class JobSetSpec(BaseModel):
    """One training JobSet the fleet starts with (an incident's gang job): made before any other
    workload, one pod on each of ``nodes`` whole nodes of pool ``pool``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    customer: int = Field(0, ge=0, description="Which of the fleet's customers runs it (their index).")
    pool: int = Field(0, ge=0, description="The pool's index.")
    nodes: int = Field(ge=1, le=512)
    checkpoint_every_s: int = Field(
        1800, ge=0, description="Its checkpoint cadence (0: it never checkpoints)."
    )
    since_checkpoint_s: int = Field(
        0, ge=0, description="How long before the fleet starts the job last checkpointed (or began)."
    )
    max_restarts: int = Field(3, ge=0, description="spec.failurePolicy.maxRestarts")
    tier: str | None = Field(
        None,
        description="Its pods select this tenant tier (supply-agent.io/tenant-tier), as Kueue writes the "
        "nodeLabels of the ResourceFlavor it admitted the job under into the job's pods.",
    )


class LwsSpec(BaseModel):
    """One serving LeaderWorkerSet the fleet starts with: ``groups`` groups of ``size`` pods, one pod on
    each whole node of pool ``pool``, made after the JobSets and before any other workload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    customer: int = Field(0, ge=0, description="Which of the fleet's customers runs it (their index).")
    pool: int = Field(0, ge=0, description="The pool's index.")
    groups: int = Field(1, ge=1, le=256, description="spec.replicas: copies of the model.")
    size: int = Field(2, ge=1, le=64, description="spec.leaderWorkerTemplate.size: nodes of one copy.")


class FleetSpec(BaseModel):
    nodes: int = Field(12, ge=1, le=50_000)
    gpus_per_node: int = Field(8, ge=1, le=16)
    pools: int = Field(2, ge=1, le=64)
    seed: int = 0
    fill: float = Field(0.7, ge=0.0, le=1.0, description="Fraction of GPUs the tenant workloads request.")
    customers: int | None = Field(None, ge=1, description="Default: one per ten nodes, at least three.")
    jobsets: int = Field(
        0, ge=0, le=1000, description="Multi-node training JobSets (whole nodes each), made before the rest."
    )
    jobset_nodes: int = Field(4, ge=2, le=512, description="Nodes of each JobSet.")
    workloads: list[JobSetSpec] = Field(
        default_factory=list, description="JobSets named and sized, made before the generated ones."
    )
    leaderworkersets: list[LwsSpec] = Field(
        default_factory=list, description="Serving LeaderWorkerSets named and sized, made after the JobSets."
    )
    pdb_fraction: float = Field(0.5, ge=0.0, le=1.0, description="Fraction of deployments with a PDB.")
    reserved_nodes: int | None = Field(
        None, ge=0, description="Only the first pool's first N nodes are reserved capacity (None: all of it)."
    )
    dcgm_exporter: bool = Field(
        False, description="Also the GPU Operator's dcgm-exporter DaemonSet: one pod on every node."
    )


def rack_name(pool: str, index: int) -> str:
    """The rack of the ``index``-th node of ``pool``: NODES_PER_RACK consecutive nodes share one."""
    return f"{pool}-rack-{index // NODES_PER_RACK:03d}"


def switch_name(pool: str, index: int) -> str:
    """The leaf switch of the ``index``-th node of ``pool``: leaf k serves nodes 8k-4 .. 8k+3 (leaf 0 the
    first four), so leaf 2 serves the last four nodes of rack 0 and the first four of rack 1."""
    return f"{pool}-leaf-{(index + NODES_PER_SWITCH // 2) // NODES_PER_SWITCH:03d}"


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


@dataclass
class WorkloadLoss:
    """What one JobSet has lost so far, in GPU-seconds (see the module doc)."""

    gpus: int
    restarts: int = 0
    lost_work_gpu_s: float = 0.0  # work since the last checkpoint, thrown away by restarts
    idle_gpu_s: float = 0.0  # GPUs held idle while the JobSet could not run (closed stalls)
    stalled_since: datetime | None = None  # the restart it has not run since (or its failure)
    failed: bool = False
    slow_gpu_s: float = 0.0  # GPU time lost to a slowed GPU: every GPU runs at the slowest one's pace
    slow_since_checkpoint_gpu_s: float = 0.0  # the part of it since the last checkpoint
    pace: float = 1.0  # the pace it has run at since ``paced_at``
    paced_at: datetime | None = None
