"""How close the fleet is to its containment limits, as the gate counts them: pure, from the playbooks'
limits, the audit log's rows of the budget windows and (when the cluster can be read) the world.

The same arithmetic as the gate (``supply_agent.policy.gate``): the nodes the agent took out and has not
handed back, per pool and for the fleet; the GPUs on them; the customers disrupted and the dollars
credited in the last hour; each write tool's count in the last hour against its rate limit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from supply_agent.policy.gate import agent_out_nodes, history_from_audit
from supply_agent.policy.limits import GlobalLimits
from supply_agent.policy.world import WorldView
from tools.catalogue import CONTROL_TOOLS, DISRUPTING, WRITE_TOOLS

LATCH_TOOLS = {
    "control.freeze": ("kill switch", "on"),
    "control.unfreeze": ("kill switch", "off"),
    "control.latch_breaker": ("circuit breaker", "tripped"),
    "control.reset_breaker": ("circuit breaker", "reset"),
}


@dataclass(frozen=True)
class Budget:
    """One limit: what is spent against its soft and hard bounds (None: not known without the cluster)."""

    scope: str  # "fleet", "pool gpu-a", "tool k8s.drain_node"
    limit: str  # the playbooks' key, as the gate's reasons name it
    spent: float | None
    soft: float | None
    hard: float
    unit: str  # "share", "GPUs", "customers", "USD", "writes"
    what: str

    @property
    def state(self) -> str:
        if self.spent is None:
            return "unknown"
        if self.spent >= self.hard:
            return "at hard"
        if self.soft is not None and self.spent >= self.soft:
            return "over soft"
        return "ok"

    @property
    def used(self) -> float | None:
        """The share of the hard limit spent, 0..1 (for the bar)."""
        if self.spent is None or self.hard <= 0:
            return None
        return max(0.0, min(1.0, self.spent / self.hard))


@dataclass(frozen=True)
class Latch:
    name: str  # "kill switch" | "circuit breaker"
    on: bool | None  # None: the cluster could not be read
    why: str
    last_change: str  # who changed it last, when, why (from the audit log)


@dataclass(frozen=True)
class Containment:
    at: datetime
    budgets: list[Budget]
    latches: list[Latch]
    world_known: bool


def _empty_world(now: datetime) -> WorldView:
    return WorldView(now=now, nodes={})


def containment(
    limits: GlobalLimits,
    audit: list[Any],
    now: datetime,
    world: WorldView | None = None,
    latches: dict[str, tuple[bool, str]] | None = None,
    nodes_out: Iterable[Any] = (),
) -> Containment:
    """The budgets and latches as of ``now``. ``audit``: the rows of the budget windows at least
    (``lookback``), with ``nodes_out`` (the audit's nodes out of service now, taken out however long ago)."""
    history = history_from_audit(audit, world or _empty_world(now), nodes_out=nodes_out)
    br = limits.blast_radius
    out = agent_out_nodes(history)
    budgets: list[Budget] = []
    if world is not None and world.nodes:
        pools: Counter[str] = Counter(world.nodes[n].pool for n in out if n in world.nodes)
        for pool in sorted({v.pool for v in world.nodes.values()}):
            size = max(world.pool_size(pool), 1)
            budgets.append(
                Budget(
                    f"pool {pool}",
                    "blast_radius.pool_cordoned",
                    pools[pool] / size,
                    float(br.pool_cordoned.soft),
                    float(br.pool_cordoned.hard),
                    "share",
                    f"{pools[pool]} of {size} nodes taken out by the agent",
                )
            )
        budgets.append(
            Budget(
                "fleet",
                "blast_radius.fleet_cordoned",
                len(out) / max(len(world.nodes), 1),
                float(br.fleet_cordoned.soft),
                float(br.fleet_cordoned.hard),
                "share",
                f"{len(out)} of {len(world.nodes)} nodes taken out by the agent",
            )
        )
        gpus: float | None = float(sum(world.nodes[n].gpus for n in out if n in world.nodes))
    else:
        gpus = None
    budgets.append(
        Budget(
            "fleet",
            "blast_radius.gpus_out",
            gpus,
            float(br.gpus_out.soft),
            float(br.gpus_out.hard),
            "GPUs",
            f"GPUs on the {len(out)} nodes the agent took out",
        )
    )
    hour = [a for a in history.actions if a.at >= now - timedelta(hours=1)]
    customers = {c for a in hour if a.tool in DISRUPTING for c in a.customers}
    budgets.append(
        Budget(
            "fleet",
            "blast_radius.customers_disrupted_per_hour",
            float(len(customers)),
            float(br.customers_disrupted_per_hour.soft),
            float(br.customers_disrupted_per_hour.hard),
            "customers",
            "customers disrupted in the last hour",
        )
    )
    dollars = sum((a.dollars for a in hour), Decimal("0"))
    budgets.append(
        Budget(
            "fleet",
            "blast_radius.credit_usd_per_hour",
            float(dollars),
            float(br.credit_usd_per_hour.soft),
            float(br.credit_usd_per_hour.hard),
            "USD",
            "credits issued in the last hour",
        )
    )
    rl = limits.rate_limits
    per_tool = Counter(a.tool for a in hour)
    for tool in sorted(set(per_tool) | set(rl.per_hour)):
        if tool not in WRITE_TOOLS or tool in CONTROL_TOOLS:
            continue
        budgets.append(
            Budget(
                f"tool {tool}",
                "rate_limits.per_hour",
                float(per_tool[tool]),
                None,
                float(rl.per_hour.get(tool, rl.default_per_hour)),
                "writes",
                f"{tool} in the last hour",
            )
        )
    last: dict[str, str] = {}
    for rec in audit:
        if rec.tool in LATCH_TOOLS and rec.phase == "after" and rec.outcome == "executed":
            name, what = LATCH_TOOLS[rec.tool]
            reason = (rec.params or {}).get("reason", "")
            last[name] = f"{what} by {rec.approver or 'the agent'} at {rec.at:%Y-%m-%d %H:%M} UTC: {reason}"
    shown = []
    for name, key in (("kill switch", "freeze"), ("circuit breaker", "breaker")):
        on, why = (latches or {}).get(key, (None, ""))
        shown.append(Latch(name, on, why, last.get(name, "no change in the newest day")))
    return Containment(now, budgets, shown, world is not None)
