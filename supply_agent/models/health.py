"""The GPU health report a node-agent serves, built from NVML by ``tools.nvml``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

# NVML's GPU recovery action (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, nvmlDeviceGpuRecoveryAction_t), by name:
# what the driver says must happen before the GPU can be trusted again. XID 154 announces a change of it.
# "unknown" is a value newer than this vocabulary (the raw value is in `recovery_action_code`).
RecoveryAction = Literal[
    "none",
    "reset",
    "node_reboot",
    "drain_p2p",
    "drain_and_reset",
    "recover_imex_domain",
    "bus_reset",
    "system_reboot",
    "unknown",
]


class XidEvent(BaseModel):
    """One XID critical-error event, as delivered by the NVML event set."""

    gpu_index: int
    xid: int
    observed_at: datetime
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


class RemappedRows(BaseModel):
    """Row-remapping state (A100 and newer): counts, a remap awaiting a reset, a failed remap."""

    corrected: int
    uncorrected: int
    pending: bool
    failure: bool


class NvLinkState(BaseModel):
    """Whether one NVLink of a GPU is active."""

    link: int
    active: bool


class GpuHealth(BaseModel):
    """The health of one GPU; a field NVML could not read is None and named in `unsupported` or `errors`."""

    index: int
    uuid: str | None = None
    name: str | None = None
    lost: bool = Field(False, description="The GPU fell off the bus (NVML said GpuIsLost).")
    temperature_c: int | None = None
    ecc_mode_enabled: bool | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_uncorrected_aggregate: int | None = None
    remapped_rows: RemappedRows | None = None
    clock_event_mask: int | None = None
    clock_event_reasons: list[str] = Field(default_factory=list, description='e.g. "HwThermalSlowdown".')
    sm_clock_mhz: int | None = Field(
        None, description="The SM clock now (nvmlDeviceGetClockInfo, NVML_CLOCK_SM)."
    )
    max_sm_clock_mhz: int | None = Field(None, description="Its maximum (nvmlDeviceGetMaxClockInfo).")
    nvlinks: list[NvLinkState] | None = None
    recovery_action: RecoveryAction | None = Field(
        None,
        description="NVML's GPU recovery action: none, reset, node_reboot, drain_p2p, drain_and_reset, ... "
        "(None: not read; see `unsupported` and `errors`).",
    )
    recovery_action_code: int | None = Field(None, description="The raw nvmlDeviceGpuRecoveryAction_t value.")
    xid_events: list[XidEvent] = Field(default_factory=list)
    pods: list[str] | None = Field(
        None,
        description="The pods bound to this GPU (namespace/name), from the kubelet's pod-resources API "
        "(None: not read). Who is affected comes from here and the cluster, never from alert labels.",
    )
    unsupported: list[str] = Field(default_factory=list, description="Fields NVML said NotSupported.")
    errors: dict[str, str] = Field(default_factory=dict, description="Field name -> NVML error text.")


def pace(gpu: dict[str, object] | GpuHealth) -> float | None:
    """A GPU's pace: its SM clock over its maximum, at most 1.0 (None where either was not read). A
    synchronous job runs at its slowest GPU's pace."""
    g = gpu.model_dump() if isinstance(gpu, GpuHealth) else gpu
    now, top = g.get("sm_clock_mhz"), g.get("max_sm_clock_mhz")
    if not isinstance(now, int | float) or not isinstance(top, int | float) or top <= 0:
        return None
    return min(1.0, max(0.0, now / top))


class GpuHealthReport(BaseModel):
    """What a node-agent reports about its node's GPUs at one moment."""

    node: str
    collected_at: datetime
    nvml_available: bool
    simulated: bool = False
    driver_version: str | None = None
    nvml_version: str | None = None
    error: str | None = Field(None, description="A human sentence when NVML is unavailable or failed.")
    gpus: list[GpuHealth] = Field(default_factory=list)
