"""A SIMULATED NVML: the subset of nvidia-ml-py (`pynvml`) that `tools.nvml.NvmlCollector` calls.

This is not NVML and talks to no GPU. It exists so the sandbox fleet can run the real collector over
pretend GPUs and inject faults (XIDs, uncorrectable ECC, a GPU off the bus, thermal slowdown, the GPU
recovery action XID 154 announces). It keeps pynvml's names, signatures, return types (field values are
the real `pynvml.c_nvmlFieldValue_t`) and exceptions (the real `pynvml.NVMLError` subclasses), and
NVML's event semantics: an event set only receives events emitted after a device was registered on it,
and `nvmlEventSetWait_v2` raises `NVMLError_Timeout` when nothing is queued (it never sleeps).

One instance is one node's NVML; it is cheap (a few small objects per GPU) so a fleet can create one
lazily for each of 10,000 nodes. `SIMULATED = True` and the driver version ends in "-sim", so a report
built over it says so.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import pynvml

# Event types a data-centre GPU supports (what nvmlDeviceGetSupportedEventTypes reports on an H100).
SUPPORTED_EVENTS = (
    pynvml.nvmlEventTypeSingleBitEccError
    | pynvml.nvmlEventTypeDoubleBitEccError
    | pynvml.nvmlEventTypePState
    | pynvml.nvmlEventTypeXidCriticalError
    | pynvml.nvmlEventTypeClock
)
THERMAL_BITS = pynvml.nvmlClocksEventReasonHwThermalSlowdown | pynvml.nvmlClocksEventReasonSwThermalSlowdown
THERMAL_TEMPERATURE_C = 92
# The SM clock: an H100 SXM's maximum (nvmlDeviceGetMaxClockInfo, NVML_CLOCK_SM), and what a thermal
# slowdown holds it at here (60% of it): a synchronous job runs at its slowest GPU's pace.
MAX_SM_CLOCK_MHZ = 1980
THERMAL_SM_CLOCK_MHZ = 1188
NOT_A_MIG_INSTANCE = 0xFFFFFFFF
EVENT_QUEUE_LIMIT = 1024
_UUID_NAMESPACE = uuid.UUID("5f1d3c1e-7a57-4c52-9b1e-6e7f2a9d0c11")  # fixed: UUIDs must be stable


def _error(code: int) -> pynvml.NVMLError:
    # NVMLError.__new__ maps the code to its real subclass (NVMLError_Timeout, NVMLError_GpuIsLost, ...).
    return pynvml.NVMLError(code)


def nvlink_count(product: str) -> int:
    """NVLinks of a product: 18 on H100/H200/B200 SXM, 12 on A100 SXM, none on PCIe cards."""
    p = product.upper()
    if "PCIE" in p:
        return 0
    if any(k in p for k in ("H100", "H200", "B200", "GB200")):
        return 18
    if "A100" in p:
        return 12
    return 0


def remap_supported(product: str) -> bool:
    """Row remapping exists from Ampere (A100) on; older data-centre GPUs retire pages instead."""
    p = product.upper()
    return not any(k in p for k in ("V100", "P100", "T4", "K80", "P40", "P4"))


@dataclass(slots=True)
class SimGpu:
    """The simulated state of one GPU."""

    index: int
    uuid: str
    name: str
    temperature_c: int
    base_temperature_c: int
    ecc_volatile_uncorrected: int = 0
    ecc_aggregate_uncorrected: int = 0
    remap_corrected: int = 0
    remap_uncorrected: int = 0
    remap_pending: bool = False
    remap_failure: bool = False
    clock_event_mask: int = 0
    sm_clock_mhz: int = MAX_SM_CLOCK_MHZ
    lost: bool = False
    recovery_action: int = pynvml.NVML_GPU_RECOVERY_ACTION_NONE  # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
    nvlink_active: list[bool] = field(default_factory=list)
    ecc_enabled: bool = True
    remap_supported: bool = True
    supported_events: int = SUPPORTED_EVENTS


@dataclass(frozen=True, slots=True)
class SimHandle:
    """A device handle (pynvml's is a ctypes pointer; the collector only needs it hashable and stable)."""

    index: int


@dataclass(slots=True)
class SimEventData:
    """Shaped like `pynvml.c_nvmlEventData_t`; `device` is the SimHandle the event came from."""

    device: SimHandle
    eventType: int
    eventData: int
    gpuInstanceId: int = NOT_A_MIG_INSTANCE
    computeInstanceId: int = NOT_A_MIG_INSTANCE


class SimEventSet:
    """An event set: which devices it listens to (index -> event mask) and what it has been sent."""

    __slots__ = ("freed", "queue", "registered")

    def __init__(self) -> None:
        self.registered: dict[int, int] = {}
        # Bounded like NVML's own event buffer: an unpolled set drops the oldest events, not memory.
        self.queue: deque[SimEventData] = deque(maxlen=EVENT_QUEUE_LIMIT)
        self.freed = False


class SimNvml:
    """One node's simulated NVML; call its nvml* methods exactly as you would pynvml's functions."""

    SIMULATED = True
    DRIVER_VERSION = "550.90.07-sim"
    NVML_VERSION = "12.550.90.07-sim"

    # The constants and exceptions the collector reads off the module, taken from the real pynvml.
    NVMLError = pynvml.NVMLError
    NVMLError_Timeout = pynvml.NVMLError_Timeout
    NVMLError_GpuIsLost = pynvml.NVMLError_GpuIsLost
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_InvalidArgument = pynvml.NVMLError_InvalidArgument
    NVMLError_Uninitialized = pynvml.NVMLError_Uninitialized
    NVML_ERROR_TIMEOUT = pynvml.NVML_ERROR_TIMEOUT
    NVML_ERROR_GPU_IS_LOST = pynvml.NVML_ERROR_GPU_IS_LOST
    NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_INVALID_ARGUMENT = pynvml.NVML_ERROR_INVALID_ARGUMENT
    NVML_ERROR_UNINITIALIZED = pynvml.NVML_ERROR_UNINITIALIZED
    NVML_FEATURE_DISABLED = pynvml.NVML_FEATURE_DISABLED
    NVML_FEATURE_ENABLED = pynvml.NVML_FEATURE_ENABLED
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_MEMORY_ERROR_TYPE_CORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    NVML_VOLATILE_ECC = pynvml.NVML_VOLATILE_ECC
    NVML_AGGREGATE_ECC = pynvml.NVML_AGGREGATE_ECC
    NVML_FI_DEV_GET_GPU_RECOVERY_ACTION = pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
    NVML_VALUE_TYPE_UNSIGNED_INT = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    NVML_GPU_RECOVERY_ACTION_NONE = pynvml.NVML_GPU_RECOVERY_ACTION_NONE
    NVML_GPU_RECOVERY_ACTION_GPU_RESET = pynvml.NVML_GPU_RECOVERY_ACTION_GPU_RESET
    NVML_GPU_RECOVERY_ACTION_NODE_REBOOT = pynvml.NVML_GPU_RECOVERY_ACTION_NODE_REBOOT
    NVML_GPU_RECOVERY_ACTION_DRAIN_P2P = pynvml.NVML_GPU_RECOVERY_ACTION_DRAIN_P2P
    NVML_GPU_RECOVERY_ACTION_DRAIN_AND_RESET = pynvml.NVML_GPU_RECOVERY_ACTION_DRAIN_AND_RESET
    nvmlEventTypeSingleBitEccError = pynvml.nvmlEventTypeSingleBitEccError
    nvmlEventTypeDoubleBitEccError = pynvml.nvmlEventTypeDoubleBitEccError
    nvmlEventTypeXidCriticalError = pynvml.nvmlEventTypeXidCriticalError
    nvmlClocksEventReasonSwThermalSlowdown = pynvml.nvmlClocksEventReasonSwThermalSlowdown
    nvmlClocksEventReasonHwThermalSlowdown = pynvml.nvmlClocksEventReasonHwThermalSlowdown

    __slots__ = ("_init_count", "_sets", "driver_version", "gpus")

    def __init__(self, gpus: list[SimGpu], driver_version: str = DRIVER_VERSION) -> None:
        self.gpus = gpus
        self.driver_version = driver_version
        self._init_count = 0
        self._sets: list[SimEventSet] = []

    @classmethod
    def healthy(cls, node: str, count: int, product: str, seed: int, driver: str | None = None) -> SimNvml:
        """`count` healthy GPUs of `product` with UUIDs stable per (node, index) and seeded temperatures,
        on ``driver`` (the node's driver-version label; default `DRIVER_VERSION`), reported with "-sim"."""
        rng = random.Random(f"{seed}:{node}")
        links = nvlink_count(product)
        remap = remap_supported(product)
        gpus = []
        for index in range(count):
            temperature = rng.randint(35, 55)
            gpus.append(
                SimGpu(
                    index=index,
                    uuid=f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{node}/{index}')}",
                    name=product,
                    temperature_c=temperature,
                    base_temperature_c=temperature,
                    nvlink_active=[True] * links,
                    remap_supported=remap,
                )
            )
        sim = cls(gpus)
        if driver:
            sim.set_driver_version(driver)
        return sim

    # snapshot -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The GPUs' state as plain data (event sets are process state and are not included)."""
        return {"gpus": [asdict(gpu) for gpu in self.gpus], "driver_version": self.driver_version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimNvml:
        """The inverse of `to_dict`; a collector must `start()` on the new instance to see events."""
        return cls(
            [SimGpu(**{**gpu, "nvlink_active": list(gpu["nvlink_active"])}) for gpu in data["gpus"]],
            str(data.get("driver_version") or cls.DRIVER_VERSION),
        )

    # faults --------------------------------------------------------------------------------------

    def inject_xid(
        self,
        index: int,
        code: int,
        gpu_instance_id: int | None = None,
        compute_instance_id: int | None = None,
    ) -> None:
        """Emit an XID critical-error event from GPU `index` (optionally from a MIG instance)."""
        self._emit(
            index,
            pynvml.nvmlEventTypeXidCriticalError,
            code,
            NOT_A_MIG_INSTANCE if gpu_instance_id is None else gpu_instance_id,
            NOT_A_MIG_INSTANCE if compute_instance_id is None else compute_instance_id,
        )

    def inject_ecc_uncorrectable(self, index: int, remap_failed: bool = False) -> None:
        """A double-bit ECC error: counters up, then XID 48 and 63 (row remap pending) or 64 (remap failed)."""
        gpu = self._gpu_state(index)
        gpu.ecc_volatile_uncorrected += 1
        gpu.ecc_aggregate_uncorrected += 1
        if remap_failed:
            # The row could not be remapped (no spare rows): nothing is pending, the failure flag is set.
            gpu.remap_failure = True
        else:
            gpu.remap_uncorrected += 1
            gpu.remap_pending = True
        self._emit(index, pynvml.nvmlEventTypeDoubleBitEccError, 0)
        self.inject_xid(index, 48)
        self.inject_xid(index, 64 if remap_failed else 63)

    def set_recovery_action(self, index: int, action: int) -> None:
        """Set the nvmlDeviceGpuRecoveryAction_t NVML_FI_DEV_GET_GPU_RECOVERY_ACTION reads for `index`."""
        self._gpu_state(index).recovery_action = int(action)

    def change_recovery_action(self, index: int, action: int) -> None:
        """What the driver does when a GPU's recovery action changes: set it, then emit XID 154."""
        self.set_recovery_action(index, action)
        self.inject_xid(index, 154)

    def fall_off_bus(self, index: int) -> None:
        """XID 79, then every query of the GPU raises NVMLError_GpuIsLost."""
        self.inject_xid(index, 79)
        self._gpu_state(index).lost = True

    def set_thermal(self, index: int, on: bool) -> None:
        """Thermal slowdown on (92 C, HW and SW thermal clock-event reasons) or off (back to normal)."""
        gpu = self._gpu_state(index)
        if on:
            gpu.temperature_c = THERMAL_TEMPERATURE_C
            gpu.clock_event_mask |= THERMAL_BITS
            gpu.sm_clock_mhz = THERMAL_SM_CLOCK_MHZ
        else:
            gpu.temperature_c = gpu.base_temperature_c
            gpu.clock_event_mask &= ~THERMAL_BITS
            gpu.sm_clock_mhz = MAX_SM_CLOCK_MHZ

    def gpu_speed(self, index: int) -> float:
        """One GPU's pace: its SM clock against the maximum (a lost GPU: full, the fault's business)."""
        if not 0 <= index < len(self.gpus) or self.gpus[index].lost:
            return 1.0
        return self.gpus[index].sm_clock_mhz / MAX_SM_CLOCK_MHZ

    def speed(self) -> float:
        """The pace of the node's slowest GPU: its SM clock against the maximum (1.0 when none is slowed;
        a GPU that is lost runs nothing, and is the fault's business, not the pace's)."""
        return min((g.sm_clock_mhz / MAX_SM_CLOCK_MHZ for g in self.gpus if not g.lost), default=1.0)

    def reset(self) -> None:
        """Back to healthy, as after a GPU reset or node reboot: UUIDs and lifetime counters are kept.

        Volatile ECC counts, a pending remap (it is applied), a remap failure, thermal slowdown, a lost
        GPU, down NVLinks and the recovery action (back to none) all clear; aggregate ECC and remapped-row
        counts persist, as in the InfoROM. Queued events are dropped; registrations stay, so a running
        collector keeps receiving events.
        """
        for gpu in self.gpus:
            _healthy_again(gpu)
        for event_set in self._sets:
            event_set.queue.clear()

    def reset_gpu(self, index: int) -> None:
        """One GPU reset (``nvidia-smi -r -i``): `reset` for that GPU alone; its queued events are dropped."""
        _healthy_again(self._gpu_state(index))
        for event_set in self._sets:
            kept = [e for e in event_set.queue if e.device.index != index]
            event_set.queue.clear()
            event_set.queue.extend(kept)

    def set_driver_version(self, version: str) -> None:
        """The driver the node now runs (a rollout or a rollback), reported from the next `nvmlInit` on:
        a new kernel module means the processes using NVML restart."""
        self.driver_version = f"{version.removesuffix('-sim')}-sim" if version else self.DRIVER_VERSION

    # the pynvml API ------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._init_count += 1

    def nvmlShutdown(self) -> None:
        self._require_init()
        self._init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._require_init()
        return self.driver_version

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._require_init()
        # NVML ships with the driver: "12." and the driver's version, as on a real node.
        return (
            self.NVML_VERSION if self.driver_version == self.DRIVER_VERSION else f"12.{self.driver_version}"
        )

    def nvmlDeviceGetCount(self) -> int:
        self._require_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimHandle:
        self._require_init()
        if not 0 <= index < len(self.gpus):
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if self.gpus[index].lost:
            raise _error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return SimHandle(index)

    def nvmlDeviceGetIndex(self, handle: SimHandle) -> int:
        return self._device(handle).index

    def nvmlDeviceGetUUID(self, handle: SimHandle) -> str:
        return self._device(handle).uuid

    def nvmlDeviceGetName(self, handle: SimHandle) -> str:
        return self._device(handle).name

    def nvmlDeviceGetTemperature(self, handle: SimHandle, sensor: int) -> int:
        gpu = self._device(handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature_c

    def nvmlDeviceGetEccMode(self, handle: SimHandle) -> list[int]:
        gpu = self._device(handle)
        mode = pynvml.NVML_FEATURE_ENABLED if gpu.ecc_enabled else pynvml.NVML_FEATURE_DISABLED
        return [mode, mode]

    def nvmlDeviceGetTotalEccErrors(self, handle: SimHandle, errorType: int, counterType: int) -> int:
        gpu = self._device(handle)
        if not gpu.ecc_enabled:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if errorType == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return 0  # single-bit errors are not simulated
        if errorType != pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if counterType == pynvml.NVML_VOLATILE_ECC:
            return gpu.ecc_volatile_uncorrected
        if counterType == pynvml.NVML_AGGREGATE_ECC:
            return gpu.ecc_aggregate_uncorrected
        raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetRemappedRows(self, device: SimHandle) -> tuple[int, int, int, int]:
        gpu = self._device(device)
        if not gpu.remap_supported:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return (gpu.remap_corrected, gpu.remap_uncorrected, int(gpu.remap_pending), int(gpu.remap_failure))

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: SimHandle) -> int:
        return self._device(handle).clock_event_mask

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: SimHandle) -> int:
        return self._device(handle).clock_event_mask

    def nvmlDeviceGetClockInfo(self, handle: SimHandle, type: int) -> int:  # pynvml names it type
        gpu = self._device(handle)
        if type != pynvml.NVML_CLOCK_SM:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)  # only the SM clock is simulated
        return gpu.sm_clock_mhz

    def nvmlDeviceGetMaxClockInfo(self, handle: SimHandle, type: int) -> int:
        self._device(handle)
        if type != pynvml.NVML_CLOCK_SM:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return MAX_SM_CLOCK_MHZ

    def nvmlDeviceGetNvLinkState(self, device: SimHandle, link: int) -> int:
        gpu = self._device(device)
        if not gpu.nvlink_active:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if not 0 <= link < len(gpu.nvlink_active):
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return pynvml.NVML_FEATURE_ENABLED if gpu.nvlink_active[link] else pynvml.NVML_FEATURE_DISABLED

    def nvmlDeviceGetFieldValues(self, handle: SimHandle, fieldIds: list[Any]) -> Any:
        """As pynvml: an array of `c_nvmlFieldValue_t`, each with its own return code (a field the
        simulation does not have answers NotSupported in its value; only a bad or lost device raises)."""
        gpu = self._device(handle)
        values = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        for value, field_id in zip(values, fieldIds, strict=True):
            field, scope = field_id if isinstance(field_id, tuple) else (field_id, 0)
            value.fieldId, value.scopeId = field, scope
            if field == pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION:
                value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                value.value.uiVal = gpu.recovery_action
                value.nvmlReturn = pynvml.NVML_SUCCESS
            else:
                value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return values

    def nvmlDeviceGetSupportedEventTypes(self, handle: SimHandle) -> int:
        return self._device(handle).supported_events

    def nvmlEventSetCreate(self) -> SimEventSet:
        self._require_init()
        event_set = SimEventSet()
        self._sets.append(event_set)
        return event_set

    def nvmlDeviceRegisterEvents(self, handle: SimHandle, eventTypes: int, eventSet: SimEventSet) -> None:
        gpu = self._device(handle)
        if eventSet.freed or eventSet not in self._sets:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if eventTypes & ~gpu.supported_events:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        eventSet.registered[gpu.index] = eventSet.registered.get(gpu.index, 0) | eventTypes

    def nvmlEventSetWait_v2(self, eventSet: SimEventSet, timeoutms: int) -> SimEventData:
        self._require_init()
        if eventSet.freed:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        try:
            return eventSet.queue.popleft()
        except IndexError:
            # Never sleeps: in a simulation "nothing arrived within the timeout" is "nothing queued".
            raise _error(pynvml.NVML_ERROR_TIMEOUT) from None

    def nvmlEventSetWait(self, eventSet: SimEventSet, timeoutms: int) -> SimEventData:
        return self.nvmlEventSetWait_v2(eventSet, timeoutms)

    def nvmlEventSetFree(self, eventSet: SimEventSet) -> None:
        eventSet.freed = True
        eventSet.queue.clear()
        if eventSet in self._sets:
            self._sets.remove(eventSet)

    # internals -----------------------------------------------------------------------------------

    def _require_init(self) -> None:
        if self._init_count <= 0:
            raise _error(pynvml.NVML_ERROR_UNINITIALIZED)

    def _device(self, handle: Any) -> SimGpu:
        self._require_init()
        if not isinstance(handle, SimHandle) or not 0 <= handle.index < len(self.gpus):
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle.index]
        if gpu.lost:
            raise _error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def _gpu_state(self, index: int) -> SimGpu:
        if not 0 <= index < len(self.gpus):
            raise IndexError(f"GPU index {index} out of range: this node has {len(self.gpus)} GPUs")
        return self.gpus[index]

    def _emit(
        self,
        index: int,
        event_type: int,
        data: int,
        gpu_instance_id: int = NOT_A_MIG_INSTANCE,
        compute_instance_id: int = NOT_A_MIG_INSTANCE,
    ) -> None:
        self._gpu_state(index)
        for event_set in tuple(self._sets):  # a snapshot: another thread may create or free a set
            if event_set.registered.get(index, 0) & event_type:
                event_set.queue.append(
                    SimEventData(SimHandle(index), event_type, data, gpu_instance_id, compute_instance_id)
                )


def _healthy_again(gpu: SimGpu) -> None:
    """What a reset clears on one GPU (see `SimNvml.reset`)."""
    gpu.ecc_volatile_uncorrected = 0
    gpu.remap_pending = False
    gpu.remap_failure = False
    gpu.temperature_c = gpu.base_temperature_c
    gpu.clock_event_mask = 0
    gpu.sm_clock_mhz = MAX_SM_CLOCK_MHZ
    gpu.lost = False
    gpu.recovery_action = pynvml.NVML_GPU_RECOVERY_ACTION_NONE
    gpu.nvlink_active = [True] * len(gpu.nvlink_active)
