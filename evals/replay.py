"""The replay of one incident's timeline on the fleet's simulated clock.

It exists apart from building the world and from scoring because it is the one part that drives the
agent: a small discrete-event loop that applies timeline steps (faults, logs, events, alert deliveries,
a human taking the incident or working on a node) and the humans' answers to approvals, in time order,
moving the manual clock forward between them. A thread waiting for a step's moment (a drain that waits
for a gang job's checkpoint) is resumed when the clock reaches it, as the service's timer would. An approval answered "none" is left to expire (the clock passes its expiry,
as the service's sweeper would see it). When the loop ends, ``Replay.evidence`` reads what it left
behind into plain data for ``evals.scoring``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from evals.schema import ApprovalRule, DeliverStep, HumanStep, Incident, TimelineStep
from evals.scoring import Evidence, target_matches
from evals.world import Names, ReplayError, bound_pod, clear_requests, fault_requests, node_list, subst
from sandbox.fleet.admin import AdminClient, AdminError
from supply_agent.hands.wiring import Environment
from supply_agent.incidents.agent import Agent, ApprovalAnswer, RunResult
from supply_agent.models.incident import AlertIn, pagerduty_alerts, parse_alerts

SIM_POLL_S = 30.0


def waits_on_the_sim_clock(env: Environment, admin: AdminClient) -> None:
    """A tool that waits for the cluster (a drain retrying evictions a budget blocks) waits on the fleet's
    simulated clock: the world moves on while it waits, in steps of at least ``SIM_POLL_S``, instead of
    the replay sitting out the drain's timeout in real time."""
    t0 = env.runtime.clock()

    def monotonic() -> float:
        return (env.runtime.clock() - t0).total_seconds()

    def sleep(seconds: float) -> None:
        admin.advance(max(seconds, SIM_POLL_S))

    for kube in {id(k): k for k in (env.writer, env.runtime.kube)}.values():
        kube._sleep, kube._monotonic = sleep, monotonic


class Replay:
    def __init__(
        self,
        incident: Incident,
        names: Names,
        admin: AdminClient,
        agent: Agent,
        env: Environment,
        window: timedelta,
    ) -> None:
        self.inc, self.names, self.admin, self.agent, self.env = incident, names, admin, agent, env
        self.window = window
        self.clock = env.runtime.clock
        self.t0 = self.clock()
        self.opened: list[str] = []
        self.paused: dict[str, tuple[datetime, ApprovalRule | None, RunResult]] = {}
        self.closed_at: dict[str, datetime] = {}
        self.deliveries = 0

    # time
    def advance_to(self, at: datetime) -> None:
        now = self.clock()
        if at > now:
            self.admin.advance((at - now).total_seconds())

    def rule_for(self, tool: str, params: dict[str, Any] | None = None) -> ApprovalRule | None:
        for r in self.inc.approvals:
            if fnmatchcase(tool, r.tool) and target_matches(r.target, params or {}, self.names):
                return r
        if self.inc.default_approval == "none":
            return None
        return ApprovalRule(tool="*", answer=self.inc.default_approval)

    def _after_run(self, result: RunResult) -> None:
        iid = result.incident_id
        if result.waiting is not None:  # a step waits for its moment: the clock wakes it then
            self.paused[iid] = (result.waiting.until, None, result)
        elif result.pending is not None:
            rule = self.rule_for(result.pending.tool, result.pending.params)
            if rule is None or rule.answer == "none":
                when = result.pending.expires_at + timedelta(seconds=1)
            else:
                when = self.clock() + rule.after
            self.paused[iid] = (when, rule, result)
        else:
            self.paused.pop(iid, None)
            self.closed_at.setdefault(iid, self.clock())

    def _after_wake(self, iid: str, result: RunResult) -> None:
        """A woken thread paused again on the request it was asked (its answer comes when it would
        have), or on another, or ended."""
        when, rule, before = self.paused[iid]
        now, then = result.pending, before.pending
        if now is not None and then is not None and now.action_hash == then.action_hash:
            self.paused[iid] = (when, rule, result)
        else:
            self._after_run(result)

    def answer(self, iid: str) -> None:
        when, rule, before = self.paused.pop(iid)
        self.advance_to(when)
        if before.waiting is not None:
            woken = self.agent.resume_wait(iid)
            if woken is None:
                raise ReplayError(f"incident {iid}: its wait until {when.isoformat()} did not resume")
            self._after_run(woken)
            return
        if rule is None or rule.answer == "none":
            ans = ApprovalAnswer(
                approved=False, approver="supply-agent", decided_at=self.clock(), channel="expiry"
            )
        else:
            ans = ApprovalAnswer(
                approved=rule.answer == "approve", approver=rule.by, decided_at=self.clock(), channel="slack"
            )
        self._after_run(self.agent.run(iid, resume=ans))

    # the timeline
    def _reshape(self, alert: dict[str, Any], step: DeliverStep) -> None:
        """The fleet's alert as the step's other rule set pages it (its name, labels, annotations)."""
        labels = alert.setdefault("labels", {})
        for r in step.reshape:
            if not fnmatchcase(labels.get("alertname", ""), r.match):
                continue
            for k in r.drop:
                labels.pop(k, None)
            labels.update({k: subst(v, self.names) for k, v in r.labels.items()})
            if r.alertname:
                labels["alertname"] = r.alertname
            if r.annotations is not None:
                alert["annotations"] = {k: subst(v, self.names) for k, v in r.annotations.items()}

    def _via_pagerduty(self, step: DeliverStep) -> list[AlertIn]:
        """The fleet's alerts as PagerDuty pages them: each V3 webhook names an incident, whose alerts
        are read from the REST API (the sandbox's), as the service does."""
        out: list[AlertIn] = []
        for hook in self.admin.alerts("pagerduty"):
            for ref in parse_alerts(hook)[1]:
                data = self.admin.request(
                    "GET", f"pagerduty/incidents/{ref.incident_id}/alerts?details={step.details}"
                )
                out += [
                    a
                    for a in pagerduty_alerts(ref, data)
                    if step.only is None or fnmatchcase(a.alertname, step.only)
                ]
        return out

    def deliver(self, step: DeliverStep) -> None:
        bodies = [] if step.via == "pagerduty" else self.admin.alerts("alertmanager")
        alerts: list[AlertIn] = self._via_pagerduty(step) if step.via == "pagerduty" else []
        for body in bodies:
            if step.only is not None:
                body["alerts"] = [
                    a
                    for a in body["alerts"]
                    if fnmatchcase(a.get("labels", {}).get("alertname", ""), step.only)
                ]
            for a in body["alerts"]:
                self._reshape(a, step)
                a.setdefault("annotations", {}).update(
                    {k: subst(v, self.names) for k, v in step.annotate.items()}
                )
                if step.status != "as-is":
                    a["status"] = step.status
            if body["alerts"]:
                alerts += parse_alerts(body)[0]
        for extra in step.extra:
            raw = {
                "status": extra.status,
                "labels": {k: subst(v, self.names) for k, v in extra.labels.items()},
                "annotations": {k: subst(v, self.names) for k, v in extra.annotations.items()},
                "startsAt": (self.clock() - timedelta(minutes=5)).isoformat(),
            }
            alerts += parse_alerts(
                {"version": "4", "status": extra.status, "groupKey": "eval-extra", "alerts": [raw]}
            )[0]
        for _ in range(step.repeat):
            self.deliveries += 1
            new, touched = self.agent.fold(alerts, window=self.window)
            for state in new:
                self.opened.append(state.incident_id)
                self._after_run(self.agent.run(state))
            # Alerts that joined an incident paused for an approval wake it, as the service does.
            for iid in sorted(touched - {s.incident_id for s in new}):
                if iid in self.paused and (woken := self.agent.wake(iid)) is not None:
                    self._after_wake(iid, woken)

    def apply(self, step: TimelineStep) -> None:
        a, names = self.admin, self.names
        if step.fault is not None:
            for request in fault_requests(step.fault, names):
                a.inject(**request)
        elif step.clear is not None:
            for request in clear_requests(step.clear, self.inc, names):
                a.clear(**request)
        elif step.log is not None:
            ns, pod = bound_pod(step.log.pod, names)
            a.append_log(ns, pod, [subst(line, names) for line in step.log.lines])
        elif step.event is not None:
            e = step.event
            if e.node is not None:
                a.event("Node", subst(e.node, names), e.reason, subst(e.message, names), etype=e.type)
            else:
                ns, pod = bound_pod(e.pod or "", names)
                a.event("Pod", pod, e.reason, subst(e.message, names), namespace=ns, etype=e.type)
        elif step.alerts is not None:
            self.deliver(step.alerts)
        elif step.human is not None:
            self.human(step.human)

    def human(self, h: HumanStep) -> None:
        """What a human on call does outside the agent, through the APIs they would use: PagerDuty's (as
        the dispatcher takes its ``incident.acknowledged``/``incident.resolved`` webhook: the incident is
        the human's, the agent makes no more writes on it), the Kubernetes API (``kubectl uncordon``, as
        the admin), or the hardware's (a GPU reset, a reboot, a new node: the sandbox's admin API)."""
        if h.action in ("acknowledge", "resolve"):
            if h.incident_index >= len(self.opened):
                raise ReplayError(f"human {h.action}: incident {h.incident_index} was never opened")
            iid = self.opened[h.incident_index]
            verb = "acknowledged" if h.action == "acknowledge" else "resolved"
            store = self.agent.store
            store.set_owner(iid, f"{h.by} ({verb} in PagerDuty)")
            store.note(iid, self.clock(), f"{h.by} {verb} the incident in PagerDuty")
            paused = self.paused.get(iid)
            if paused is not None and paused[2].waiting is not None:  # a wait ends: the step is theirs
                woken = self.agent.resume_wait(iid)
                if woken is not None:
                    self.paused.pop(iid)
                    self._after_run(woken)
            return
        for node in node_list(h.node or "", self.names):
            try:
                if h.action == "uncordon":
                    self.admin.uncordon(node)
                elif h.action == "reset_gpu":
                    self.admin.clear(node, gpu=h.gpu)
                else:  # reboot, replace_node: whatever was wrong with the node is gone
                    self.admin.clear(node)
            except AdminError as exc:
                raise ReplayError(f"human {h.action} on {node}: the fleet refused: {exc}") from exc

    def run(self) -> None:
        steps = list(self.inc.timeline)
        guard = 0
        while steps or self.paused:
            guard += 1
            if guard > 10_000:
                raise ReplayError("the replay does not end (an approval loop?)")
            next_step = self.t0 + steps[0].at if steps else None
            next_answer = min(self.paused.items(), key=lambda kv: kv[1][0]) if self.paused else None
            if next_step is not None and (next_answer is None or next_step <= next_answer[1][0]):
                step = steps.pop(0)
                self.advance_to(next_step)
                self.apply(step)
            else:
                assert next_answer is not None
                self.answer(next_answer[0])

    # what it left behind
    def evidence(self, truth: dict[str, Any]) -> Evidence:
        """The audit log, the agent's final states and the ledger's credits and metering pauses, with the
        fleet's ``truth``."""
        runtime = self.env.runtime
        # An incident merged into its component's is that incident now: one incident, not two (its
        # actions are in the audit log all the same).
        opened = [
            iid for iid in self.opened if (row := self.agent.store.get(iid)) is None or not row.folded_into
        ]
        credits: dict[str, Decimal] = {}
        for iid in opened:
            report = runtime.ledger.credits_for_incident(iid)
            credits[iid] = sum((Decimal(str(c.amount_usd)) for c in report.credits), Decimal("0"))
        # The billing system's word on the pods the fleet meters twice (the fleet cannot see the ledger).
        double = {
            (s["namespace"], s["pod"])
            for s in truth.get("symptoms") or []
            if s.get("kind") == "double-metering" and s.get("namespace") and s.get("pod")
        }
        paused = frozenset(
            f"{ns}/{pod}" for ns, pod in sorted(double) if runtime.ledger.metering_state(ns, pod).paused
        )
        return Evidence(
            names=self.names,
            opened=opened,
            states=[self.agent.state(iid) for iid in opened],
            paused=frozenset(self.paused),
            closed_at=dict(self.closed_at),
            t0=self.t0,
            now=self.clock(),
            audit=list(runtime.audit.records()),
            truth=truth,
            credits=credits,
            metering_paused=paused,
        )
