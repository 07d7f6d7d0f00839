"""The faults the sandbox fleet can inject, as data.

A fault record is enriched at injection time with the labels an alerting stack would see (pool,
region, GPU product and UUID, customer), so alert rendering is a pure function of the records.

A component fault (a rack's cooling or power, a leaf switch, a driver rollout) is recorded together with
the per-node faults it expands into (`EXPANSIONS`, each of an existing kind, with ``parent`` set to the
component fault's id): the world and the alert rules show a rack's cooling failure exactly as a thermal
fault on every GPU of its nodes, with nothing that names the rack but the nodes' own labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class FaultKind(StrEnum):
    XID = "xid"  # a GPU XID event (the code says which; XID 154 also the GPU recovery action)
    ECC = "ecc"  # uncorrectable ECC: DBE counters up, XID 48 (+63/64 row remap on A100+)
    OFF_BUS = "off-bus"  # the GPU fell off the PCIe bus: XID 79, NVML GpuIsLost
    THERMAL = "thermal"  # thermal slowdown: temperature high, thermal clock-event reasons set
    NOT_READY = "notready"  # the node died: kubelet silent, workloads gone, meters stopped
    PARTITION = "partition"  # the node is cut off from the control plane, workloads still run
    AGENT_DOWN = "agent-down"  # the node-agent (the GPU monitor) crash-loops; the GPUs are fine
    # dcgm-exporter keeps answering scrapes but exports no GPU series for the node (or one GPU): every
    # alert over those series stays silent, whatever the GPUs do; NVML, the node-agent and the cluster
    # still show the truth (`sandbox.fleet.alerts.rules.SILENCED_BY`).
    MONITOR_SILENT = "monitor-silent"
    DISK_PRESSURE = "disk-pressure"  # DiskPressure condition and taint
    CRASHLOOP = "crashloop"  # a tenant pod in CrashLoopBackOff
    OOMKILL = "oomkill"  # a tenant pod OOMKilled and restarting
    STUCK_TERMINATING = "stuck-terminating"  # a pod whose deletion the kubelet never confirms
    DOUBLE_METERING = "double-metering"  # a pod's GPU-seconds counted twice
    # Faults of a component several nodes share; each expands into per-node faults of the kinds above.
    RACK_COOLING = "rack-cooling"  # a rack's cooling failed: every GPU of its nodes thermally throttled
    RACK_POWER = "rack-power"  # a rack's power (or one PDU's) is lost: its nodes die
    SWITCH_DOWN = "switch-down"  # a leaf switch failed: the nodes behind it are cut off
    DRIVER_ROLLOUT = "driver-rollout"  # a bad GPU driver reached some nodes: every GPU raises one XID


NODE_FAULTS = frozenset(
    {
        FaultKind.XID,
        FaultKind.ECC,
        FaultKind.OFF_BUS,
        FaultKind.THERMAL,
        FaultKind.NOT_READY,
        FaultKind.PARTITION,
        FaultKind.AGENT_DOWN,
        FaultKind.MONITOR_SILENT,
        FaultKind.DISK_PRESSURE,
    }
)
GPU_FAULTS = frozenset({FaultKind.XID, FaultKind.ECC, FaultKind.OFF_BUS, FaultKind.THERMAL})
# Node faults that may name one GPU of the node (else they cover all of its GPUs).
OPTIONAL_GPU_FAULTS = frozenset({FaultKind.MONITOR_SILENT})
POD_FAULTS = frozenset(
    {FaultKind.CRASHLOOP, FaultKind.OOMKILL, FaultKind.STUCK_TERMINATING, FaultKind.DOUBLE_METERING}
)

Target = Literal["rack", "switch", "nodes"]
# The version a driver rollout installs when the fault names none, and the XID its GPUs then raise: XID 119
# (GSP RPC timeout; the catalogue's investigatory action is INVESTIGATE_SW), which GSP-firmware drivers
# raised on every GPU they ran on (open-gpu-kernel-modules #446, fixed in 525.105.17).
DEFAULT_ROLLOUT_DRIVER = "560.35.03"
DEFAULT_ROLLOUT_XID = 119


@dataclass(frozen=True, slots=True)
class Expansion:
    """What a component fault is on each of its nodes: a fault of kind ``each`` on the node (on every GPU
    of it when ``every_gpu``), so the world and the alert rules show exactly what the per-node fault
    shows. ``targets`` says how the fault names its nodes: a rack, a leaf switch, or a list of nodes."""

    each: FaultKind
    every_gpu: bool
    targets: tuple[Target, ...]
    why: str


EXPANSIONS: dict[FaultKind, Expansion] = {
    FaultKind.RACK_COOLING: Expansion(
        FaultKind.THERMAL,
        True,
        ("rack", "nodes"),
        "the rack's (or one cooling unit's) nodes run hot: every GPU in thermal slowdown",
    ),
    FaultKind.RACK_POWER: Expansion(
        FaultKind.NOT_READY,
        False,
        ("rack", "nodes"),
        "the rack's (or one PDU's) nodes lose power: dead to the control plane and to Prometheus",
    ),
    FaultKind.SWITCH_DOWN: Expansion(
        FaultKind.PARTITION,
        False,
        ("switch",),
        "the nodes behind the leaf are up (their BMCs say so) but unreachable from the control plane",
    ),
    FaultKind.DRIVER_ROLLOUT: Expansion(
        FaultKind.XID,
        True,
        ("nodes",),
        "the nodes that took the new driver: a new driver-version label, the same XID on every GPU",
    ),
}
COMPONENT_FAULTS = frozenset(EXPANSIONS)


class Fault(BaseModel):
    """One injected fault, as the fleet records it."""

    id: str
    kind: FaultKind
    started_at: datetime
    node: str | None = None
    gpu: int | None = None
    code: int | None = Field(
        None, description="The XID code, for xid faults (and the XID an ECC/off-bus fault raised)."
    )
    recovery_action: str | None = Field(
        None,
        description="For xid faults: the GPU recovery action NVML reports after it (none, reset, "
        "node_reboot, drain_p2p, drain_and_reset, ...); XID 154's effect follows it.",
    )
    namespace: str | None = None
    pod: str | None = None
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="What an alerting stack would label the series with: pool, region, gpu_product, "
        "gpu_uuid, customer, deployment.",
    )
    detail: str = ""
    rack: str | None = Field(None, description="Component faults: the rack whose nodes it covers.")
    switch: str | None = Field(None, description="switch-down: the leaf switch that failed.")
    nodes: list[str] = Field(default_factory=list, description="Component faults: the nodes it covers.")
    driver: str | None = Field(None, description="driver-rollout: the driver version the nodes took.")
    previous_drivers: dict[str, str] = Field(
        default_factory=dict,
        description="driver-rollout: each node's driver version before it (clearing rolls back to it).",
    )
    parent: str | None = Field(
        None, description="A per-node fault a component fault expanded into: the component fault's id."
    )
