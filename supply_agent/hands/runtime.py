"""The agent's hands, as the graph sees them: read tools, the world view for the gate, the guarded
executor for writes, and verification (read the world back until the playbook's condition holds).

Reads run with the read-only credentials; writes only through :class:`GuardedExecutor` with the
write credentials. Tool I/O time is measured here, so a benchmark can split the agent's own time
from the time spent waiting on the cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from pydantic import BaseModel

from sandbox.executor.audit import AuditLog
from sandbox.executor.executor import ExecutionResult, GuardedExecutor
from supply_agent.hands.workloads import live_pods, with_workloads
from supply_agent.hands.world import Scope, enrich, read_breaker, read_world, scope_of
from supply_agent.hands.world_cache import CacheNotSynced, WorldCache
from supply_agent.models import Action, Approval, Decision
from supply_agent.policy import (
    CreditExists,
    CustomerNotified,
    DeploymentAvailable,
    MeterDuplicated,
    MeteringPaused,
    NodeCondition,
    NodeEvent,
    NodeTaint,
    NodeUnschedulable,
    PayoutHeld,
    PlaybookSet,
    PodAbsent,
    PodRunning,
    PodsOnNode,
    PodState,
)
from supply_agent.policy.gate import decide, history_from_audit, lookback, targets_of
from supply_agent.policy.world import History, WorldView
from tools.billing import Ledger, MeterReading
from tools.catalogue import CATALOGUE, DISRUPTING, Clients, Effect, parse_input
from tools.catalogue import run as run_tool
from tools.kubernetes import KubeTools, PodInfo, ToolError
from tools.notify import Outbox


class ReadResult(BaseModel):
    """A read tool's answer as JSON, whether the tool returned one model or a list of them."""

    value: Any


@dataclass
class IoMeter:
    """Seconds spent in tool I/O, per thread (one graph run per thread)."""

    _local: threading.local = field(default_factory=threading.local)

    @property
    def seconds(self) -> float:
        return float(getattr(self._local, "s", 0.0))

    def reset(self) -> None:
        self._local.s = 0.0

    def add(self, s: float) -> None:
        self._local.s = self.seconds + s


@dataclass
class Runtime:
    kube: KubeTools  # read-only credentials
    executor: GuardedExecutor  # holds the write credentials
    audit: AuditLog
    ledger: Ledger
    outbox: Outbox
    playbooks: PlaybookSet
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    meter_readings: Callable[[], list[MeterReading]] | None = None  # the meters as read now
    verify_poll_s: float = 0.25
    verify_cap_s: float = 30.0  # wall-clock cap on one verification, whatever the playbook's timeout
    io: IoMeter = field(default_factory=IoMeter)
    # Graph threads of several incidents share one runtime (``serve``): a decision and the write it allows
    # happen under this lock, and ``writes`` counts writes, so a decision made before another incident's
    # write is made again before it is acted on (two incidents cannot spend one blast-radius budget twice).
    # False only for the evals' --no-gate ablation (sandbox only): decisions are logged, not enforced.
    enforce_gate: bool = True
    write_lock: threading.RLock = field(default_factory=threading.RLock)
    # The watch cache decisions read (see ``supply_agent.hands.world_cache``). A long-lived process
    # (``serve``) sets one of nodes and pods. Without one, the first decision starts a cache of nodes
    # only (``scoped_reads``): one LIST of the nodes for the life of the process, then per decision the
    # pods it needs read live. While a cache cannot be used (not listed yet, its watch broke), a decision
    # LISTs nodes and pods itself.
    cache: WorldCache | None = None
    scoped_reads: bool = True
    cache_wait_s: float = 10.0
    # Nodes this process wrote (or tried to) since a decision last read them live: read-your-writes.
    _dirty: set[str] = field(default_factory=set)
    _cache_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def reader(self) -> Clients:
        """The clients reads run over: the read-only Kubernetes credentials."""
        return Clients(kube=self.kube, ledger=self.ledger, outbox=self.outbox, meters=self.meter_readings)

    # -- reads ---------------------------------------------------------------------------------------
    def _timed(self, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.io.add(time.perf_counter() - t0)

    def read(self, tool: str, params: dict[str, Any]) -> Any:
        """Run one read tool; the answer as JSON-able data. Raises ToolError / ValueError on bad input."""
        parsed = parse_input(tool, params)
        spec = CATALOGUE[tool]
        if spec.effect is not Effect.READ or spec.run is None:
            raise ValueError(f"{tool} is not a read tool")
        reader = self.reader
        return _jsonable(self._timed(lambda: run_tool(reader, tool, parsed)))

    def ingest_meters(
        self, incident_id: str, step: int, scope: dict[str, str] | None = None
    ) -> ExecutionResult | None:
        """Feed the meters into the ledger before billing reads: an explicit, audited ledger write (None
        when this cluster has no meter feed). ``scope`` (customer, namespace, pod) takes in only those
        meters: what the read is about, not the fleet's."""
        if "billing.ingest_meters" not in self.executor.runners:
            return None
        action = Action(
            tool="billing.ingest_meters",
            params=dict(scope or {}),
            incident_id=incident_id,
            step=step,
            proposed_by="hands",
        )
        return cast(
            ExecutionResult,
            self._timed(
                lambda: self.executor.control(
                    action, by="supply-agent", key=f"{incident_id}:{step}:{self.clock().isoformat()}"
                )
            ),
        )

    # -- the gate's inputs ---------------------------------------------------------------------------
    def world(self, action_nodes: list[str], alerting: frozenset[str]) -> WorldView:
        def run() -> WorldView:
            w = self._read_world(alerting, action_nodes)
            return enrich(w, self.kube, action_nodes) if action_nodes else w

        return cast(WorldView, self._timed(run))

    def warm(self) -> None:
        """Begin listing the nodes now, in the background (a one-shot command, while it reads its alerts
        and investigates): the first decision then waits for the list rather than making it."""
        if self.cache is None and self.scoped_reads:
            with self._cache_lock:
                if self.cache is None:
                    self.cache = WorldCache(self.kube, pods=False).start_background()

    def _decision_cache(self) -> WorldCache | None:
        """The cache decisions read now: the one set, or (``scoped_reads``) a cache of nodes started on
        first use; None while there is none in step with the cluster. A cache of nodes still listing (or
        listing again) is waited for, a little: its list costs far less than a decision's full read."""
        if self.cache is None and self.scoped_reads:
            with self._cache_lock:
                if self.cache is None:
                    try:
                        self.cache = WorldCache(self.kube, pods=False).start()
                    except Exception as exc:  # the cluster cannot be listed now: this decision reads itself
                        from supply_agent.logging import get_logger

                        get_logger(component="hands").warning(
                            "could not list the nodes for the world cache", error=str(exc)[:300]
                        )
                        return None
        cache = self.cache
        if cache is not None and not cache.watches_pods:
            cache.synced.wait(self.cache_wait_s)
        return cache if cache is not None and cache.synced.is_set() else None

    def _read_world(
        self,
        alerting: frozenset[str],
        live: list[str] | tuple[str, ...] = (),
        scope: Scope | None = None,
    ) -> WorldView:
        """The world for a decision, reading live the nodes given and those this process wrote since
        (O(them)): a cache of nodes and pods' snapshot; a cache of nodes with what ``scope`` names read
        live; or, with neither in step with the cluster, a full read of the cluster."""
        cache = self._decision_cache()
        if cache is None:
            return read_world(self.kube, self.clock(), alerting)
        with self.write_lock:
            fresh = set(live) | self._dirty
        try:
            if cache.watches_pods:
                if fresh:
                    cache.refresh(fresh)  # raises as a read does; the written nodes stay to be read next time
                world = cache.snapshot(self.clock(), alerting)
            else:
                s = scope or Scope()
                fresh |= s.nodes
                world = cache.scoped(
                    self.clock(),
                    alerting,
                    nodes=fresh,
                    if_known=s.if_known,
                    pods=s.pods,
                    deployments=s.deployments,
                )
        except CacheNotSynced:  # its watch broke since: it may have missed changes
            return read_world(self.kube, self.clock(), alerting)
        with self.write_lock:
            self._dirty -= fresh
        return world

    def _cached(self) -> bool:
        """Whether decisions read a watch cache of nodes and pods now (in step with the cluster)."""
        return self.cache is not None and self.cache.watches_pods and self.cache.synced.is_set()

    def _written_nodes(self, action: Action) -> set[str]:
        """The nodes an action writes (or may write part of): its node, or its pod's, as cached now."""
        cache = self.cache
        if cache is None:
            return set()
        p = action.params
        nodes = {n for n in (p.get("node"), *(p.get("nodes") or ())) if isinstance(n, str)}
        ns, pod = p.get("namespace"), p.get("pod")
        if isinstance(ns, str) and isinstance(pod, str) and (node := cache.node_of_pod(ns, pod)) is not None:
            nodes.add(node)
        return nodes

    def history(self, world: WorldView, incident_id: str | None = None) -> History:
        """The agent's past writes as the gate counts them. For a decision (``incident_id``): the audit
        rows of the budget windows and of that incident, and the nodes out now, whatever the log's
        length; without one, the whole log (reports and tests)."""
        breaker = self._timed(lambda: read_breaker(self.kube))
        if incident_id is None:
            return history_from_audit(self.audit.records(), world, breaker)
        rows, out = self.audit.for_decision(world.now - lookback(self.playbooks.limits), incident_id)
        return history_from_audit(rows, world, breaker, out)

    def decide(
        self,
        action: Action,
        alerting: frozenset[str],
        subject: frozenset[str] = frozenset(),
        *,
        pods: frozenset[str] = frozenset(),
        observed: frozenset[str] | None = None,
        customer_nodes: frozenset[str] | None = None,
    ) -> Decision:
        """Read the world and ask the gate (a pure function) about one action. The decision carries the
        world revision it was made on, read first: a write after that makes it stale at the executor.

        ``pods`` are the pods the incident is about ("namespace/name", from its pod alerts) and
        ``observed`` the customers its own reads saw on its nodes and pods (None: not given; the gate
        then asks a human about a customer the cluster does not show affected now)."""
        revision = self.executor.decision_revision()
        world = cast(
            WorldView,
            self._timed(
                lambda: self._read_world(alerting, (), scope_of(action, subject, pods, customer_nodes))
            ),
        )
        targets, _ = targets_of(action, world)
        # Truth about the incident's nodes is the cluster's: a node an alert names and the cluster does
        # not have (a ghost, a typo, an injected label) is no subject of it.
        subject = frozenset(n for n in subject if n in world.nodes)
        nodes = sorted(set(targets.nodes) | (subject if len(subject) == 1 else set()))
        if nodes and self._cached():
            # The targets as the API server has them now, not as the watch last delivered them.
            world = cast(WorldView, self._timed(lambda: self._read_world(alerting, nodes)))
        if nodes:
            world = cast(WorldView, self._timed(lambda: enrich(world, self.kube, nodes)))
        if action.tool in DISRUPTING and self.playbooks.limits.workloads_read:
            # The gang jobs it would stop, whole, and (a drain) where what it evicts could go.
            pods_of = None if self._cached() else live_pods(self.kube)
            world = cast(
                WorldView,
                self._timed(
                    lambda: with_workloads(
                        world,
                        self.kube,
                        targets.nodes,
                        targets.pods,
                        drain=action.tool == "k8s.drain_node",
                        pods_of=pods_of,
                    )
                ),
            )
        update: dict[str, Any] = {
            "subject_nodes": subject,
            "subject_pods": pods,
            "observed_customers": observed,
            "customer_nodes": customer_nodes,
        }
        playbook = self.playbooks.get(action.playbook_id) if action.playbook_id else None
        if playbook is not None and any(
            isinstance(c, MeterDuplicated) for c in playbook.containment.preconditions
        ):
            update["running_meters"] = self._running_meters(pods | set(targets.pods))
        world = world.model_copy(update=update)
        decision = decide(action, world, self.history(world, action.incident_id), self.playbooks)
        return decision.model_copy(update={"world_revision": revision})

    def _running_meters(self, pods: frozenset[str]) -> dict[str, int]:
        """How many running meters count each of these pods now ("namespace/name"; a pod no meter
        counts is left out). Empty when there is no meter feed, or the feed cannot be read."""
        feed = self.meter_readings
        if feed is None or not pods:
            return {}
        try:
            readings = cast(list[MeterReading], self._timed(feed))
        except Exception as exc:  # the precondition then does not hold: no billing write on an unread meter
            from supply_agent.logging import get_logger

            get_logger(component="hands").warning("the meter feed could not be read", error=str(exc)[:300])
            return {}
        counts: dict[str, int] = {}
        for r in readings:
            key = f"{r.namespace}/{r.pod}"
            if key in pods:
                counts[key] = counts.get(key, 0) + int(r.running)
        return counts

    def execute(self, action: Action, decision: Decision, approval: Approval | None) -> ExecutionResult:
        wrote = self._written_nodes(action)
        try:
            return cast(
                ExecutionResult, self._timed(lambda: self.executor.execute(action, decision, approval))
            )
        finally:
            if wrote:  # read live by the next decision (read-your-writes)
                with self.write_lock:
                    self._dirty |= wrote

    # -- verification --------------------------------------------------------------------------------
    def check(self, condition: Any, action: Action) -> tuple[bool, str]:
        """Whether the playbook's condition holds now for this action's target; what was seen."""
        p = action.params
        try:
            return cast(tuple[bool, str], self._timed(lambda: self._check(condition, action, p)))
        except ToolError as exc:
            return False, f"could not read: {exc}"

    def _check(self, c: Any, action: Action, p: dict[str, Any]) -> tuple[bool, str]:
        k = self.kube
        if isinstance(c, NodeUnschedulable):
            node = k.get_node(p["node"])
            return node.unschedulable == c.value, f"{node.name} unschedulable={node.unschedulable}"
        if isinstance(c, NodeTaint):
            node = k.get_node(p["node"])
            key = c.key if "/" in c.key else f"supply-agent.io/{c.key}"
            has = any(t.key == key and (c.effect is None or t.effect == c.effect) for t in node.taints)
            return has == c.present, f"{node.name} taint {key} present={has}"
        if isinstance(c, NodeCondition):
            node = k.get_node(p["node"])
            cond = node.condition(c.condition)
            status = cond.status if cond else "Unknown"
            return status == str(c.status), f"{node.name} {c.condition}={status}"
        if isinstance(c, NodeEvent):
            reasons = {e.reason for e in k.events_for("Node", p["node"])}
            return (c.reason in reasons) == c.present, f"event {c.reason} present={c.reason in reasons}"
        if isinstance(c, PodsOnNode):
            pods = [x for x in k.list_pods_on_node(p["node"]) if not (c.except_daemonsets and x.daemonset)]
            live = [x for x in pods if x.phase not in ("Succeeded", "Failed")]
            return len(live) <= c.max, f"{len(live)} pods left on {p['node']} (at most {c.max})"
        if isinstance(c, PodState):
            pod = k.get_pod(p["namespace"], p["pod"])
            reasons = {r for r in (pod.waiting_reason, pod.last_termination_reason) if r}
            shown = ", ".join(sorted(reasons)) or "no waiting or termination reason"
            return bool(reasons & set(c.reasons)), f"{pod.namespace}/{pod.name}: {shown}"
        if isinstance(c, PodRunning):
            found = _pod_or_none(k, p["namespace"], p["pod"])
            if found is None:
                return False, f"{p['namespace']}/{p['pod']} is gone"
            pod = found
            running = pod.phase == "Running" and pod.ready and not pod.waiting_reason and not pod.terminating
            why = (
                pod.waiting_reason
                or ("Terminating" if pod.terminating else "")
                or ("ready" if pod.ready else "not ready")
            )
            return running, f"{pod.namespace}/{pod.name} {pod.phase}, {why}, restarts={pod.restarts}"
        if isinstance(c, PodAbsent):
            left = _pod_or_none(k, p["namespace"], p["pod"])
            if left is None:
                return True, f"{p['namespace']}/{p['pod']} is gone"
            return False, f"{left.namespace}/{left.name} still exists (uid {left.uid})"
        if isinstance(c, DeploymentAvailable):
            d = k.deployment_status(p["namespace"], p["deployment"])
            ok = d.observed_generation >= d.generation and d.updated == d.replicas == d.available
            return ok, f"{d.namespace}/{d.name} {d.available}/{d.replicas} available, {d.updated} updated"
        if isinstance(c, CreditExists):
            credits = self.ledger.credits_for_incident(action.incident_id)
            mine = [x for x in credits.credits if x.customer == p.get("customer", x.customer)]
            return (
                bool(mine),
                f"{len(mine)} credit(s) for {p.get('customer', '-')}: ${sum((x.amount_usd for x in mine), Decimal(0))}",
            )
        if isinstance(c, MeteringPaused):
            state = self.ledger.metering_state(p["namespace"], p["pod"])
            return state.paused == c.value, f"metering of {p['namespace']}/{p['pod']} paused={state.paused}"
        if isinstance(c, PayoutHeld):
            hold = self.ledger.payout_hold(p["node"])
            return hold.held == c.value, f"payout for {p['node']} held={hold.held}"
        if isinstance(c, CustomerNotified):
            notices = [
                n
                for n in self.outbox.notices(action.incident_id)
                if n.customer == p.get("customer", n.customer)
            ]
            return bool(notices), f"{len(notices)} notice(s) to {p.get('customer', '-')}"
        return False, f"no verifier for {type(c).__name__}"

    def verify(self, condition: Any, action: Action, timeout: timedelta) -> tuple[bool, str]:
        """Poll until the condition holds or the (capped) timeout passes: reconcile, don't assume."""
        deadline = time.monotonic() + min(timeout.total_seconds(), self.verify_cap_s)
        while True:
            ok, seen = self.check(condition, action)
            if ok or time.monotonic() >= deadline:
                return ok, seen
            time.sleep(self.verify_poll_s)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _pod_or_none(kube: KubeTools, namespace: str, name: str) -> PodInfo | None:
    """The pod, or None when the cluster has no such pod (404); any other failure is raised."""
    try:
        return kube.get_pod(namespace, name)
    except ToolError as exc:
        if exc.status == 404:
            return None
        raise
