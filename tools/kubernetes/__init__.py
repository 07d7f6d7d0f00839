"""Kubernetes tools over the official client (``client``) and what they return (``models``)."""

from tools.kubernetes.client import (
    CUSTOMER_LABEL,
    DEFAULT_READ_BUDGET_S,
    DEFAULT_TIMEOUT,
    LOG_BYTES_MAX,
    LOG_TAIL_MAX,
    POOL_LABEL,
    TAINT_PREFIX,
    KubeTools,
    ToolError,
)
from tools.kubernetes.models import (
    BlockedPod,
    Condition,
    DeploymentInfo,
    DrainResult,
    EventInfo,
    NodeInfo,
    PdbInfo,
    PodInfo,
    Taint,
    UntrustedText,
    WriteResult,
)

__all__ = [
    "CUSTOMER_LABEL",
    "DEFAULT_READ_BUDGET_S",
    "DEFAULT_TIMEOUT",
    "LOG_BYTES_MAX",
    "LOG_TAIL_MAX",
    "POOL_LABEL",
    "TAINT_PREFIX",
    "BlockedPod",
    "Condition",
    "DeploymentInfo",
    "DrainResult",
    "EventInfo",
    "KubeTools",
    "NodeInfo",
    "PdbInfo",
    "PodInfo",
    "Taint",
    "ToolError",
    "UntrustedText",
    "WriteResult",
]
