"""NVML's side of the C ABI, as the collector needs it: return codes, event types, clock-event reason
bits, field ids and values (the GPU recovery action), and what they mean in words.

It exists apart from the collector because these are facts about NVML (stable across driver versions),
not about how this project reads it: the numbers are pynvml's, named once here.
"""

from __future__ import annotations

from typing import Any

# NVML return codes (part of the C ABI, so stable across driver versions).
ERROR_INVALID_ARGUMENT = 2
ERROR_NOT_SUPPORTED = 3
ERROR_NO_PERMISSION = 4
ERROR_DRIVER_NOT_LOADED = 9
ERROR_TIMEOUT = 10
ERROR_LIBRARY_NOT_FOUND = 12
ERROR_FUNCTION_NOT_FOUND = 13
ERROR_GPU_IS_LOST = 15
ERROR_LIB_RM_VERSION_MISMATCH = 18

EVENT_TYPE_XID_CRITICAL_ERROR = 0x8
# gpuInstanceId / computeInstanceId of an event that did not come from a MIG instance.
NOT_A_MIG_INSTANCE = 0xFFFFFFFF
# Hopper and Blackwell have 18 NVLinks; NVML answers InvalidArgument past the last one.
NVLINK_LINKS = 18

# nvmlDeviceGetFieldValues: the field id of the GPU's recovery action (recent drivers only: an older one
# answers NotSupported for it; it replaces the deprecated NVML_FI_DEV_RESET_STATUS = 226 and
# NVML_FI_DEV_DRAIN_AND_RESET_STATUS = 227), and, per nvmlValueType_t, the member of a field value's union
# that holds the value.
FI_DEV_GET_GPU_RECOVERY_ACTION = 230
VALUE_TYPE_MEMBERS: dict[int, str] = {
    0: "dVal",
    1: "uiVal",
    2: "ulVal",
    3: "ullVal",
    4: "sllVal",
    5: "siVal",
    6: "usVal",
}

# nvmlDeviceGpuRecoveryAction_t, by value, in the names the health report uses. NVIDIA's "Error Recovery
# and Response Flags": none = the GPU can be used again at once by a new process; reset = terminate every
# GPU process and reset the GPU; node_reboot = the OS may be inconsistent, reboot it; drain_p2p = end the
# processes doing peer-to-peer traffic, then read the action again; drain_and_reset = keep new work off,
# reset the GPU once it is drained. 5-7 are newer (IMEX domains, PCIe bus reset, system reboot).
GPU_RECOVERY_ACTIONS: dict[int, str] = {
    0: "none",
    1: "reset",
    2: "node_reboot",
    3: "drain_p2p",
    4: "drain_and_reset",
    5: "recover_imex_domain",
    6: "bus_reset",
    7: "system_reboot",
}
GPU_RECOVERY_ACTION_VALUES: dict[str, int] = {name: value for value, name in GPU_RECOVERY_ACTIONS.items()}

# nvmlClocksEventReason* bits (formerly nvmlClocksThrottleReason*), in bit order.
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x1, "GpuIdle"),
    (0x2, "ApplicationsClocksSetting"),
    (0x4, "SwPowerCap"),
    (0x8, "HwSlowdown"),
    (0x10, "SyncBoost"),
    (0x20, "SwThermalSlowdown"),
    (0x40, "HwThermalSlowdown"),
    (0x80, "HwPowerBrakeSlowdown"),
    (0x100, "DisplayClockSetting"),
    (0x200, "BoardLimit"),
    (0x400, "Reliability"),
)

_UNAVAILABLE_REASONS: dict[Any, str] = {
    ERROR_LIBRARY_NOT_FOUND: "no NVIDIA driver/GPU",
    ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded",
    ERROR_NO_PERMISSION: "no permission to open the NVIDIA devices",
    ERROR_LIB_RM_VERSION_MISMATCH: "the NVML library and the loaded kernel driver differ in version",
}


def decode_clock_event_reasons(mask: int) -> list[str]:
    """Names of the bits set in a clock-event-reasons mask; unknown bits as "Unknown(0x...)"."""
    names = [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]
    known = 0
    for bit, _ in CLOCK_EVENT_REASONS:
        known |= bit
    rest = mask & ~known
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"Unknown(0x{bit:x})")
            rest &= ~bit
        bit <<= 1
    return names


def decode_recovery_action(value: int) -> str:
    """The name of an NVML GPU recovery action; "unknown" for a value this binding does not know."""
    return GPU_RECOVERY_ACTIONS.get(int(value), "unknown")


def unavailable_sentence(exc: BaseException) -> str:
    """The sentence a report carries when NVML cannot be initialised."""
    reason = _UNAVAILABLE_REASONS.get(getattr(exc, "value", None), "NVML failed to initialise")
    return f"NVML is not available on this machine ({reason}): {exc}"
