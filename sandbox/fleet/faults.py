"""The faults the sandbox fleet can inject, as data.

A fault record is enriched at injection time with the labels an alerting stack would see (pool,
region, GPU product and UUID, customer), so alert rendering is a pure function of the records.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class FaultKind(StrEnum):
    XID = "xid"  # a GPU XID event (the code says which; XID 154 also the GPU recovery action)
    ECC = "ecc"  # uncorrectable ECC: DBE counters up, XID 48 (+63/64 row remap on A100+)
    OFF_BUS = "off-bus"  # the GPU fell off the PCIe bus: XID 79, NVML GpuIsLost
    THERMAL = "thermal"  # thermal slowdown: temperature high, thermal clock-event reasons set
    NOT_READY = "notready"  # the node died: kubelet silent, workloads gone, meters stopped
    PARTITION = "partition"  # the node is cut off from the control plane, workloads still run
    AGENT_DOWN = "agent-down"  # the node-agent (the GPU monitor) crash-loops; the GPUs are fine
    DISK_PRESSURE = "disk-pressure"  # DiskPressure condition and taint
    CRASHLOOP = "crashloop"  # a tenant pod in CrashLoopBackOff
    OOMKILL = "oomkill"  # a tenant pod OOMKilled and restarting
    STUCK_TERMINATING = "stuck-terminating"  # a pod whose deletion the kubelet never confirms
    DOUBLE_METERING = "double-metering"  # a pod's GPU-seconds counted twice


NODE_FAULTS = frozenset(
    {
        FaultKind.XID,
        FaultKind.ECC,
        FaultKind.OFF_BUS,
        FaultKind.THERMAL,
        FaultKind.NOT_READY,
        FaultKind.PARTITION,
        FaultKind.AGENT_DOWN,
        FaultKind.DISK_PRESSURE,
    }
)
GPU_FAULTS = frozenset({FaultKind.XID, FaultKind.ECC, FaultKind.OFF_BUS, FaultKind.THERMAL})
POD_FAULTS = frozenset(
    {FaultKind.CRASHLOOP, FaultKind.OOMKILL, FaultKind.STUCK_TERMINATING, FaultKind.DOUBLE_METERING}
)


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
