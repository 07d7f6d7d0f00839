"""The dead man's switch: a page the agent acknowledged and cannot move forward goes back to a human.

Once the agent acknowledges a PagerDuty incident, PagerDuty stops escalating it; if the agent then
stalls (its store locked, the cluster refusing, PagerDuty or Slack down, a bug), nobody would know.
So a watchdog thread looks, every few seconds, for incidents whose work has been failing for longer
than ``_global.yaml``'s ``handback.stalled_after``: a job put back again and again, a job running for
that long, or the event that should open or wake the incident. Each such incident is handed back
once per stall: reassigned to the escalation policy in PagerDuty with a note of what is known and
what failed, or, when PagerDuty is what fails, said in Slack. The agent keeps trying meanwhile.

It reads two sources so that it does not depend on the part that fails: the job table, and the
failures the runner and the dispatcher report in memory as they happen (when the store itself is
what fails, the table cannot be read). The hand-back goes through the guarded executor (audited,
keyed), on this thread, never behind the outbox lane it may be stuck in; if the executor cannot run
at all (its audit store is the failing part), PagerDuty is called directly and the log says so:
paging a human comes before the audit of the page.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sandbox.executor.fencing import Lease, LeaseLost
from supply_agent.models import Action
from supply_agent.service.slack_blocks import escape
from supply_agent.service.state import ServiceState, log
from tools.errors import describe
from tools.latches import read_breaker, read_freeze


@dataclass(frozen=True)
class Stall:
    """An incident (or an event that should reach one) whose work keeps failing."""

    incident_id: str
    pd_id: str | None
    since: float  # epoch seconds of the first failure
    what: str


def _pd_of(iid: str) -> str | None:
    return iid.removeprefix("pd-") if iid.startswith("pd-") else None


class WatchdogMixin(ServiceState):
    def _note_failure(self, key: str, iid: str | None, pd_id: str | None, what: str) -> None:
        """Called as work fails: remembered here, so a stall is seen even when no store can be read."""
        with self._lanes_lock:
            first = self._failures.get(key)
            self._failures[key] = Stall(iid or key, pd_id, first.since if first else time.time(), what)

    def _note_progress(self, key: str) -> None:
        with self._lanes_lock:
            self._failures.pop(key, None)

    def _watch_loop(self) -> None:
        while not self._stop.wait(self.settings.watchdog_s):
            try:
                self.watch()
            except Exception as exc:
                log.warning("the dead man's switch failed a round", error=describe(exc))

    def stalls(self) -> list[Stall]:
        """Every stall past the bound, one per incident (the oldest failure), from both sources."""
        bound = self.env.runtime.playbooks.limits.handback.stalled_after.total_seconds()
        now = time.time()
        found: dict[str, Stall] = {}

        def add(s: Stall) -> None:
            if now - s.since >= bound and (
                s.incident_id not in found or s.since < found[s.incident_id].since
            ):
                found[s.incident_id] = s

        with self._lanes_lock:
            remembered = list(self._failures.values())
            running = [(lane, time.monotonic() - t) for lane, t in self._busy.items()]
        for s in remembered:
            add(s)
        for lane, held in running:
            kind, iid = lane.split(":", 1)
            # A run may hold its lane for as long as one write action may take (a drain) and still be
            # progressing; past that, it is stuck as surely as a failing one.
            grace = self.settings.executor_timeout_s if kind == "run" else 0.0
            if held >= bound + grace:
                add(Stall(iid, _pd_of(iid), now - held, f"{kind} work running for {held:.0f} s"))
        try:
            for job in self.jobs.failing():
                if job.incident_id and job.first_failed_at is not None:
                    tool = job.payload.get("tool")
                    what = f"{job.kind}{' ' + str(tool) if tool else ''}: {job.attempts} attempts, last: {job.last_error}"
                    add(Stall(job.incident_id, _pd_of(job.incident_id), job.first_failed_at, what))
            for ev in self.events.stuck(bound):
                pd_id = None
                if ev.source == "pagerduty":
                    try:
                        data = json.loads(ev.body)["event"]["data"]
                        pd_id = str(data.get("incident", {}).get("id") or data.get("id") or "") or None
                    except (ValueError, KeyError, TypeError, AttributeError):
                        pd_id = None
                iid = f"pd-{pd_id}" if pd_id else f"event-{ev.id}"
                add(
                    Stall(
                        iid,
                        pd_id,
                        ev.received_at.timestamp(),
                        f"{ev.source} event {ev.id}: {ev.attempts} attempts",
                    )
                )
        except Exception as exc:  # the store is (part of) what fails: the remembered failures still count
            log.warning("the dead man's switch cannot read the stores", error=describe(exc))
        return sorted(found.values(), key=lambda s: s.since)

    def _latches_loop(self) -> None:
        """The brakes in /metrics (the PrometheusRule in deploy/ pages on them): two GETs every
        ``watchdog_s``, in a thread of their own, so a cluster that does not answer (a read retries
        for up to its budget) never delays a hand-back. An unreadable latch shows as set, as the gate
        reads it."""
        while True:  # read first: a breaker tripped before the start shows at once, not after a round
            try:
                kube = self.env.runtime.kube
                self.metrics.breaker_tripped.set(1 if read_breaker(kube)[0] else 0)
                self.metrics.frozen.set(1 if read_freeze(kube)[0] else 0)
            except Exception as exc:
                log.warning("cannot read the latches for /metrics", error=describe(exc))
            if self._stop.wait(self.settings.watchdog_s):
                return

    def watch(self) -> list[str]:
        """One round: hand back each stalled incident not handed back for this stall yet; their ids.

        Every replica watches: it hands back the stalls of incidents whose lease it holds (fenced by
        that lease); the replica leading the watchdog also those of work no replica holds (an event
        that never reached an incident, an incident whose owner died), fenced by the watchdog's lease."""
        stalls = self.stalls()
        self.metrics.stalled.set(len(stalls))
        self._count_dead_letters()
        handed = []
        lead: Lease | None = None
        looked = False
        for s in stalls:
            episode = f"{s.incident_id}:{int(s.since)}"
            if episode in self._handed_back:
                continue
            lease = self.leases.held(s.incident_id)
            if lease is None:
                if not looked:
                    lead, looked = self.leases.lead("watchdog"), True
                if lead is None or self.leases.table.holder(s.incident_id) is not None:
                    continue  # another replica leads the watchdog, or holds the incident and watches it
                lease = lead
            try:
                with self.fence.under(lease):
                    path = self._hand_back(s)
            except LeaseLost as exc:  # frozen past the lease: the new holder watches this one
                log.warning("lease lost mid-round; the hand-back is left to its holder", error=str(exc)[:300])
                continue
            if path is not None:
                self._handed_back.add(episode)
                self.metrics.handed_back.labels(path).inc()
                handed.append(s.incident_id)
        return handed

    def _count_dead_letters(self) -> None:
        try:
            self.metrics.dead_letters_now.labels("job").set(self.jobs.counts().get("dead", 0))
            self.metrics.dead_letters_now.labels("event").set(self.events.counts().get("failed", 0))
        except Exception:
            pass  # the gauges keep their last values; the stores are read again next round

    def _handback_text(self, s: Stall) -> str:
        minutes = (time.time() - s.since) / 60
        lines = [f"supply-agent hands this back: no progress for {minutes:.0f} min. What failed: {s.what}."]
        try:
            row = self.store.get(s.incident_id)
            if row is not None:
                lines.append(
                    f"Incident {row.id}: {row.title} (status {row.status}, outcome {row.outcome or 'none yet'})."
                )
            done = [e.text for e in self.store.timeline(s.incident_id) if e.kind == "action"][-5:]
            if done:
                lines.append("Done so far: " + "; ".join(done))
        except Exception:
            lines.append("The incident store cannot be read either.")
        lines.append("The agent keeps retrying; acknowledge or reassign in PagerDuty to take it over.")
        return "\n".join(lines)

    def _hand_back(self, s: Stall) -> str | None:
        """Page a human about one stall: PagerDuty first, Slack when PagerDuty fails; the path taken."""
        text = self._handback_text(s)
        executor = self.env.runtime.executor
        key = f"handback:{s.incident_id}:{int(s.since)}"
        bound = log.bind(incident_id=s.incident_id)
        if s.pd_id and self.pd is not None:
            action = Action(
                tool="pagerduty.escalate",
                params={"incident": s.pd_id, "reason": text},
                incident_id=s.incident_id,
                step=0,
                proposed_by="watchdog",
            )
            try:
                res = executor.control(action, by="supply-agent watchdog", key=key)
                if res.outcome in ("executed", "duplicate"):
                    bound.error("stalled incident handed back in PagerDuty", what=s.what)
                    self._note_handback(s, "pagerduty")
                    return "pagerduty"
                bound.error("hand-back in PagerDuty failed", error=res.error or "; ".join(res.reasons))
            except LeaseLost:
                raise  # the watchdog's lease moved: its new leader hands this back, not a stale one
            except Exception as exc:  # the executor's audit store fails: page outside it
                bound.error(
                    "the executor cannot run; paging outside the audit log",
                    error=describe(exc),
                )
                try:
                    self.pd.escalate(s.pd_id, text)
                    self._note_handback(s, "pagerduty-direct")
                    return "pagerduty-direct"
                except Exception as exc2:
                    bound.error("direct PagerDuty hand-back failed", error=describe(exc2))
        if self.slack is not None:
            action = Action(
                tool="slack.post",
                params={
                    # The notification text is mrkdwn: errors quote other systems, so they cannot
                    # make links or mentions; the block is plain text.
                    "text": escape(text[:2900]),
                    "blocks": [{"type": "section", "text": {"type": "plain_text", "text": text[:2900]}}],
                },
                incident_id=s.incident_id,
                step=0,
                proposed_by="watchdog",
            )
            try:
                res = executor.control(action, by="supply-agent watchdog", key=key + ":slack")
                if res.outcome in ("executed", "duplicate"):
                    bound.error("stalled incident handed back in Slack", what=s.what)
                    self._note_handback(s, "slack")
                    return "slack"
                bound.error("hand-back in Slack failed", error=res.error or "; ".join(res.reasons))
            except LeaseLost:
                raise
            except Exception as exc:
                bound.error("hand-back in Slack failed", error=describe(exc))
        if self.pd is None and self.slack is None:
            bound.critical("stalled incident and no PagerDuty or Slack to hand it back to", what=s.what)
            self._note_handback(s, "log")
            return "log"
        return None

    def _note_handback(self, s: Stall, path: str) -> None:
        try:
            if self.store.get(s.incident_id) is None:  # an event that never reached an incident
                return
            self.store.note(
                s.incident_id, self.clock(), f"handed back to humans ({path}): {s.what}", handback=path
            )
        except Exception:
            log.warning("cannot note the hand-back on the timeline", incident_id=s.incident_id)
