"""The on-call service behind ``supply-agent serve``: stored events in, graph threads run, humans asked.

- Intake (called from the HTTP handlers) checks and stores each webhook, then answers; it refuses with
  503 + Retry-After when too many stored events wait, rather than dropping any. ``supply-agent serve``
  runs intake in a process of its own (:mod:`supply_agent.intake.app`); the service then follows
  the event log (``follow_log``) instead of being handed each id.
- One dispatcher thread handles stored events in order: it folds alerts into incidents (one thread, so
  grouping is deterministic), records what humans did in PagerDuty, applies stored Slack clicks, and
  stores a ``run`` job for each incident touched. An event whose handling fails and may pass is tried
  again with back-off.
- The runner (:mod:`.runner`) takes stored jobs lane by lane: graph runs on a bounded pool, one per
  incident at a time; write-back (PagerDuty notes, acknowledge, resolve or escalate; the Slack prompt
  and its update) on an outbox pool, in order per incident and service, retried with back-off and
  ``Retry-After`` until delivered.
- A Slack click is verified and stored, bound to one pending approval by the action's hash, claimed
  atomically, and resumes the thread once. A sweeper expires approvals nobody answered.
- The dead man's switch (:mod:`.watchdog`) hands an incident back to humans when its work has failed
  for longer than ``_global.yaml``'s ``handback.stalled_after``.
- On start, events stored but not handled are handled, claimed clicks are finished, every open or
  paused thread is reconciled (continued, or its prompt and write-back derived again).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from supply_agent.hands.wiring import Environment
from supply_agent.hands.world_cache import WorldCache
from supply_agent.incidents.agent import open_agent
from supply_agent.intake.accept import Reply
from supply_agent.intake.events import EventLog
from supply_agent.mind.planners.base import Planner
from supply_agent.service.approvals import ApprovalsMixin
from supply_agent.service.dispatch import DispatchMixin
from supply_agent.service.kube_lease import elector_for
from supply_agent.service.leases import SINGLETON, SINGLETONS, replica_name
from supply_agent.service.prompts import PromptStore
from supply_agent.service.runner import RunnerMixin
from supply_agent.service.state import (
    log,
)
from supply_agent.service.watchdog import WatchdogMixin
from supply_agent.service.writeback import WritebackMixin
from supply_agent.settings import Settings
from tools.errors import describe
from tools.pagerduty import PagerDutyClient, PagerDutyError
from tools.slack import SlackClient

__all__ = ["Reply", "Service", "open_service"]

RESYNC_S = 10.0  # how often the dispatch's leader looks for open incidents nobody works on


class Service(DispatchMixin, RunnerMixin, WritebackMixin, ApprovalsMixin, WatchdogMixin):
    """The on-call service: its parts (dispatch, jobs, write-back, approvals, the dead man's switch)
    over one shared state."""

    def start(self) -> None:
        if self.pd is not None and self._own_pd_user is None:
            try:
                self._own_pd_user = self.pd.own_user_id()
            except PagerDutyError as exc:
                log.warning("cannot find the agent's own PagerDuty user", error=str(exc))
        self.refresh_approvers(force=True)
        self.recover()
        loops: list[tuple[str, Callable[[], None]]] = [
            ("dispatcher", self._dispatch_loop),
            ("sweeper", self._sweep_loop),
            ("follower", self._follow_loop),
            ("runner", self._runner_loop),
            ("watchdog", self._watch_loop),
            ("latches", self._latches_loop),
            ("leases", self._leases_loop),
        ]
        if self.leases.elector is not None:
            loops.append(("election", self._election_loop))
        for name, target in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=False)
        self._outbox_pool.shutdown(wait=True, cancel_futures=False)
        self.leases.release_all()  # a clean stop hands the work on now, not after the leases lapse
        self.leases.table.close()

    def _leases_loop(self) -> None:
        """Renew the leases held every third of their time; release the leases of incidents with no
        work left here; and every second, lead a singleton nobody leads (a dead leader's lease is taken
        within a second of lapsing: within the lease time of the kill)."""
        every = self.settings.lease_s / 3
        renew_at = resync_at = 0.0
        while True:
            try:
                for singleton in SINGLETONS:
                    self.leases.lead(singleton)
                if time.monotonic() >= renew_at:
                    self.leases.renew(idle=self._idle)
                    renew_at = time.monotonic() + every
                if time.monotonic() >= resync_at and self.leases.held(SINGLETON + "dispatcher"):
                    self._resync()
                    resync_at = time.monotonic() + RESYNC_S
            except Exception as exc:  # the database out of reach: the leases lapse, the work stops
                log.warning("cannot renew the leases", error=describe(exc))
            if self._stop.wait(min(1.0, every)):
                return

    def _election_loop(self) -> None:
        """Every second, the singletons' Kubernetes Leases: taken, renewed, or seen held by another."""
        while True:
            try:
                self.leases.elect(SINGLETONS)
            except Exception as exc:  # the elector says "unreachable" itself; this is a bug's net
                log.warning("cannot run the election", error=describe(exc))
            if self._stop.wait(1.0):
                return

    def _resync(self) -> int:
        """Level-triggered, as a controller's resync: every open incident with no work stored and no
        replica holding it gets a run (a leader killed between a fold and storing its run leaves one
        so; the event is handled again, but a fold that finds the alert in already touches nothing).
        How many were asked to run."""
        n = 0
        for row in self.store.incidents(limit=10_000, status="open"):
            if self.jobs.queued(row.id) == 0 and self.leases.table.holder(row.id) is None:
                log.info("resync: an open incident with no work stored; run it", incident_id=row.id)
                self._put_run(row.id)
                n += 1
        return n

    def _idle(self, iid: str) -> bool:
        """Whether this replica has no work of the incident running or stored."""
        with self._lanes_lock:
            if any(lane.split(":", 1)[1] == iid for lane in self._busy):
                return False
        return self.jobs.queued(iid) == 0

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every stored event is handled, no job is in flight and none is due now (a job
        waiting for its next attempt does not count) (tests, benchmarks)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._pending_lock:
                idle = self._pending == 0 and not any(not f.done() for f in list(self._futures))
            if idle:
                with self._lanes_lock:
                    busy = bool(self._busy)
                if not busy:
                    try:
                        if not self.jobs.due(limit=1):
                            return True
                    except Exception:
                        pass
            time.sleep(0.02)
        return False

    def recover(self) -> None:
        """After a restart: handle stored events, finish claimed clicks, reconcile every open or paused
        thread (the jobs stored before the restart are in the job table and run as they fall due)."""
        ids = self.events.pending(due=False)
        for i in ids:
            self._enqueue(i)
        for prompt in self.prompts.with_status("deciding"):
            self._put_resume(prompt)
        for status in ("open", "paused"):
            for row in self.store.incidents(limit=10_000, status=status):
                self._put_run(row.id)
        if ids:
            log.info("recovered stored events", events=len(ids))

    async def accept_pagerduty(self, body: bytes, signature: str | None) -> Reply:
        return await self.intake.pagerduty(body, signature)

    async def accept_alertmanager(self, body: bytes, authorization: str | None) -> Reply:
        return await self.intake.alertmanager(body, authorization)

    def ready(self) -> dict[str, str]:
        """What is not reachable (empty when ready)."""
        problems: dict[str, str] = {}
        try:
            self.store.incidents(limit=1)
        except Exception as exc:
            problems["store"] = f"{type(exc).__name__}: {exc}"
        try:
            self.env.runtime.kube.ping()
        except Exception as exc:
            problems["cluster"] = f"{type(exc).__name__}: {exc}"
        return problems


def slack_client(settings: Settings) -> SlackClient | None:
    """Slack for approval prompts, where a bot token is set (a channel is then required)."""
    if settings.slack_bot_token is None:
        return None
    if not settings.slack_channel:
        raise ValueError("SUPPLY_AGENT_SLACK_CHANNEL: the channel for approval prompts is required")
    return SlackClient(
        settings.slack_bot_token.get_secret_value(), settings.slack_channel, base_url=settings.slack_api_url
    )


@contextmanager
def _world_cache(settings: Settings, env: Environment) -> Iterator[WorldCache | None]:
    """The long-lived process's watch cache of the world, on the read-only credentials (see
    ``supply_agent.hands.world_cache``); stopped when the service closes."""
    if not settings.world_cache:
        yield None
        return
    cache = WorldCache(env.runtime.kube).start_background()
    env.runtime.cache = cache
    try:
        yield cache
    finally:
        env.runtime.cache = None
        cache.stop()


@contextmanager
def open_service(
    settings: Settings, kubeconfig: Path, *, planner: Planner | None = None, follow_log: bool = False
) -> Iterator[Service]:
    """A :class:`Service` on the cluster in ``kubeconfig`` with PagerDuty and Slack from settings."""
    pd = None
    if settings.pagerduty_api_key is not None:
        if not settings.pagerduty_from:
            raise ValueError(
                "SUPPLY_AGENT_PAGERDUTY_FROM: the email of the agent's PagerDuty user is required"
            )
        pd = PagerDutyClient(
            settings.pagerduty_api_key.get_secret_value(),
            settings.pagerduty_from,
            base_url=settings.pagerduty_api_url,
            escalation_policy_id=settings.pagerduty_escalation_policy,
            verify=(
                ssl.create_default_context(cafile=str(settings.pagerduty_ca_file))
                if settings.pagerduty_ca_file
                else True
            ),
        )
    slack = slack_client(settings)
    events = EventLog.from_url(settings.resolved_intake_url())
    elector = None
    if settings.leader_election == "kubernetes":
        elector = elector_for(
            kubeconfig,
            replica_name(settings.replica_id),
            settings.lease_s,
            namespace=settings.lease_namespace,
            lease_kubeconfig=settings.lease_kubeconfig,
            lease_context=settings.lease_context,
        )
    try:
        with open_agent(settings, kubeconfig, planner=planner) as (agent, env), _world_cache(settings, env):
            service = Service(
                settings,
                agent,
                env,
                events,
                PromptStore(agent.store.engine),
                pagerduty=pd,
                slack=slack,
                follow_log=follow_log,
                elector=elector,
            )
            yield service
    finally:
        events.close()
        if elector is not None:
            elector.close()
        if pd is not None:
            pd.close()
