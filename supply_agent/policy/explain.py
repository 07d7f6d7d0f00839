"""Which limits hold on one node, and why: its node group (the first of ``_global.yaml``'s
``node_groups`` whose match its labels meet) and each blast-radius and workload limit as the gate
applies it there, fractions also in nodes ("10% of 288 nodes is 28"), and the group's own hourly rates,
with where each value comes from.

It exists apart from the gate so that a person can ask before anything happens (``supply-agent
playbooks explain``); the gate applies the same ``GlobalLimits.for_group``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from supply_agent.policy.limits import FractionLimit, GlobalLimits, NodeGroup, SoftHardLimit


class LimitRow(BaseModel):
    name: str  # "blast_radius.gpus_out"
    fleet: str  # the fleet-wide value, as the gate reads it
    here: str  # the value on this node
    source: str  # "_global.yaml" or "node group NAME"


class Explanation(BaseModel):
    labels: dict[str, str]
    group: str | None
    why: str
    rows: list[LimitRow]


def _value(limit: Any, size: int | None) -> str:
    if isinstance(limit, FractionLimit):
        text = f"soft {limit.soft:.0%}, hard {limit.hard:.0%}"
        caps = [
            f"{k} {v}"
            for k, v in (("soft_max", limit.soft_max), ("hard_max", limit.hard_max))
            if v is not None
        ]
        if caps:
            text += f" ({', '.join(caps)} nodes)"
        if size:
            soft, hard = limit.in_nodes(size)
            text += f": of {size:,} nodes, soft {soft:,}, hard {hard:,}"
        return text
    if isinstance(limit, SoftHardLimit):
        return f"soft {limit.soft:g}, hard {limit.hard:g}"
    return str(limit).lower() if isinstance(limit, bool) else str(limit)


def _sizes(name: str, pool_size: int | None, fleet_size: int | None) -> int | None:
    if name.endswith("pool_cordoned"):
        return pool_size
    if name.endswith("fleet_cordoned"):
        return fleet_size
    return None


def explain(
    limits: GlobalLimits, labels: dict[str, str], pool_size: int | None = None, fleet_size: int | None = None
) -> Explanation:
    """The limits on a node with these labels (pool, gpu_model, tenant_tier), in a pool of
    ``pool_size`` nodes and a fleet of ``fleet_size`` (when known: fractions are then shown in nodes)."""
    group: NodeGroup | None = limits.group_for(labels)
    here = limits.for_group(group)
    if group is None:
        names = ", ".join(g.name for g in limits.node_groups) or "none are defined"
        why = f"no node group matches ({names}): the fleet-wide limits"
    else:
        why = f"node group {group.name}: {group.match.model_dump(exclude_defaults=True)}" + (
            f"; {group.source}" if group.source else ""
        )
    rows = []
    for part in ("blast_radius", "workloads"):
        fleet_part, here_part = getattr(limits, part), getattr(here, part)
        for field in type(fleet_part).model_fields:
            name = f"{part}.{field}"
            size = _sizes(name, pool_size, fleet_size)
            a, b = getattr(fleet_part, field), getattr(here_part, field)
            rows.append(
                LimitRow(
                    name=name,
                    fleet=_value(a, size),
                    here=_value(b, size),
                    source="_global.yaml" if a == b or group is None else f"node group {group.name}",
                )
            )
    if group is not None:
        for tool in sorted(group.rate_limits.get("per_hour") or {}):
            rows.append(
                LimitRow(
                    name=f"rate_limits.per_hour.{tool}",
                    fleet=f"{limits.rate_limits.per_hour_for(tool)} an hour, fleet-wide",
                    here=f"also {limits.group_rate(group, tool)} an hour on the group's nodes",
                    source=f"node group {group.name}",
                )
            )
    return Explanation(labels=labels, group=group.name if group else None, why=why, rows=rows)
