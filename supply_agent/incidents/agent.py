"""The agent: alerts in, one graph thread per incident, approvals answered, results out.

Alerts are stored before anything else happens. Each incident is a LangGraph thread (thread id =
incident id) checkpointed after every node, so a crashed process resumes where it stopped and a
paused approval survives a restart. The incident store mirrors each thread's timeline for people.

Long because it is the one facade over a thread's life: folding alerts into incidents, running, waking
and resuming threads (an approval's answer, a step's wait), and reading their pauses; the fold's rules
live in supply_agent.incidents.grouping, merge and topology, the graph in supply_agent.mind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from pydantic import BaseModel, Field

from supply_agent import failpoints
from supply_agent.hands.runtime import Runtime
from supply_agent.hands.wiring import Environment, build_environment
from supply_agent.incidents.checkpoint import is_postgres, open_checkpointer
from supply_agent.incidents.fold_reads import ClusterUnreadable, FoldReads
from supply_agent.incidents.grouping import (
    group_alerts,
    incident_id_for,
    join_window,
    next_incident_id,
    node_incident_base,
)
from supply_agent.incidents.merge import fold_with_earlier, merge_earlier
from supply_agent.incidents.store import IncidentStore
from supply_agent.incidents.topology import component_home
from supply_agent.incidents.topology import incident_id_of as incident_of_component
from supply_agent.mind.graph import GraphDeps, build_graph
from supply_agent.mind.nodes.approval import WAKE
from supply_agent.mind.nodes.wait import TAKEN, TIMER
from supply_agent.mind.nodes.wait import WAIT as WAIT_KIND
from supply_agent.mind.planners.base import Planner
from supply_agent.mind.planners.factory import make_planner
from supply_agent.models.approvals import counts
from supply_agent.models.incident import AlertIn, Component, IncidentState, TimelineEntry
from supply_agent.policy import PlaybookSet
from supply_agent.settings import Settings

log = structlog.get_logger("supply_agent.incidents.agent")


class ApprovalRequest(BaseModel):
    """What a human is asked: what, why, the blast radius and the gate's reasons; it expires."""

    interrupt_id: str
    incident_id: str
    step: int
    action_hash: str
    tool: str
    params: dict[str, Any]
    why: str
    planner: str
    blast_radius: dict[str, Any]
    reasons: list[str]
    asked_at: datetime
    expires_at: datetime
    approvers: list[str]


class WaitRequest(BaseModel):
    """A thread waiting for a step's moment (supply_agent.mind.nodes.wait): resumed at ``until``."""

    interrupt_id: str
    incident_id: str
    step_key: str
    tool: str
    subject: str | None = None
    until: datetime
    deadline: datetime
    reason: str


class ApprovalAnswer(BaseModel):
    approved: bool
    approver: str
    decided_at: datetime
    channel: str = "terminal"
    comment: str = ""
    # The request it answers (a Slack click's button names it). Set, it must be the pending one: the
    # interrupt id may change while a request waits (a wake asks the same question again), its action
    # hash does not.
    action_hash: str | None = None


class Approver(Protocol):
    def answer(self, request: ApprovalRequest) -> ApprovalAnswer | None:
        """An answer now, or None to leave the request pending (answered later, e.g. from Slack)."""
        ...


class RunResult(BaseModel):
    incident_id: str
    status: Literal["done", "paused", "duplicate"]
    state: IncidentState
    pending: ApprovalRequest | None = None
    waiting: WaitRequest | None = None  # paused until a step's moment (no human asked)
    agent_s: float = 0.0
    io_s: float = 0.0
    timings: dict[str, float] = Field(default_factory=dict)


class Agent:
    def __init__(
        self,
        runtime: Runtime,
        store: IncidentStore,
        planner: Planner,
        checkpointer: Any,
        on_entry: Callable[[str, TimelineEntry], None] | None = None,
        max_reads: int = 30,
        on_update: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.planner = planner
        self.on_entry = on_entry
        self.on_update = on_update  # called after each graph node's update is checkpointed
        window = runtime.playbooks.limits.mass_failure.window
        self.deps = GraphDeps(
            runtime=runtime,
            planner=planner,
            alerting_nodes=lambda now: store.alerting_nodes(now, window),
            human_owner=lambda iid: _owner(store, iid),
            max_reads=max_reads,
            max_writes=runtime.playbooks.limits.rate_limits.writes_per_incident,
        )
        self.graph = build_graph(self.deps, checkpointer)

    # -- intake ------------------------------------------------------------------------------------
    def open(
        self,
        alerts: Iterable[AlertIn],
        body: dict[str, Any] | None = None,
        window: timedelta | None = None,
    ) -> list[IncidentState]:
        """Store the alerts (first), fold them into incidents; the incidents that are new (see :meth:`fold`)."""
        return self.fold(alerts, body, window)[0]

    def fold(
        self,
        alerts: Iterable[AlertIn],
        body: dict[str, Any] | None = None,
        window: timedelta | None = None,
    ) -> tuple[list[IncidentState], set[str]]:
        """Store the alerts (first), fold them into incidents; the incidents that are new, and every
        incident an alert opened or joined.

        A delivery seen before (both senders retry) changes nothing, unless its fold was cut short (the
        alert is stored and in no incident yet): then it is folded now. New alerts of a class whose
        incident is still open join it. With a grouping ``window``, the same alert again (a flap, a storm
        of re-sends) joins the incident it belonged to if that closed within the window; a resolved
        alert never opens an incident. Otherwise, once an incident is closed, its class opens the next.
        Each incident is opened before its alerts are linked to it, so a fold that fails half-way is
        finished by the next attempt."""
        now = self.runtime.clock()
        fresh = [a for a in alerts if self.store.record_alert(a, body or a.model_dump(mode="json"), now)]
        # An alert no playbook knows by name is folded by what its GPU shows (one read per node).
        reads = FoldReads(
            self.runtime.kube, lambda node: self.runtime.read("nvml.gpu_health", {"node": node})
        )
        fresh = [self._named(a, reads) for a in fresh]
        rest = []
        touched: set[str] = set()
        for a in fresh:
            looks, since = join_window(a, now, window)
            known = self.store.incident_of(a.fingerprint, since) if looks else None
            if known is not None:
                self.store.link_alerts([a], known)
                touched.add(known)
            elif a.status == "firing":
                rest.append(a)
        new = []
        shared, rest, merged = fold_with_earlier(rest, self.store, self.runtime.playbooks, reads, now)
        rest = self._into_components(rest, reads, now, touched)
        rest, on_dead = self._on_dead_nodes(rest, reads)
        if reads.down is not None:
            log.warning("could not read the cluster while folding: folded node by node", error=reads.down)
        groups: list[tuple[list[AlertIn], str, Component | None]] = [
            (g.alerts, incident_of_component(g.component), g.component) for g in shared
        ]
        groups += [(g, incident_id_for(g), None) for g in group_alerts(rest)]
        for alert, node in on_dead:
            # A pod's symptom on a node that is down is the node's incident (its pods die with it).
            home = next(
                (
                    g
                    for g, _, c in groups
                    if (c is not None and node in c.nodes) or any(a.node == node and a.pod is None for a in g)
                ),
                None,
            )
            if home is not None:
                home.append(alert)
                continue
            known = next_incident_id(
                node_incident_base(node),
                lambda i: (row := self.store.get(i)) is not None and row.status == "closed",
            )
            if self.store.get(known) is not None:
                self.store.link_alerts([alert], known)
                touched.add(known)
                log.info("a pod's alert joined its dead node's incident", incident_id=known, node=node)
            else:
                groups.append(([alert], incident_id_for([alert]), None))
        for group, base, component in groups:
            iid = next_incident_id(
                base, lambda i: (row := self.store.get(i)) is not None and row.status == "closed"
            )
            state = IncidentState(incident_id=iid, alerts=group, opened_at=now, component=component)
            title = group[0].annotations.get("summary") or group[0].alertname
            if component is not None:
                title = (
                    f"{len(component.nodes)} of the {component.size} nodes of {component.kind} "
                    f"{component.name} alert at once ({group[0].alertname})"
                )
            opened = self.store.open_incident(state, title)
            if component is not None:
                # Before the new alerts are linked: a fold cut short here is folded again from them,
                # and the earlier incidents are merged already or still whole.
                earlier = merged.get((component.kind, component.name), {})
                touched |= merge_earlier(self.store, earlier, iid, component, now)
            self.store.link_alerts(group, iid)
            touched.add(iid)
            if opened:
                new.append(state)
            else:
                log.info("alerts joined an open incident", incident_id=iid, alerts=len(group))
        return new, touched

    def _named(self, alert: AlertIn, reads: FoldReads) -> AlertIn:
        """The alert naming its node as the cluster knows it, where the name it carries is not one the
        cluster has but leads to one (``FoldReads.named``); kept with the stored alert. Otherwise as it came:
        a name that leads to no node is the investigation's to refuse (it goes to a human)."""
        found = reads.named(alert) if alert.node else None
        if found is None:
            return alert
        node, how = found
        assert alert.node is not None
        self.store.name_node(alert.fingerprint, alert.node, node)
        log.info("an alert's node named as the cluster knows it", alert_node=alert.node, node=node, how=how)
        return alert.model_copy(update={"labels": {**alert.labels, "node": node}})

    def _into_components(
        self, alerts: list[AlertIn], reads: FoldReads, now: datetime, touched: set[str]
    ) -> list[AlertIn]:
        """Alerts that join a component's incident opened earlier (open, or closed within the grouping
        window): a rack's seventh node that throttles a minute after the six is the rack's, not a new
        page. The rest, in order."""
        if not any(pb.topology for pb in self.runtime.playbooks):
            return alerts
        window = self.runtime.playbooks.limits.mass_failure.window

        def latest(base: str) -> tuple[str, str | None] | None:
            iid, n, last = base, 1, None
            while (row := self.store.get(iid)) is not None:
                last, n = row, n + 1
                iid = f"{base}-{n}"
            if last is None or (
                last.status == "closed" and (last.closed_at is None or last.closed_at < now - window)
            ):
                return None
            return last.id, last.playbook_id

        rest = []
        for a in alerts:
            try:
                labels = reads.labels_of(a.node) if a.node and a.status == "firing" else None
            except ClusterUnreadable:
                labels = None
            home = component_home(a, self.runtime.playbooks, labels, latest, reads.shown)
            if home is None:
                rest.append(a)
                continue
            self.store.link_alerts([a], home)
            touched.add(home)
            log.info("an alert joined its component's incident", incident_id=home, node=a.node)
        return rest

    def _on_dead_nodes(
        self, alerts: list[AlertIn], reads: FoldReads
    ) -> tuple[list[AlertIn], list[tuple[AlertIn, str]]]:
        """The pod alerts whose pod is on a node the cluster shows not Ready, with that node; and the
        rest. A pod stuck Terminating or not ready on a dead host is a symptom of the host (kubernetes
        #72226): one incident, the node's. Where the pod runs comes from the cluster, not the alert."""
        rest, moved = [], []
        for a in alerts:
            pod = a.pod if a.status == "firing" else None
            try:
                node = reads.dead_node_of(*pod) if pod is not None else None
            except ClusterUnreadable:
                node = None
            if node is None:
                rest.append(a)
            else:
                moved.append((a, node))
        return rest, moved

    # -- running a thread --------------------------------------------------------------------------
    @staticmethod
    def config(incident_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": incident_id}, "recursion_limit": 200}

    def run(self, incident: IncidentState | str, resume: ApprovalAnswer | None = None) -> RunResult:
        """Run (or resume) one incident's thread until it ends or pauses for an approval."""
        iid = incident if isinstance(incident, str) else incident.incident_id
        bound = log.bind(incident_id=iid)
        if resume is not None:
            pending = self.pending(iid)
            if pending is None:
                raise ValueError(f"incident {iid} has no pending approval")
            if resume.action_hash is not None and resume.action_hash != pending.action_hash:
                raise ValueError(
                    f"incident {iid}: the answer is for action {resume.action_hash[:12]}, and the pending "
                    f"approval is for {pending.action_hash[:12]}"
                )
            if not counts(resume.approver, resume.approved, self.runtime.executor.approvers):
                # Changes nothing, and is audited: the request stays pending for someone who may approve.
                text = f"ignored an approval from {resume.approver} via {resume.channel}: not an approver"
                self.store.note(iid, self.runtime.clock(), text, action_hash=pending.action_hash)
                bound.warning(text)
                return RunResult(incident_id=iid, status="paused", state=self.state(iid), pending=pending)
            payload = {pending.interrupt_id: resume.model_dump(mode="json", exclude={"action_hash"})}
            joined = self.joined(iid)
            # Alerts that joined and did not wake it yet go in with the answer (the runbook then gives
            # each new entity its steps).
            graph_input: Any = Command(resume=payload, update={"alerts": joined} if joined else None)
            if joined:
                bound.info("alerts joined while paused", alerts=len(joined))
        elif isinstance(incident, IncidentState):
            graph_input = incident
        else:
            graph_input = None  # continue a thread from its last checkpoint (after a crash)
        return self._drive(iid, graph_input)

    def wake(self, incident_id: str) -> RunResult | None:
        """Take in the alerts that joined a thread paused at an approval, and plan for them now.

        The interrupt is resumed with a wake (not an answer): the step waiting for approval is parked,
        the new entities get the steps that need no human (each through the gate, as always), and the
        thread pauses again on the same request (same action hash, same expiry). None, changing
        nothing, when the thread is not paused or no alert joined it since it last took them in: waking
        twice for the same alerts does nothing the second time."""
        pending = self.pending(incident_id)
        waiting = self.waiting(incident_id) if pending is None else None
        if pending is None and waiting is None:
            return None
        joined = self.joined(incident_id)
        if not joined:
            return None
        new = len(joined) - len(self.state(incident_id).alerts)
        log.info("alerts joined a paused incident: waking it", incident_id=incident_id, alerts=new)
        if pending is not None:
            wake = {"kind": WAKE, "alerts": new, "action_hash": pending.action_hash}
            interrupt_id = pending.interrupt_id
        else:
            assert waiting is not None
            wake = {"kind": WAKE, "alerts": new, "step_key": waiting.step_key}
            interrupt_id = waiting.interrupt_id
        return self._drive(incident_id, Command(resume={interrupt_id: wake}, update={"alerts": joined}))

    def resume_wait(self, incident_id: str) -> RunResult | None:
        """Resume a thread waiting for a step's moment once that moment has come (the clock is at or
        past its ``until``), or at once when a human took the incident (the step would be refused: the
        thread ends now, not at the moment); alerts that joined go in with it. None, changing nothing,
        when it is not waiting or its time has not come: a timer that fires twice, or early, does
        nothing."""
        waiting = self.waiting(incident_id)
        if waiting is None:
            return None
        early = self.runtime.clock() < waiting.until
        if early and _owner(self.store, incident_id) is None:
            return None
        joined = self.joined(incident_id)
        log.info("a step's wait is over: resuming", incident_id=incident_id, step=waiting.step_key)
        timer = {"kind": TAKEN if early else TIMER, "step_key": waiting.step_key}
        return self._drive(
            incident_id,
            Command(resume={waiting.interrupt_id: timer}, update={"alerts": joined} if joined else None),
        )

    def _drive(self, iid: str, graph_input: Any) -> RunResult:
        """Stream the thread from ``graph_input`` until it ends or pauses; mirror it in the store."""
        bound = log.bind(incident_id=iid)
        cfg = self.config(iid)
        self.runtime.io.reset()
        self.deps.timings.clear()
        t0 = time.perf_counter()
        for update in self.graph.stream(graph_input, cfg, stream_mode="updates", durability="sync"):
            for node, part in update.items():
                if not isinstance(part, dict):
                    continue
                for entry in part.get("timeline") or []:
                    bound.info(entry.text, graph_node=node, kind=entry.kind)
                    if self.on_entry is not None:
                        self.on_entry(iid, entry)
                if self.on_update is not None:
                    self.on_update(node, part)
                failpoints.reached(f"node:{node}")
        wall = time.perf_counter() - t0
        state = self.state(iid)
        pending = self.pending(iid)
        waiting = self.waiting(iid) if pending is None else None
        paused = pending is not None or waiting is not None
        status: Literal["done", "paused"] = "paused" if paused else "done"
        self.store.save(
            state, "paused" if paused else ("closed" if state.outcome else "open"), self.runtime.clock()
        )
        io = self.runtime.io.seconds
        return RunResult(
            incident_id=iid,
            status=status,
            state=state,
            pending=pending,
            waiting=waiting,
            agent_s=max(0.0, wall - io),
            io_s=io,
            timings=dict(self.deps.timings),
        )

    def joined(self, incident_id: str) -> list[AlertIn]:
        """The thread's alerts plus those linked to the incident since (in arrival order); empty when
        none joined."""
        have = self.state(incident_id).alerts
        seen = {a.fingerprint + a.status for a in have}
        new = [a for a in self.store.alerts_for(incident_id) if a.fingerprint + a.status not in seen]
        return [*have, *new] if new else []

    def state(self, incident_id: str) -> IncidentState:
        snap = self.graph.get_state(self.config(incident_id))
        if not snap.values:
            raise KeyError(f"no checkpointed thread for incident {incident_id}")
        values = snap.values
        return values if isinstance(values, IncidentState) else IncidentState.model_validate(values)

    def pending(self, incident_id: str) -> ApprovalRequest | None:
        snap = self.graph.get_state(self.config(incident_id))
        for intr in snap.interrupts:
            value = intr.value
            if isinstance(value, dict) and value.get("kind") == "approval":
                return ApprovalRequest(
                    interrupt_id=intr.id, **{k: v for k, v in value.items() if k != "kind"}
                )
        return None

    def waiting(self, incident_id: str) -> WaitRequest | None:
        """The step the thread waits for the moment of (see supply_agent.mind.nodes.wait); None if none."""
        snap = self.graph.get_state(self.config(incident_id))
        for intr in snap.interrupts:
            value = intr.value
            if isinstance(value, dict) and value.get("kind") == WAIT_KIND:
                return WaitRequest(interrupt_id=intr.id, **{k: v for k, v in value.items() if k != "kind"})
        return None

    def unfinished(self, incident_id: str) -> bool:
        """A thread that started and neither ended nor paused: a crash; ``run(id)`` continues it.

        LangGraph saves a task's writes as the task finishes and the step's checkpoint after the step.
        Read live (the latest state), a step whose tasks all saved their writes before the process died
        lists no ``next`` task, yet its ``tasks`` are there and its checkpoint was never written: the
        thread has not ended, and running it applies those writes and goes on. Taking it for ended left
        the incident open with nothing to move it (every resync ran it, and it did nothing)."""
        snap = self.graph.get_state(self.config(incident_id))
        return bool(snap.values) and bool(snap.next or snap.tasks) and not snap.interrupts

    # -- the whole job -----------------------------------------------------------------------------
    def handle(self, alerts: Iterable[AlertIn], approver: Approver | None) -> list[RunResult]:
        """Open incidents for the alerts and run each until it ends, answering approvals as it goes. An
        incident paused at an approval that the alerts joined is woken (see :meth:`wake`) and answered
        the same way."""
        new, touched = self.fold(alerts)
        results = [self._answered(self.run(incident), approver) for incident in new]
        for iid in sorted(touched - {s.incident_id for s in new}):
            # A run cut short (a crash mid-wake, say) is brought to its pause or its end first.
            result = self.run(iid) if self.unfinished(iid) else None
            result = self.wake(iid) or result
            if result is not None:
                results.append(self._answered(result, approver))
        return results

    def _answered(self, result: RunResult, approver: Approver | None) -> RunResult:
        while result.pending is not None and approver is not None:
            answer = approver.answer(result.pending)
            if answer is None:
                break
            result = self.run(result.incident_id, resume=answer)
        return result


def _owner(store: IncidentStore, incident_id: str) -> str | None:
    """Who holds the incident instead of the agent: the human who took it, or the component incident
    it was merged into."""
    row = store.get(incident_id)
    if row is None:
        return None
    if row.human_owner:
        return row.human_owner
    return f"incident {row.folded_into} (this one was merged into it)" if row.folded_into else None


def checkpoint_url(settings: Settings) -> str:
    """The checkpointer's URL: as set; else the database's when that is Postgres (one database for all
    the replicas share); else a SQLite file in the data directory."""
    if settings.checkpoint_url:
        return settings.checkpoint_url
    if is_postgres(settings.database_url):
        return settings.database_url
    return str(settings.data_dir / "checkpoints.sqlite")


@contextmanager
def open_agent(
    settings: Settings,
    kubeconfig: Path,
    *,
    planner: Planner | None = None,
    on_entry: Callable[[str, TimelineEntry], None] | None = None,
    extra_approvers: frozenset[str] = frozenset(),
    playbooks: PlaybookSet | None = None,
    clock: Callable[[], datetime] | None = None,
    enforce_gate: bool = True,
) -> Iterator[tuple[Agent, Environment]]:
    """An :class:`Agent` on the cluster in ``kubeconfig``, with its store and checkpointer open."""
    env = build_environment(settings, kubeconfig, playbooks=playbooks, clock=clock, enforce_gate=enforce_gate)
    if extra_approvers:
        env.runtime.executor.approvers = env.runtime.executor.approvers | extra_approvers
    store = IncidentStore.from_url(settings.resolved_database_url())
    try:
        with open_checkpointer(checkpoint_url(settings)) as cp:
            agent = Agent(
                env.runtime, store, planner or make_planner(settings.planner, settings), cp, on_entry
            )
            yield agent, env
    finally:
        store.close()
        env.close()
