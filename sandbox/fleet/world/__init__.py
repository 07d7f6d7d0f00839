"""The simulated GPU fleet: nodes in pools, tenant workloads, controllers, faults, meters and truth.

A package of one module per concept (see each module's docstring); `Fleet`, in `fleet.py`, composes
the controllers. Everything callers use is importable from here, as it was from the single module
this package replaced.
"""

from __future__ import annotations

from sandbox.fleet.world.fleet import Fleet
from sandbox.fleet.world.spec import (
    AGENT_NAME,
    AGENT_NAMESPACE,
    AGENT_PORT,
    CUSTOMER_LABEL,
    GPU,
    GPU_INDICES_ANNOTATION,
    POOL_LABEL,
    PRODUCT_LABEL,
    RACK_LABEL,
    REGION_LABEL,
    TOLERATION_SECONDS,
    ZONE_LABEL,
    FleetError,
    FleetSpec,
    Meter,
    is_ready,
    is_terminating,
    not_found,
)

__all__ = [
    "AGENT_NAME",
    "AGENT_NAMESPACE",
    "AGENT_PORT",
    "CUSTOMER_LABEL",
    "GPU",
    "GPU_INDICES_ANNOTATION",
    "POOL_LABEL",
    "PRODUCT_LABEL",
    "RACK_LABEL",
    "REGION_LABEL",
    "TOLERATION_SECONDS",
    "ZONE_LABEL",
    "Fleet",
    "FleetError",
    "FleetSpec",
    "Meter",
    "is_ready",
    "is_terminating",
    "not_found",
]
