"""GPU health over NVML (nvidia-ml-py, module `pynvml`): the node side and the agent side.

The node side, `NvmlCollector` (:mod:`.collector`, with NVML's codes and bits in :mod:`.codes`), is what
`supply-agent node-agent` runs on each GPU node; the agent side, `gpu_health` (:mod:`.health`), reads a
node-agent's report through the Kubernetes API server. They share only the report's model
(`supply_agent.models.GpuHealthReport`), and run in different processes on different machines.
"""

from tools.nvml.codes import (
    CLOCK_EVENT_REASONS,
    ERROR_DRIVER_NOT_LOADED,
    ERROR_FUNCTION_NOT_FOUND,
    ERROR_GPU_IS_LOST,
    ERROR_INVALID_ARGUMENT,
    ERROR_LIB_RM_VERSION_MISMATCH,
    ERROR_LIBRARY_NOT_FOUND,
    ERROR_NO_PERMISSION,
    ERROR_NOT_SUPPORTED,
    ERROR_TIMEOUT,
    EVENT_TYPE_XID_CRITICAL_ERROR,
    FI_DEV_GET_GPU_RECOVERY_ACTION,
    GPU_RECOVERY_ACTIONS,
    NOT_A_MIG_INSTANCE,
    NVLINK_LINKS,
    decode_clock_event_reasons,
    decode_recovery_action,
    unavailable_sentence,
)
from tools.nvml.collector import NvmlCollector, collect_once
from tools.nvml.collector import _handle_key as _handle_key  # the tests check it directly
from tools.nvml.health import AGENT_NAMESPACE, AGENT_PORT, AGENT_SELECTOR, GpuHealthRead, gpu_health

__all__ = [
    "AGENT_NAMESPACE",
    "AGENT_PORT",
    "AGENT_SELECTOR",
    "CLOCK_EVENT_REASONS",
    "ERROR_DRIVER_NOT_LOADED",
    "ERROR_FUNCTION_NOT_FOUND",
    "ERROR_GPU_IS_LOST",
    "ERROR_INVALID_ARGUMENT",
    "ERROR_LIBRARY_NOT_FOUND",
    "ERROR_LIB_RM_VERSION_MISMATCH",
    "ERROR_NOT_SUPPORTED",
    "ERROR_NO_PERMISSION",
    "ERROR_TIMEOUT",
    "EVENT_TYPE_XID_CRITICAL_ERROR",
    "FI_DEV_GET_GPU_RECOVERY_ACTION",
    "GPU_RECOVERY_ACTIONS",
    "NOT_A_MIG_INSTANCE",
    "NVLINK_LINKS",
    "GpuHealthRead",
    "NvmlCollector",
    "collect_once",
    "decode_clock_event_reasons",
    "decode_recovery_action",
    "gpu_health",
    "unavailable_sentence",
]
