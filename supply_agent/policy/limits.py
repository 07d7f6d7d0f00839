"""Fleet-wide limits, the ``_global.yaml`` of a playbook directory: kill switch, deny lists, blast
radius, rate limits, mass-failure detection, the circuit breaker and approvals.

It exists so that the limits every action answers to, whatever its playbook, are one model with safe
defaults (a missing file means them). Semantics the gate relies on:

* A soft limit is exceeded -> ``ask``; a hard limit is exceeded -> ``deny`` (`SoftHardLimit.verdict`).
* An `IntOrPercent` threshold has Cluster API ``maxUnhealthy`` semantics (percentages round down).
* The circuit breaker (NVSentinel) never resets itself: a human resets it.
* The mandatory deny entries may be extended, never shortened.
"""

from __future__ import annotations

from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, field_validator, model_validator

from supply_agent.policy.base import NonEmptyStr, Slug, Strict, fail
from supply_agent.policy.tools import WRITE_TOOLS, ToolName
from supply_agent.policy.units import Duration, Fraction, IntOrPercent, Percent, at_most
from supply_agent.policy.xids import ImmediateBucket
from tools.catalogue import DEFAULT_RATES

# Namespaces and verbs the agent never touches, whatever a `_global.yaml` says: they may be extended,
# never shortened.
MANDATORY_DENY_NAMESPACES: tuple[str, ...] = ("kube-system", "supply-agent-system")
MANDATORY_DENIED_ACTIONS: tuple[tuple[str, str], ...] = (
    ("delete", "nodes"),
    ("delete", "namespaces"),
    ("delete", "persistentvolumeclaims"),
    ("delete", "secrets"),
)
_RESOURCE_ALIASES = {
    "node": "nodes",
    "no": "nodes",
    "namespace": "namespaces",
    "ns": "namespaces",
    "pvc": "persistentvolumeclaims",
    "pvcs": "persistentvolumeclaims",
    "persistentvolumeclaim": "persistentvolumeclaims",
    "secret": "secrets",
    "pod": "pods",
    "po": "pods",
    "deployment": "deployments",
    "deploy": "deployments",
    "pv": "persistentvolumes",
    "persistentvolume": "persistentvolumes",
}


class SoftHardLimit(Strict):
    """Over ``soft``: ask a human. Over ``hard``: deny."""

    soft: float
    hard: float

    @model_validator(mode="after")
    def _ordered(self) -> SoftHardLimit:
        if self.soft > self.hard:
            raise fail(f"soft ({self.soft:g}) must not exceed hard ({self.hard:g})", "soft")
        return self

    def verdict(self, value: float) -> Literal["allow", "ask", "deny"]:
        if value > self.hard:
            return "deny"
        if value > self.soft:
            return "ask"
        return "allow"


class FractionLimit(SoftHardLimit):
    """Fractions 0..1 (or "5%"), with optional absolute caps alongside, in nodes: over ``soft_max``
    nodes asks and over ``hard_max`` denies whatever the fraction ("1% of 288 nodes is 2"; a cap of 3
    holds in a pool of 2,000 too)."""

    soft: Fraction
    hard: Fraction
    soft_max: int | None = Field(None, ge=0, description="At most this many nodes before a human is asked.")
    hard_max: int | None = Field(None, ge=0, description="At most this many nodes at all.")

    @model_validator(mode="after")
    def _caps_ordered(self) -> FractionLimit:
        if self.soft_max is not None and self.hard_max is not None and self.soft_max > self.hard_max:
            raise fail(f"soft_max ({self.soft_max}) must not exceed hard_max ({self.hard_max})", "soft_max")
        return self

    def cap_verdict(self, count: int) -> Literal["allow", "ask", "deny"]:
        """The absolute caps' verdict on ``count`` nodes (allow when there are none)."""
        if self.hard_max is not None and count > self.hard_max:
            return "deny"
        if self.soft_max is not None and count > self.soft_max:
            return "ask"
        return "allow"

    def in_nodes(self, size: int) -> tuple[int, int]:
        """The soft and hard limits as node counts in a group of ``size`` (fractions round down, as a
        fraction of nodes allowed out is: the caps where they are lower)."""
        soft, hard = int(self.soft * size + 1e-9), int(self.hard * size + 1e-9)
        if self.soft_max is not None:
            soft = min(soft, self.soft_max)
        if self.hard_max is not None:
            hard = min(hard, self.hard_max)
        return soft, hard


class CountLimit(SoftHardLimit):
    soft: Annotated[int, Field(ge=0)]
    hard: Annotated[int, Field(ge=0)]


class MoneyLimit(SoftHardLimit):
    """US dollars."""

    soft: Annotated[float, Field(ge=0)]
    hard: Annotated[float, Field(ge=0)]


class BlastRadius(Strict):
    """How much the agent may take out of service. Cordoned fractions count the nodes the agent has
    cordoned (not the ones others did) against the pool's and the fleet's size; the first
    ``always_allow_nodes`` nodes never count against the fractions, so that a small pool can still lose
    its one broken node."""

    pool_cordoned: FractionLimit = FractionLimit(soft=0.1, hard=0.25)
    fleet_cordoned: FractionLimit = FractionLimit(soft=0.05, hard=0.1)
    always_allow_nodes: int = Field(1, ge=0)
    gpus_out: CountLimit = CountLimit(soft=8, hard=32)
    customers_disrupted_per_hour: CountLimit = CountLimit(soft=4, hard=16)
    credit_usd_per_incident: MoneyLimit = MoneyLimit(soft=100, hard=1000)
    credit_usd_per_customer_per_day: MoneyLimit = MoneyLimit(soft=500, hard=2500)
    credit_usd_per_hour: MoneyLimit = MoneyLimit(soft=1000, hard=5000)

    def cordon_verdict(
        self, cordoned: int, pool_size: int, fleet_size: int
    ) -> Literal["allow", "ask", "deny"]:
        """``cordoned`` nodes in the pool (after the action) and in the fleet: the stricter verdict."""
        if cordoned <= self.always_allow_nodes:
            return "allow"
        order = {"allow": 0, "ask": 1, "deny": 2}
        pool = self.pool_cordoned.verdict(cordoned / pool_size) if pool_size else "deny"
        fleet = self.fleet_cordoned.verdict(cordoned / fleet_size) if fleet_size else "deny"
        caps = (self.pool_cordoned.cap_verdict(cordoned), self.fleet_cordoned.cap_verdict(cordoned))
        return max(pool, fleet, *caps, key=order.__getitem__)


# Each write tool's default rate is in its row of the tool table.
_DEFAULT_RATES = DEFAULT_RATES


class RateLimits(Strict):
    """Write actions per tool per hour, fleet-wide; a write tool not named gets ``default_per_hour``.
    Reads and paging a human are never rate limited."""

    per_hour: dict[ToolName, Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: dict(_DEFAULT_RATES)
    )
    default_per_hour: int = Field(3, ge=0)
    writes_per_incident: int = Field(20, ge=0)

    @field_validator("per_hour")
    @classmethod
    def _writes_only(cls, rates: dict[str, int]) -> dict[str, int]:
        for name in rates:
            if name not in WRITE_TOOLS:
                raise fail(f"{name} only reads: reads are not rate limited by the gate", name)
        return rates

    def per_hour_for(self, tool: str) -> int:
        return self.per_hour.get(tool, self.default_per_hour)


class MassFailure(Strict):
    """When more nodes of a pool (or the fleet) alert within ``window`` than the threshold allows, the
    likely cause is the monitor, a driver rollout or the network: stop and page a human. Thresholds
    follow Cluster API ``maxUnhealthy`` (a count or a percentage rounding down); the limit never drops
    below ``always_allow_nodes``, so one failing node is never a mass failure."""

    max_unhealthy_pool: IntOrPercent = IntOrPercent(20, True)
    max_unhealthy_fleet: IntOrPercent = IntOrPercent(20, True)
    always_allow_nodes: int = Field(1, ge=0)
    window: Duration = timedelta(minutes=10)

    def allows(self, unhealthy: int, total: int, scope: Literal["pool", "fleet"]) -> bool:
        """True when ``unhealthy`` alerting nodes out of ``total`` may still be remediated."""
        threshold = self.max_unhealthy_pool if scope == "pool" else self.max_unhealthy_fleet
        return unhealthy <= max(threshold.scaled(total), self.always_allow_nodes)


class Topology(Strict):
    """Alerts from several nodes that share one component (a rack's cooling or power, a leaf switch, a
    driver version being rolled out) fold into one incident naming the component as the suspected cause:
    one page, no per-node action. ``components`` maps each kind a playbook's ``match.topology`` may name
    to the node label that says which component a node belongs to, read from the cluster (never from an
    alert's labels). A component counts when at least ``min_nodes`` of its nodes alert together and they
    are at least ``min_fraction`` percent of its nodes; the component explaining the most of them wins,
    then the smallest, then the kind listed first (a rack before the driver version the whole fleet
    runs, a rack before the small pool it makes up)."""

    min_nodes: int = Field(3, ge=2)
    min_fraction: Percent = 25.0
    components: dict[Slug, NonEmptyStr] = Field(
        default_factory=lambda: {
            "rack": "supply-agent.io/rack",
            "switch": "supply-agent.io/switch",
            "driver": "nvidia.com/cuda.driver-version.full",
            "pool": "supply-agent.io/pool",
        }
    )


class CircuitBreaker(Strict):
    """NVSentinel's breaker: trips when the unique nodes the agent cordoned within ``duration`` exceed
    ``percentage`` of the fleet's nodes, or when ``failed_verifications`` steps fail verification within
    it. Once tripped it blocks every new write until a human resets it; it never resets itself."""

    enabled: bool = True
    percentage: Percent = 20.0
    duration: Duration = timedelta(minutes=30)
    failed_verifications: int = Field(2, ge=1)

    def trips(self, unique_cordons: int, fleet_size: int, failed_verifications: int = 0) -> bool:
        if not self.enabled:
            return False
        return unique_cordons * 100 > self.percentage * fleet_size or (
            failed_verifications >= self.failed_verifications
        )


class Approvals(Strict):
    """An approval expires after ``ttl`` and counts only from a named approver; with none named, every
    ``ask`` stays unanswered (the safe default)."""

    ttl: Annotated[Duration, at_most(timedelta(hours=24))] = timedelta(minutes=15)
    approvers: list[NonEmptyStr] = Field(default_factory=list)

    @field_validator("approvers")
    @classmethod
    def _unique(cls, approvers: list[str]) -> list[str]:
        for i, name in enumerate(approvers):
            if name in approvers[:i]:
                raise fail(f"approver {name!r} is listed twice", i)
        return approvers


class DeniedAction(Strict):
    """A Kubernetes verb on a resource the agent may never perform."""

    verb: Annotated[str, Field(pattern=r"^[a-z*]+$")]
    resource: NonEmptyStr

    @field_validator("resource")
    @classmethod
    def _plural(cls, resource: str) -> str:
        key = resource.strip().lower()
        return _RESOURCE_ALIASES.get(key, key)


def _denied_action(value: Any) -> Any:
    # "delete nodes" is {verb: delete, resource: nodes}.
    if isinstance(value, str) and len(value.split()) == 2:
        verb, resource = value.split()
        return {"verb": verb, "resource": resource}
    return value


class Deny(Strict):
    """Deny lists. The mandatory entries (kube-system, supply-agent-system; deleting nodes, namespaces,
    PVCs and secrets) may not be removed."""

    namespaces: list[NonEmptyStr] = Field(default_factory=lambda: list(MANDATORY_DENY_NAMESPACES))
    actions: list[Annotated[DeniedAction, BeforeValidator(_denied_action)]] = Field(
        default_factory=lambda: [DeniedAction(verb=v, resource=r) for v, r in MANDATORY_DENIED_ACTIONS]
    )

    @field_validator("namespaces")
    @classmethod
    def _mandatory_namespaces(cls, namespaces: list[str]) -> list[str]:
        missing = [ns for ns in MANDATORY_DENY_NAMESPACES if ns not in namespaces]
        if missing:
            raise fail(f"must keep {', '.join(missing)} denied (you may add namespaces, not remove these)")
        return namespaces

    @field_validator("actions")
    @classmethod
    def _mandatory_actions(cls, actions: list[DeniedAction]) -> list[DeniedAction]:
        have = {(a.verb, a.resource) for a in actions}
        missing = [f"{v} {r}" for v, r in MANDATORY_DENIED_ACTIONS if (v, r) not in have]
        if missing:
            raise fail(f"must keep denied: {', '.join(missing)} (you may add actions, not remove these)")
        return actions


class Handback(Strict):
    """The dead man's switch: an incident the agent acknowledged whose work has failed for longer than
    ``stalled_after`` (a run, a write-back, a prompt, a click, the event that opened it) is handed back
    to humans in PagerDuty (reassigned to the escalation policy, with a note of what is known and what
    failed), or in Slack when PagerDuty is what fails. The agent keeps trying; a human now knows."""

    stalled_after: Duration = timedelta(minutes=3)


class Workloads(Strict):
    """Containment that knows workloads: a gang job (a JobSet, a LeaderWorkerSet's group) stops whole
    when one of its pods goes, so an action disrupting one pod of it disrupts every GPU of it. Counted
    per action against the hour, the incident and the customer; and a drain whose evicted pods find no
    room in their pool (no Ready, schedulable node with the GPUs free) leaves that work Pending: ask.
    ``enabled: false`` is the node-only gate (the evals' ablation)."""

    enabled: bool = True
    gpus_disrupted_per_hour: CountLimit = CountLimit(soft=128, hard=1024)
    gpus_disrupted_per_incident: CountLimit = CountLimit(soft=128, hard=512)
    gpus_disrupted_per_customer_per_hour: CountLimit = CountLimit(soft=128, hard=512)
    require_room: bool = True


class GroupMatch(Strict):
    """Which nodes a group holds: every key given matches (any of its globs), keys not given match all."""

    pool: list[NonEmptyStr] = Field(default_factory=list)
    gpu_model: list[NonEmptyStr] = Field(default_factory=list)
    tenant_tier: list[NonEmptyStr] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> GroupMatch:
        if not (self.pool or self.gpu_model or self.tenant_tier):
            raise fail("a node group matches on pool, gpu_model or tenant_tier (at least one)")
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a node with these labels (supply_agent.policy.world.GROUP_LABELS' keys: pool,
        gpu_model, tenant_tier) is in."""
        return all(
            not globs or any(fnmatchcase(labels.get(key, ""), g) for g in globs)
            for key, globs in (
                ("pool", self.pool),
                ("gpu_model", self.gpu_model),
                ("tenant_tier", self.tenant_tier),
            )
        )


class NodeGroup(Strict):
    """Limits of their own for some nodes: what differs from the fleet-wide ``blast_radius`` and
    ``workloads`` (deep-merged over them), for the nodes ``match`` selects. An action is decided on its
    target node's group: the first group that matches, in file order; none, the fleet-wide limits."""

    name: Slug
    match: GroupMatch
    source: str = Field("", description="Why these nodes differ (a contract, a postmortem).")
    blast_radius: dict[str, Any] = Field(default_factory=dict)
    workloads: dict[str, Any] = Field(default_factory=dict)
    rate_limits: dict[str, Any] = Field(
        default_factory=dict,
        description="``per_hour`` per tool on this group's nodes, counted on them alone, beside the "
        "fleet-wide rate (e.g. one drain an hour of reserved capacity).",
    )

    @field_validator("rate_limits")
    @classmethod
    def _per_hour_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        extra = sorted(set(value) - {"per_hour"})
        if extra:
            raise fail(f"a node group's rate_limits has per_hour only, not {', '.join(extra)}")
        return value


# Limits on fleet-wide totals: a node group's value never loosens them (see GlobalLimits.for_group).
_BR_TOTALS = (
    "fleet_cordoned",
    "gpus_out",
    "customers_disrupted_per_hour",
    "credit_usd_per_customer_per_day",
    "credit_usd_per_hour",
)
_WL_TOTALS = ("gpus_disrupted_per_hour", "gpus_disrupted_per_customer_per_hour")
FLEET_TOTALS = tuple(f"blast_radius.{f}" for f in _BR_TOTALS) + tuple(f"workloads.{f}" for f in _WL_TOTALS)


def _stricter(a: SoftHardLimit, b: SoftHardLimit) -> SoftHardLimit:
    """The stricter of two limits of one kind: the lower soft and hard (and caps, for fractions)."""
    update: dict[str, Any] = {"soft": min(a.soft, b.soft), "hard": min(a.hard, b.hard)}
    if isinstance(a, FractionLimit) and isinstance(b, FractionLimit):
        for cap in ("soft_max", "hard_max"):
            given = [v for v in (getattr(a, cap), getattr(b, cap)) if v is not None]
            update[cap] = min(given) if given else None
    return a.model_copy(update=update)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


class GlobalLimits(Strict):
    """``_global.yaml``: fleet-wide limits. A missing file means these defaults, which are safe: kill
    switch off, mandatory deny lists, tight blast radius, breaker on, no approvers (an ``ask`` then
    waits for a human who can only act out of band)."""

    kill_switch: bool = False
    deny: Deny = Deny()
    blast_radius: BlastRadius = BlastRadius()
    rate_limits: RateLimits = RateLimits()
    mass_failure: MassFailure = MassFailure()
    topology: Topology = Topology()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    approvals: Approvals = Approvals()
    handback: Handback = Handback()
    workloads: Workloads = Workloads()
    node_groups: list[NodeGroup] = Field(
        default_factory=list, description="Limits of their own per pool, GPU model or tenant tier."
    )
    # The bucket an XID counts as when NVIDIA's catalogue has none for it (a new driver's code, a
    # reserved one): the conservative choice, out of service and a human told.
    xid_uncatalogued: ImmediateBucket = "CONTACT_SUPPORT"

    @model_validator(mode="after")
    def _groups_valid(self) -> GlobalLimits:
        names = [g.name for g in self.node_groups]
        if len(set(names)) != len(names):
            raise fail(
                f"node group names repeat: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}"
            )
        for i, group in enumerate(self.node_groups):
            for part in ("blast_radius", "workloads", "rate_limits"):
                try:
                    self._part(group, part)
                except ValidationError as exc:
                    err = exc.errors()[0]
                    where = ".".join(str(x) for x in err["loc"])
                    raise fail(
                        f"node group {group.name}: {part}.{where}: {err['msg']}", "node_groups", i, part
                    ) from None
        return self

    def _part(self, group: NodeGroup, part: str) -> Any:
        base: BaseModel = getattr(self, part)
        return type(base).model_validate(_merged(base.model_dump(mode="python"), getattr(group, part)))

    @property
    def workloads_read(self) -> bool:
        """Whether a disrupting action's workloads are read: the rules are on fleet-wide or in a group."""
        return self.workloads.enabled or any(g.workloads.get("enabled") for g in self.node_groups)

    def group_rate(self, group: NodeGroup, tool: str) -> int | None:
        """The hourly rate of ``tool`` on the group's own nodes; None when the group sets none."""
        per_hour = group.rate_limits.get("per_hour") or {}
        return self._part(group, "rate_limits").per_hour_for(tool) if tool in per_hour else None

    def group_for(self, labels: dict[str, str]) -> NodeGroup | None:
        """The node group of a node with these labels (pool, gpu_model, tenant_tier): the first match."""
        return next((g for g in self.node_groups if g.match.matches(labels)), None)

    def for_group(self, group: NodeGroup | None) -> GlobalLimits:
        """The limits that hold on the group's nodes: the fleet-wide ones with the group's merged in. A
        limit on a fleet-wide total (FLEET_TOTALS: GPUs out, the fleet's cordoned fraction, the hour's
        customers, dollars and workload GPUs) is the stricter of the two: a group may loosen what is its
        own (its pool's fraction, an incident's counts), never the fleet's; ``require_room`` holds if
        either says so."""
        if group is None:
            return self
        br: BlastRadius = self._part(group, "blast_radius")
        wl: Workloads = self._part(group, "workloads")
        br = br.model_copy(
            update={f: _stricter(getattr(br, f), getattr(self.blast_radius, f)) for f in _BR_TOTALS}
        )
        wl = wl.model_copy(
            update={
                **{f: _stricter(getattr(wl, f), getattr(self.workloads, f)) for f in _WL_TOTALS},
                "require_room": wl.require_room or self.workloads.require_room,
            }
        )
        return self.model_copy(update={"blast_radius": br, "workloads": wl})
