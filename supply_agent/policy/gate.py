"""The containment gate: ``decide(action, world, history, playbooks) -> Decision``.

Pure and deterministic: the same inputs give the same decision, with every reason and every limit
consulted. Nothing here reads the network or the clock; ``world.now`` is the time. Over a soft limit
the answer is ``ask`` (a human decides), over a hard one ``deny``; the strictest rule wins.

Long because it is the gate: every rule the containment design names (kill switch, bounded targets, deny
lists, circuit breaker, playbook containment, identity, mass failure, blast radius, rates) is here next
to the others, so one reading shows the whole of a decision and the order the rules are consulted in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from supply_agent.models import Action, Decision, Targets, Verdict, WorkloadHit
from supply_agent.policy import (
    FractionLimit,
    GlobalLimits,
    GpuFaultConfirmed,
    GpuThrottleConfirmed,
    GpuXidReported,
    MeterDuplicated,
    NodeAgentReachable,
    NodeCondition,
    NodeEvent,
    NodeGroup,
    NodeUnschedulable,
    Playbook,
    PlaybookSet,
    PodsOnNode,
    PodState,
    SoftHardLimit,
)
from supply_agent.policy.world import History, NodeView, PastAction, PodRef, PoolRoom, WorldView
from tools.catalogue import (
    CATALOGUE,
    CONTROL_TOOLS,
    DISRUPTING,
    K8S_VERBS,
    OUT_OF_SERVICE,
    TOOLS,
    WRITE_TOOLS,
    Effect,
)

_ORDER = {Verdict.ALLOW: 0, Verdict.ASK: 1, Verdict.DENY: 2}
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")

# From the tool table: writes that take a node's GPUs out of service for new work, writes that stop or
# move a customer's running work, and what each tool does in Kubernetes terms (for the deny list).
NODE_OUT = OUT_OF_SERVICE
HAND_BACK = "k8s.uncordon_node"  # the write that hands a node back
# Writes addressed to a customer (a notice, a credit, their pod's metering): the customer must be one the
# incident affects, as the cluster says (see ``_identity``).
CUSTOMER_WRITES = frozenset(t for t in WRITE_TOOLS if t == "notify.customer" or t.startswith("billing."))


@dataclass
class _Ruling:
    verdict: Verdict = Verdict.ALLOW
    reasons: list[str] = field(default_factory=list)
    consulted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth a human's eye, but no verdict of their own
    trips_breaker: bool = False
    scope: str = ""  # the node group whose limits are being applied ("" : the fleet-wide ones)

    def _named(self, name: str) -> str:
        return f"{name}, node group {self.scope}" if self.scope else name

    def add(self, verdict: Verdict, reason: str) -> None:
        if _ORDER[verdict] > _ORDER[self.verdict]:
            self.verdict = verdict
        if verdict != Verdict.ALLOW:
            self.reasons.append(f"{verdict.value}: {reason}")

    def note(self, text: str) -> None:
        self.notes.append(f"note: {text}")

    def limit(self, name: str, limit: SoftHardLimit, value: float, what: str) -> None:
        self.consulted.append(self._named(name))
        v = limit.verdict(value)
        if v != "allow":
            self.add(
                Verdict(v),
                f"{what} would be {value:g}, over the {(v == 'deny' and 'hard') or 'soft'} limit "
                f"{(limit.hard if v == 'deny' else limit.soft):g} ({self._named(name)})",
            )

    def cap(self, name: str, limit: FractionLimit, count: int, what: str) -> None:
        """A fraction's absolute caps, in nodes (``soft_max``, ``hard_max``), beside the fraction."""
        v = limit.cap_verdict(count)
        if v != "allow":
            which = "hard_max" if v == "deny" else "soft_max"
            self.add(
                Verdict(v),
                f"{what} would be {count} nodes, over the {which.split('_')[0]} cap {getattr(limit, which)} "
                f"({self._named(f'{name}.{which}')})",
            )


# -- targets --------------------------------------------------------------------------------------
def targets_of(action: Action, world: WorldView) -> tuple[Targets, list[str]]:
    """What the action touches, from its parameters and the world; problems that make it unbounded."""
    p, problems = action.params, []
    nodes: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    customers: tuple[str, ...] = ()
    gpus, dollars = 0, Decimal("0")
    hits: tuple[WorkloadHit, ...] = ()

    for key in ("node", "namespace", "pod", "deployment", "customer"):
        value = p.get(key)
        if value is not None and (not isinstance(value, str) or not _NAME.match(value)):
            problems.append(
                f"{key} {value!r} is not one exact name (no wildcards, selectors, lists or empty names)"
            )
    if problems:
        return Targets(), problems
    if "node" in p:
        node = world.nodes.get(p["node"])
        if node is None:
            return Targets(), [f"node {p['node']!r} is not in the fleet"]
        nodes = (node.name,)
        if action.tool in NODE_OUT and not (
            action.tool == "k8s.taint_node" and p.get("effect") == "PreferNoSchedule"
        ):
            gpus = node.gpus
        if action.tool == "k8s.drain_node":
            customers = node.customers()
            pods = tuple(f"{r.namespace}/{r.name}" for r in node.pods if not r.daemonset)
            hits = _hits(world, (r for r in node.pods if not r.daemonset and not r.terminating))
    if "pod" in p and "namespace" in p:
        found = world.find_pod(p["namespace"], p["pod"])
        pods, namespaces = (f"{p['namespace']}/{p['pod']}",), (p["namespace"],)
        if found is not None:
            node, ref = found
            customers, gpus = ((ref.customer,) if ref.customer else ()), ref.gpus
            if action.tool in DISRUPTING:
                hits = _hits(world, () if ref.terminating else (ref,))
        elif action.tool == "k8s.delete_pod":
            problems.append(f"pod {p['namespace']}/{p['pod']} is not in the fleet")
    if "deployment" in p and "namespace" in p:
        refs = world.deployment_pods(p["namespace"], p["deployment"])
        namespaces = (p["namespace"],)
        pods = tuple(f"{r.namespace}/{r.name}" for r in refs)
        customers = tuple(sorted({r.customer for r in refs if r.customer}))
        gpus = sum(r.gpus for r in refs)
    if "customer" in p:
        customers = (p["customer"],)
    if "amount_usd" in p:
        try:
            dollars = Decimal(str(p["amount_usd"]))
        except ArithmeticError:
            problems.append(f"amount_usd {p['amount_usd']!r} is not a number")
    return Targets(
        nodes=nodes,
        pods=pods,
        namespaces=namespaces,
        customers=customers,
        gpus=gpus,
        dollars=dollars,
        workloads=hits,
    ), problems


def _hits(world: WorldView, pods: Iterable[PodRef]) -> tuple[WorkloadHit, ...]:
    """The gang workloads (as read for this decision) these pods belong to, whole."""
    keys = sorted({p.workload for p in pods if p.workload and p.workload in world.workloads})
    out = []
    for key in keys:
        w = world.workloads[key]
        out.append(
            WorkloadHit(
                key=key,
                customer=w.customer,
                nodes=len(w.nodes),
                gpus=w.gpus,
                since_checkpoint_s=w.since_checkpoint_s(world.now),
                checkpoint_every_s=w.checkpoint_every_s,
            )
        )
    return tuple(out)


# -- history arithmetic ---------------------------------------------------------------------------
def lookback(limits: GlobalLimits) -> timedelta:
    """The longest window any budget counts over (an hour, a day, the breaker's duration): a decision
    reads the audit rows of this span, its own incident's, and the nodes out now (``nodes_out``)."""
    return max(timedelta(days=1), limits.circuit_breaker.duration)


def _within(history: History, now: Any, window: timedelta) -> Iterable[PastAction]:
    return (a for a in history.actions if now - a.at <= window)


def _out_of(actions: Iterable[PastAction], handed_back: Iterable[str] = ()) -> set[str]:
    """The nodes these writes (in the order they ran) left out of service: a node is out when its last
    out-of-service write came after its last hand-back."""
    out: set[str] = set()
    for a in actions:
        if a.tool in NODE_OUT:
            out.update(a.nodes)
        elif a.tool == HAND_BACK:
            out.difference_update(a.nodes)
    return out - set(handed_back)


def agent_out_nodes(history: History) -> set[str]:
    """Nodes the agent took out of service and has not handed back."""
    if history.out_now is not None:
        return set(history.out_now)
    return _out_of(history.actions, history.uncordoned)


# -- preconditions --------------------------------------------------------------------------------
def _precondition(cond: Any, node: NodeView | None, world: WorldView) -> str | None:
    """None when the precondition holds for the target node, else why not."""
    check = getattr(cond, "check", "?")
    if isinstance(cond, PodState):
        shown: list[str] = []
        for key in sorted(world.subject_pods):
            namespace, _, name = key.partition("/")
            found = world.find_pod(namespace, name)
            if found is None:
                continue
            pod = found[1]
            if {pod.waiting_reason, pod.last_termination_reason} & set(cond.reasons):
                return None
            shown.append(
                f"{pod.waiting_reason or pod.last_termination_reason or 'no waiting or termination reason'}"
            )
        if not shown:
            return f"none of the incident's pods is in the cluster to confirm {' or '.join(cond.reasons)}"
        return f"the incident's pods show {', '.join(shown)}, not {' or '.join(cond.reasons)}"
    if isinstance(cond, MeterDuplicated):
        if any(n > 1 for n in world.running_meters.values()):
            return None
        if not world.running_meters:
            pods = ", ".join(sorted(world.subject_pods)) or "the incident's pods"
            return f"no meter counts {pods} now: nothing is metered twice"
        counted = ", ".join(f"{k} by {n} running meter(s)" for k, n in sorted(world.running_meters.items()))
        return f"the meters count {counted}: nothing is metered twice"
    if node is None:
        return f"precondition {check} needs a node target"
    if isinstance(cond, NodeCondition):
        actual = {**node.conditions, "GpuHealthy": node.gpu_healthy, "Ready": node.ready}.get(cond.condition)
        return (
            None
            if actual == cond.status
            else f"{cond.condition} is {actual}, not {cond.status}, on {node.name}"
        )
    if isinstance(cond, NodeAgentReachable):
        return (
            None
            if node.agent_ready == cond.value
            else f"node-agent on {node.name} reachable={node.agent_ready}"
        )
    if isinstance(cond, GpuFaultConfirmed):
        return (
            None
            if node.name in world.confirmed_gpu_faults
            else f"the GPU fault on {node.name} is not confirmed by its node-agent"
        )
    if isinstance(cond, GpuThrottleConfirmed):
        seen = world.throttle_reasons.get(node.name, frozenset())
        return (
            None
            if seen & set(cond.reasons)
            else f"the node-agent on {node.name} reports no GPU throttled for {', '.join(cond.reasons)} "
            f"(reasons now: {', '.join(sorted(seen)) or 'none'})"
        )
    if isinstance(cond, GpuXidReported):
        xids = world.reported_xids.get(node.name, frozenset())
        return None if xids else f"the node-agent on {node.name} reports no XID event"
    if isinstance(cond, NodeEvent):
        present = cond.reason in world.node_events.get(node.name, ())
        return (
            None
            if present == cond.present
            else f"event {cond.reason} {'absent' if cond.present else 'present'} on {node.name}"
        )
    if isinstance(cond, NodeUnschedulable):
        return None if node.unschedulable == cond.value else f"{node.name} unschedulable={node.unschedulable}"
    if isinstance(cond, PodsOnNode):
        count = sum(1 for r in node.pods if not (cond.except_daemonsets and r.daemonset))
        return None if count <= cond.max else f"{count} pods on {node.name}, more than {cond.max}"
    return f"precondition {check} cannot be checked before acting"


# -- the gate -------------------------------------------------------------------------------------
def decide(action: Action, world: WorldView, history: History, playbooks: PlaybookSet) -> Decision:
    limits: GlobalLimits = playbooks.limits
    r = _Ruling()
    now = world.now
    tool = TOOLS.get(action.tool)
    spec = CATALOGUE.get(action.tool)
    if action.tool in CONTROL_TOOLS:
        r.add(Verdict.DENY, f"{action.tool} is a control action: a human's command or the hands run it")
        return _decision(action, r, Targets(), now)
    if tool is None or spec is None:
        r.add(Verdict.DENY, f"unknown tool {action.tool!r}")
        return _decision(action, r, Targets(), now)
    try:
        spec.input.model_validate(action.params)
    except ValidationError as exc:
        r.add(
            Verdict.DENY,
            f"invalid parameters for {action.tool}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}",
        )
        return _decision(action, r, Targets(), now)
    if tool == Effect.READ:
        r.consulted.append("reads are always allowed")
        return _decision(action, r, Targets(), now)

    # Kill switch: one flag stops every write at once.
    r.consulted.append("kill_switch")
    if limits.kill_switch or world.frozen:
        r.add(
            Verdict.DENY, f"the kill switch is on{': ' + world.frozen_reason if world.frozen_reason else ''}"
        )

    targets, problems = targets_of(action, world)
    r.consulted.append("bounded_targets")
    for problem in problems:
        r.add(Verdict.DENY, problem)
    if not problems and targets.empty():
        r.add(Verdict.DENY, "the action names no target: an empty target set is an error, never 'everything'")

    if not problems and action.tool in CUSTOMER_WRITES and targets.customers:
        _identity(r, action, targets, world)

    # Deny lists.
    r.consulted.append("deny.namespaces")
    pod_namespaces = {t.split("/", 1)[0] for t in targets.pods} | set(targets.namespaces)
    # A drain's targets are the pods it would evict (DaemonSet pods stay): any of them in a denied
    # namespace denies the drain.
    for ns in sorted(pod_namespaces & set(limits.deny.namespaces)):
        r.add(Verdict.DENY, f"namespace {ns} is on the deny list")
    r.consulted.append("deny.actions")
    for verb, resource in K8S_VERBS.get(action.tool, ()):
        for denied in limits.deny.actions:
            if denied.verb in (verb, "*") and denied.resource in (resource, "*"):
                r.add(Verdict.DENY, f"{verb} {resource} is on the deny list")

    # Circuit breaker: latched by a human-only reset.
    breaker = limits.circuit_breaker
    r.consulted.append("circuit_breaker")
    if history.breaker_tripped:
        r.add(
            Verdict.DENY, f"the circuit breaker is tripped ({history.breaker_reason}); a human must reset it"
        )
    elif breaker.enabled:
        recent = list(_within(history, now, breaker.duration))
        cordoned = {n for a in recent if a.tool in NODE_OUT for n in a.nodes}
        if action.tool in NODE_OUT:
            cordoned |= set(targets.nodes)
        failed = sum(1 for a in recent if a.verified is False)
        if breaker.trips(len(cordoned), len(world.nodes), failed):
            r.trips_breaker = True
            r.add(
                Verdict.DENY,
                f"the circuit breaker trips: {len(cordoned)} nodes taken out within "
                f"{breaker.duration} (limit {breaker.percentage:g}% of {len(world.nodes)}), "
                f"{failed} failed verifications",
            )

    # The playbook that proposed the action: its tools, preconditions and per-incident limits.
    playbook = playbooks.get(action.playbook_id) if action.playbook_id else None
    node = world.nodes.get(targets.nodes[0]) if targets.nodes else None
    # The node whose group's limits hold: the target node, or the node of the pod the action is about.
    where = node
    if (
        where is None
        and isinstance(action.params.get("pod"), str)
        and isinstance(action.params.get("namespace"), str)
    ):
        found = world.find_pod(action.params["namespace"], action.params["pod"])
        where = found[0] if found is not None else None
    group = limits.group_for(where.group_labels) if where is not None else None
    if action.playbook_id and playbook is None:
        r.add(Verdict.DENY, f"unknown playbook {action.playbook_id!r}")
    elif playbook is not None:
        subject = where
        if subject is None:
            # The incident's one node, of those the cluster has: alerts naming nodes it does not have
            # (see the mass-failure short circuit) do not make the incident about several nodes.
            known = [n for n in world.subject_nodes if n in world.nodes]
            subject = world.nodes[known[0]] if len(known) == 1 else None
        of_subject = (
            group if subject is where else limits.group_for(subject.group_labels) if subject else None
        )
        _playbook_rules(r, playbook, action, targets, subject, world, history, of_subject)
    elif action.proposed_by != "human":
        r.add(Verdict.ASK, "no playbook covers this action: a human decides")

    # Mass failure short circuit (Cluster API maxUnhealthy).
    mf = limits.mass_failure
    r.consulted.append("mass_failure")
    if node is not None and action.tool in NODE_OUT | DISRUPTING:
        # Only nodes the cluster has count: alerts for nodes it does not have (a stale rule, a typo, a
        # forgery) must not turn one real fault into a "mass failure", nor hide one.
        alerting, ghosts = world.alerting_split()
        if ghosts:
            r.note(
                f"{len(ghosts)} alerting nodes not in the cluster ignored for mass-failure counting: "
                f"{_names(ghosts)} (suspicious: a stale alert rule, or alerts not from this cluster)"
            )
        in_pool = sum(1 for n in alerting if world.nodes[n].pool == node.pool)
        if not mf.allows(in_pool, world.pool_size(node.pool), "pool"):
            r.add(
                Verdict.DENY,
                f"mass failure: {in_pool} of {world.pool_size(node.pool)} nodes in pool {node.pool} "
                f"alert at once (over {mf.max_unhealthy_pool}): likely the monitor, a driver rollout "
                "or the network; a human decides",
            )
        if not mf.allows(len(alerting), len(world.nodes), "fleet"):
            r.add(
                Verdict.DENY,
                f"mass failure: {len(alerting)} of {len(world.nodes)} nodes alert at once "
                f"(over {mf.max_unhealthy_fleet} of the fleet)",
            )

    # The target node's group (a pool, a GPU model, a tenant tier): its own blast radius and workloads.
    if group is not None:
        r.consulted.append(f"node_groups.{group.name}")
        r.scope = group.name
    scoped = limits.for_group(group)
    _blast_radius(r, scoped, action, targets, node, world, history)
    _workload_rules(r, scoped, action, targets, node, world, history)
    r.scope = ""

    # Rate limits.
    hour = list(_within(history, now, timedelta(hours=1)))
    per_hour = limits.rate_limits.per_hour_for(action.tool)
    done = sum(1 for a in hour if a.tool == action.tool)
    r.consulted.append(f"rate_limits.{action.tool}")
    if done + 1 > per_hour:
        r.add(Verdict.DENY, f"{action.tool} ran {done} times in the last hour; the limit is {per_hour}")
    group_rate = limits.group_rate(group, action.tool) if group is not None else None
    if group is not None and group_rate is not None:
        # Counted on the group's own nodes (as the cluster labels them now): the hour's actions of the
        # tool, each looked up by its nodes, not the cluster scanned.
        def in_group(name: str) -> bool:  # a node gone since (replaced, deleted) counts: the stricter
            v = world.nodes.get(name)
            return v is None or limits.group_for(v.group_labels) == group

        mine = sum(1 for a in hour if a.tool == action.tool and any(in_group(n) for n in a.nodes))
        r.consulted.append(f"rate_limits.{action.tool}, node group {group.name}")
        if mine + 1 > group_rate:
            r.add(
                Verdict.DENY,
                f"{action.tool} ran {mine} times in the last hour on node group {group.name}; "
                f"its limit is {group_rate}",
            )
    incident_writes = sum(1 for a in history.actions if a.incident_id == action.incident_id)
    r.consulted.append("rate_limits.writes_per_incident")
    if incident_writes + 1 > limits.rate_limits.writes_per_incident:
        r.add(
            Verdict.DENY,
            f"incident {action.incident_id} already made {incident_writes} writes "
            f"(limit {limits.rate_limits.writes_per_incident})",
        )
    return _decision(action, r, targets, now)


def _identity(r: _Ruling, action: Action, targets: Targets, world: WorldView) -> None:
    """A notice or a billing write goes only to a customer the incident affects: one with a tenant pod on
    its subject nodes or the action's target nodes, or owning (by the pod's label in the cluster) a pod it
    is about, or one the agent saw there in this incident's own reads (pods gone since a drain, or evicted
    from a dead node). Who is affected comes from the cluster: an alert's labels are anyone's text, and a
    planner (a model above all) may have read a customer from them.

    Unaffected, a non-human proposal is denied. When the caller gave no record of what the incident saw
    (``observed_customers`` None) a customer the cluster does not show affected now cannot be told from a
    forged one, and a human decides (ask): it never passes silently. A human's own proposal (``explain``,
    a command) is theirs to make: this rule leaves its verdict as the other rules say."""
    if action.proposed_by == "human":
        return
    r.consulted.append("identity.customers")
    observed = world.observed_customers
    for customer in targets.customers:
        if world.affected_now(customer, targets.nodes) or (observed is not None and customer in observed):
            continue
        where = _names(
            tuple(sorted({*(n for n in world.identity_nodes() if n in world.nodes), *targets.nodes}))
        )
        pods = _names(tuple(sorted(world.subject_pods)), 3, pods=True)
        # The name is the proposal's (a model may have read it from an alert): quoted only if plausible.
        who = customer if _names((customer,)) == customer else "(a name that is no plausible customer name)"
        scope = f"this incident's nodes ({where or 'none'})" + (f" or its pods ({pods})" if pods else "")
        why = (
            f"customer {who} has no pods on {scope}"
            + (
                ", and this incident's reads saw none of theirs there"
                if observed is not None
                else ", and no record of what this incident's reads saw was given to the gate"
            )
            + ": who is affected comes from the cluster, not from alert labels"
        )
        if observed is None:
            r.add(Verdict.ASK, f"{why}; a human decides")
        else:
            r.add(Verdict.DENY, why)


def _playbook_rules(
    r: _Ruling,
    playbook: Playbook,
    action: Action,
    targets: Targets,
    node: NodeView | None,
    world: WorldView,
    history: History,
    group: NodeGroup | None = None,
) -> None:
    c = playbook.containment
    r.consulted.append(f"playbook:{playbook.id}")
    if not c.permits(action.tool):
        r.add(Verdict.DENY, f"playbook {playbook.id} does not permit {action.tool}")
    # What the playbook says differs on the subject node's group (a pool, a GPU model, a tenant tier).
    here = c.node_groups.get(group.name) if group is not None else None
    on = f" on node group {group.name}" if group is not None else ""
    max_nodes, max_gpus = c.max_nodes, c.max_gpus
    if here is not None and group is not None:
        r.consulted.append(f"playbook:{playbook.id}.node_groups.{group.name}")
        max_nodes = c.max_nodes if here.max_nodes is None else min(c.max_nodes, here.max_nodes)
        max_gpus = c.max_gpus if here.max_gpus is None else min(c.max_gpus, here.max_gpus)
        if action.tool in here.forbidden_tools:
            r.add(Verdict.DENY, f"playbook {playbook.id} does not permit {action.tool}{on}")
        if action.tool in here.ask_for:
            r.add(Verdict.ASK, f"playbook {playbook.id} asks a human to approve {action.tool}{on}")
    for cond in c.preconditions:
        why = _precondition(cond, node, world)
        if why is not None:
            r.add(Verdict.DENY, f"precondition of {playbook.id} unmet: {why}")
    mine = [a for a in history.actions if a.incident_id == action.incident_id]
    touched = {n for a in mine for n in a.nodes} | set(targets.nodes)
    if action.tool.startswith("k8s.") and len(touched) > max_nodes:
        r.add(
            Verdict.DENY,
            f"incident would write to {len(touched)} nodes; playbook {playbook.id} allows {max_nodes}"
            + (on if max_nodes != c.max_nodes else ""),
        )
    # GPUs out of service by this incident: each node once, however many writes took it out.
    out = _out_of(mine, history.uncordoned) & agent_out_nodes(history)  # still out, this incident's
    out |= set(targets.nodes)
    gpus = sum(world.nodes[n].gpus if n in world.nodes else 0 for n in out)
    if action.tool in NODE_OUT and gpus > max_gpus:
        r.add(
            Verdict.DENY,
            f"incident would take {gpus} GPUs out; playbook {playbook.id} allows {max_gpus}"
            + (on if max_gpus != c.max_gpus else ""),
        )
    credited = sum((a.dollars for a in mine), Decimal("0")) + targets.dollars
    if targets.dollars and credited > Decimal(str(c.max_credit_usd)):
        r.add(
            Verdict.DENY,
            f"incident would credit ${credited}; playbook {playbook.id} allows ${c.max_credit_usd:g}",
        )
    if any(s.tool == action.tool and s.requires_approval for s in playbook.runbook):
        r.add(Verdict.ASK, f"playbook {playbook.id} asks a human to approve {action.tool}")


def _blast_radius(
    r: _Ruling,
    limits: GlobalLimits,
    action: Action,
    targets: Targets,
    node: NodeView | None,
    world: WorldView,
    history: History,
) -> None:
    br = limits.blast_radius
    now = world.now
    if action.tool in NODE_OUT and node is not None:
        out = agent_out_nodes(history) | {node.name}
        in_pool = sum(1 for n in out if (v := world.nodes.get(n)) and v.pool == node.pool)
        if in_pool > br.always_allow_nodes:
            r.limit(
                "blast_radius.pool_cordoned",
                br.pool_cordoned,
                in_pool / max(world.pool_size(node.pool), 1),
                f"the fraction of pool {node.pool} the agent took out ({in_pool} nodes)",
            )
        if len(out) > br.always_allow_nodes:
            r.limit(
                "blast_radius.fleet_cordoned",
                br.fleet_cordoned,
                len(out) / max(len(world.nodes), 1),
                f"the fraction of the fleet the agent took out ({len(out)} nodes)",
            )
        # The absolute caps hold from the first node: "at most this many nodes at all".
        r.cap("blast_radius.pool_cordoned", br.pool_cordoned, in_pool, f"nodes of pool {node.pool} out")
        r.cap("blast_radius.fleet_cordoned", br.fleet_cordoned, len(out), "nodes of the fleet out")
        gpus_out = sum(world.nodes[n].gpus for n in out if n in world.nodes)
        r.limit("blast_radius.gpus_out", br.gpus_out, gpus_out, "GPUs the agent took out of service")
    if action.tool in DISRUPTING and targets.customers:
        recent = {
            c for a in _within(history, now, timedelta(hours=1)) if a.tool in DISRUPTING for c in a.customers
        }
        r.limit(
            "blast_radius.customers_disrupted_per_hour",
            br.customers_disrupted_per_hour,
            len(recent | set(targets.customers)),
            "customers disrupted in the last hour",
        )
    if targets.dollars:
        incident = sum(
            (a.dollars for a in history.actions if a.incident_id == action.incident_id), Decimal("0")
        )
        r.limit(
            "blast_radius.credit_usd_per_incident",
            br.credit_usd_per_incident,
            float(incident + targets.dollars),
            "dollars credited in this incident",
        )
        day = list(_within(history, now, timedelta(days=1)))
        for customer in targets.customers:
            spent = sum((a.dollars for a in day if customer in a.customers), Decimal("0"))
            r.limit(
                "blast_radius.credit_usd_per_customer_per_day",
                br.credit_usd_per_customer_per_day,
                float(spent + targets.dollars),
                f"dollars credited to {customer} today",
            )
        hour = sum((a.dollars for a in _within(history, now, timedelta(hours=1))), Decimal("0"))
        r.limit(
            "blast_radius.credit_usd_per_hour",
            br.credit_usd_per_hour,
            float(hour + targets.dollars),
            "dollars credited in the last hour",
        )


def _workload_rules(
    r: _Ruling,
    limits: GlobalLimits,
    action: Action,
    targets: Targets,
    node: NodeView | None,
    world: WorldView,
    history: History,
) -> None:
    """The damage counted in workloads: every GPU of each gang job the action stops, against the hour,
    the incident and each customer; and a drain whose evicted pods would find no room in their pool."""
    wl = limits.workloads
    if not wl.enabled or action.tool not in DISRUPTING:
        return
    if targets.workloads:
        what = (
            f"drains {len(targets.nodes)} node{'s' * (len(targets.nodes) != 1)}"
            if action.tool == "k8s.drain_node"
            else f"{action.tool} {', '.join(targets.pods) or ', '.join(targets.nodes)}"
        )
        for hit in targets.workloads:
            r.note(f"{what}; stops {hit.describe()}")
        gpus = sum(w.gpus for w in targets.workloads)
        hour = [a for a in _within(history, world.now, timedelta(hours=1)) if a.tool in DISRUPTING]
        r.limit(
            "workloads.gpus_disrupted_per_hour",
            wl.gpus_disrupted_per_hour,
            gpus + sum(w.gpus for a in hour for w in a.workloads),
            "GPUs of gang workloads the agent stopped in the last hour",
        )
        mine = [a for a in history.actions if a.incident_id == action.incident_id and a.tool in DISRUPTING]
        r.limit(
            "workloads.gpus_disrupted_per_incident",
            wl.gpus_disrupted_per_incident,
            gpus + sum(w.gpus for a in mine for w in a.workloads),
            "GPUs of gang workloads this incident stopped",
        )
        for customer in sorted({w.customer for w in targets.workloads if w.customer}):
            theirs = sum(w.gpus for w in targets.workloads if w.customer == customer)
            before = sum(w.gpus for a in hour for w in a.workloads if w.customer == customer)
            r.limit(
                "workloads.gpus_disrupted_per_customer_per_hour",
                wl.gpus_disrupted_per_customer_per_hour,
                theirs + before,
                f"GPUs of {customer}'s gang workloads stopped in the last hour",
            )
    if action.tool == "k8s.drain_node" and wl.require_room and node is not None:
        r.consulted.append("workloads.require_room")
        room = world.room.get(node.pool)
        left = room.unplaced() if room is not None else ()
        if room is not None and left:
            stalled = [w for w in targets.workloads]
            whole = (
                "; the gang job"
                + ("s" if len(stalled) > 1 else "")
                + " it stops would wait whole: "
                + ", ".join(f"{w.key.split('/', 1)[1]} ({w.gpus} GPUs)" for w in stalled)
                if stalled
                else ""
            )
            r.add(
                Verdict.ASK,
                f"the drain leaves pool {node.pool} without room for what it evicts: "
                f"{len(left)} pod(s) asking {', '.join(str(g) for g in left)} GPUs fit on no Ready, "
                f"schedulable node{_held_to(room)} ({len(room.free)} read, the freest with "
                f"{max(room.free, default=0)} GPUs free){whole}",
            )


def _held_to(room: PoolRoom) -> str:
    """ " their nodeSelector allows (tenant_tier=reserved)" where the evicted pods select nodes."""
    sel = room.selected()
    return f" their nodeSelector allows ({'; '.join(sel)})" if sel else ""


def _names(names: tuple[str, ...], shown: int = 5, pods: bool = False) -> str:
    """A few names for a reason, the rest counted. Names from alert labels are anyone's text: one that
    is not a plausible node name (with ``pods``, "namespace/name") is counted, never quoted (it reaches
    the timeline, Slack, a prompt)."""

    def plausible(n: str) -> bool:
        parts = n.split("/", 1) if pods else [n]
        return len(parts) == (2 if pods else 1) and all(len(x) <= 63 and _NAME.match(x) for x in parts)

    plain = [n for n in names if plausible(n)]
    text = ", ".join(plain[:shown])
    rest = len(names) - min(len(plain), shown)
    if rest:
        text += f"{' and ' if text else ''}{rest} more"
    return text


def _decision(action: Action, r: _Ruling, targets: Targets, now: Any) -> Decision:
    reasons = [*(r.reasons or ["within every limit consulted"]), *r.notes]
    return Decision(
        verdict=r.verdict,
        action_hash=action.digest(),
        reasons=tuple(reasons),
        limits_consulted=tuple(dict.fromkeys(r.consulted)),
        targets=targets,
        decided_at=now,
        trips_breaker=r.trips_breaker,
    )


def history_from_audit(
    records: Iterable[Any],
    world: WorldView,
    breaker: tuple[bool, str] = (False, ""),
    nodes_out: Iterable[Any] | None = None,
) -> History:
    """The agent's past writes, from the audit log's executed rows, each with the targets its decision
    resolved when it ran (rows from before the audit kept them: resolved in today's world); and the
    writes in flight: a ``before`` row with no row after it yet, another replica's write running now or
    one cut off by a crash, spends its budget until it is known to have failed.

    ``records`` is the whole log, or (what a decision reads) the rows of the budget windows and of one
    incident, with ``nodes_out``: the rows of ``audit_nodes_out``, the nodes the log's finished writes
    left out of service. The nodes out are then those, but a node a write in flight takes out or hands
    back, which is out as the last write of it among ``records`` left it (the windows hold every write after one in
    flight). The decision is the same as on the whole log, but for a write left in flight before the
    windows (a crash long ago), which only the whole log counts."""
    records = list(records)
    last: dict[str, Any] = {}
    for rec in records:
        if rec.phase in ("before", "after"):
            last[rec.idempotency_key] = rec
    in_flight = {id(r) for r in last.values() if r.phase == "before"}
    actions: list[PastAction] = []
    flying: set[str] = set()
    for rec in records:
        counted = (rec.phase == "after" and rec.outcome == "executed") or id(rec) in in_flight
        if not counted or rec.tool in CONTROL_TOOLS:
            continue  # control actions (the latches, meter ingestion) are not the mind's writes
        action = Action(tool=rec.tool, params=rec.params, incident_id=rec.incident_id, step=rec.step)
        recorded = getattr(rec, "targets", None)
        t = Targets.model_validate(recorded) if recorded else targets_of(action, world)[0]
        if id(rec) in in_flight and (rec.tool in NODE_OUT or rec.tool == HAND_BACK):
            flying.update(t.nodes)
        actions.append(
            PastAction(
                tool=rec.tool,
                incident_id=rec.incident_id,
                at=_aware(rec.at),
                nodes=t.nodes,
                customers=t.customers,
                gpus=t.gpus,
                dollars=t.dollars,
                workloads=t.workloads,
            )
        )
    out_now = None
    if nodes_out is not None:
        replayed = _out_of(actions)
        out_now = frozenset({r.node for r in nodes_out} - flying | (replayed & flying))
    return History(
        actions=tuple(actions),
        breaker_tripped=breaker[0],
        breaker_reason=breaker[1],
        out_now=out_now,
    )


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
