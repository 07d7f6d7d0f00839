"""What the service's parts share: its clients, stores, queues and locks (one object; each part of
the service is a mixin over it, the way the sandbox fleet's controllers are)."""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from sandbox.executor.fencing import Fence, LeaseTable
from sandbox.executor.runners import runners
from supply_agent.hands.wiring import Environment
from supply_agent.incidents.agent import Agent, ApprovalAnswer, ApprovalRequest, RunResult
from supply_agent.incidents.store import IncidentStore
from supply_agent.intake.accept import Intake
from supply_agent.intake.events import EventLog
from supply_agent.metrics import Metrics
from supply_agent.models.incident import (
    IncidentState,
)
from supply_agent.service.jobs import Backoff, JobStore
from supply_agent.service.kube_lease import KubeLeaseElector
from supply_agent.service.leases import Leases, replica_name
from supply_agent.service.prompts import Prompt, PromptStore
from supply_agent.settings import Settings
from tools.catalogue import Clients
from tools.pagerduty import PagerDutyClient
from tools.slack import SlackClient

log = structlog.get_logger("supply_agent.service.core")

# Timeline kinds that become PagerDuty notes: each finding and each action, the human answers, and a
# step scheduled for later (when it runs, and why).
NOTE_KINDS = frozenset({"evidence", "action", "approval", "scheduled"})
GROUP_CACHE_S = 60.0
FOLLOW_S = 0.05  # how often a service following the event log looks for new events
RESCAN_S = 5.0  # and how often it looks again at every pending one (none may be passed over)


class ServiceState:
    """The service's state; the methods one part calls on another are declared here for the type checker."""

    def __init__(
        self,
        settings: Settings,
        agent: Agent,
        env: Environment,
        events: EventLog,
        prompts: PromptStore,
        *,
        pagerduty: PagerDutyClient | None = None,
        slack: SlackClient | None = None,
        metrics: Metrics | None = None,
        wall: Callable[[], float] = time.time,
        follow_log: bool = False,
        elector: KubeLeaseElector | None = None,
    ) -> None:
        self.settings = settings
        self.agent = agent
        self.env = env
        self.store: IncidentStore = agent.store
        self.events = events
        self.prompts = prompts
        self.pd = pagerduty
        self.slack = slack
        self.metrics = metrics or Metrics()
        self.wall = wall  # Slack's signing window is in real time, whatever the cluster's clock says
        self.clock = env.runtime.clock
        self.window = timedelta(seconds=settings.grouping_window_s)
        self._queue: queue.Queue[int] = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="graph")
        # Write-back runs apart from the graph threads: a slow PagerDuty never holds a run or a prompt.
        self._outbox_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="outbox")
        self.jobs = JobStore(agent.store.engine)
        # Leases on the executor's database: its audit rows are fenced by them in one transaction.
        lease_table = LeaseTable(env.runtime.executor.audit.engine, ttl_s=settings.lease_s)
        self.leases = Leases(
            lease_table, elector.identity if elector else replica_name(settings.replica_id), elector
        )
        self.fence = Fence(lease_table)
        env.runtime.executor.fence = self.fence
        self.backoff = Backoff(settings.retry_base_s, settings.retry_cap_s)
        self._wake = threading.Event()
        self._lanes_lock = threading.Lock()
        self._busy: dict[str, float] = {}  # lanes with a job running here: since when (monotonic)
        self._retry_at: list[tuple[float, int]] = []  # events put back: (due, id), a heap
        self._failures: dict[str, Any] = {}  # work failing now, by lane or event: the watchdog's Stall
        self._handed_back: set[str] = set()  # stalls handed back to humans: "<incident>:<since>"
        self._incident_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._futures: set[Future[None]] = set()
        self._static_approvers = frozenset(env.runtime.executor.approvers)
        self._groups_at = 0.0
        self._our_acks: set[str] = set()
        self._own_pd_user: str | None = settings.pagerduty_user_id or None
        self.follow_log = follow_log
        self._last_seen = 0  # following the log: the newest event id queued
        self._queued: set[int] = set()  # queued and not yet finished
        self.intake = Intake(
            settings,
            events,
            self.metrics,
            pending=lambda: self._pending,
            stored=self._enqueue,
            wall=lambda: self.wall(),
        )
        # Write-back is executor actions too (audited, keyed), over the clients configured here.
        runtime = env.runtime
        runtime.executor.runners.update(
            runners(
                Clients(
                    kube=env.writer,
                    ledger=runtime.ledger,
                    outbox=runtime.outbox,
                    pagerduty=pagerduty,
                    slack=slack,
                ),
                ("pagerduty.", "slack."),
            )
        )

    if TYPE_CHECKING:

        def _enqueue(self, event_id: int) -> None: ...
        def _put(
            self,
            kind: str,
            iid: str,
            key: str,
            payload: dict[str, Any] | None = None,
            delay_s: float = 0.0,
        ) -> int | None: ...
        def _graph(self, iid: str, call: Callable[[], RunResult | None]) -> RunResult | None: ...
        def _put_run(self, iid: str) -> None: ...
        def _run(self, target: IncidentState | str, resume: ApprovalAnswer | None = None) -> RunResult: ...
        def _wake_paused(self, iid: str) -> RunResult | None: ...
        def _after(self, result: RunResult, fresh: bool = True) -> None: ...
        def _acknowledge(self, state: IncidentState) -> None: ...
        def _send(self, iid: str, tool: str, params: dict[str, Any], key: str) -> None: ...
        def _deliver(
            self, iid: str, tool: str, params: dict[str, Any], key: str
        ) -> dict[str, Any] | None: ...
        def _prompt(self, iid: str, request: ApprovalRequest) -> None: ...
        def _post_prompt(self, iid: str, action_hash: str) -> None: ...
        def _update_prompt(self, iid: str, action_hash: str, status: str) -> None: ...
        def _resume(self, prompt: Prompt) -> None: ...
        def _put_resume(self, prompt: Prompt) -> None: ...
        def _note_failure(self, key: str, iid: str | None, pd_id: str | None, what: str) -> None: ...
        def _note_progress(self, key: str) -> None: ...
        def _apply_click(self, body: bytes) -> tuple[str, str, dict[str, Any]]: ...
        def refresh_approvers(self, force: bool = False) -> frozenset[str]: ...


def send_key(iid: str, tool: str, params: dict[str, Any], at: object) -> str:
    """A write-back's key: what it says and when it was said, so the same message stored twice is one."""
    material = json.dumps([iid, tool, params, str(at)], sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()


def pd_id_of(state: IncidentState) -> str | None:
    a = state.alerts[0] if state.alerts else None
    return a.source_id if a is not None and a.source == "pagerduty" and a.source_id else None


def ending_of(state: IncidentState) -> str:
    acted = [s for s in state.steps if s.outcome in ("executed", "duplicate")]
    head = f"supply-agent: {state.outcome}"
    if state.root_cause:
        head += f" (root cause: {state.root_cause})"
    lines = [head, *(f"- {s.action.tool} {json.dumps(s.action.params, sort_keys=True)}" for s in acted)]
    if state.handoff:
        lines.append(f"hand-off: {state.handoff}")
    return "\n".join(lines)
