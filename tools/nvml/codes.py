"""NVML's side of the C ABI, as the collector needs it: return codes, event types, clock-event reason
bits, and what they mean in words.

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


def unavailable_sentence(exc: BaseException) -> str:
    """The sentence a report carries when NVML cannot be initialised."""
    reason = _UNAVAILABLE_REASONS.get(getattr(exc, "value", None), "NVML failed to initialise")
    return f"NVML is not available on this machine ({reason}): {exc}"
