"""The runbook planner: deterministic, offline, follows the matched playbook step by step.

The graph keeps a cursor into the runbook; this planner renders the step at the cursor (its
``${...}`` templates filled from the alert, the incident and earlier steps' results) and proposes it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from supply_agent.mind.planners.base import PlanContext
from supply_agent.models.incident import AlertIn, IncidentState, Proposal
from supply_agent.policy import Playbook

_TEMPLATE = re.compile(r"\$\{([^}]*)\}")
_WHOLE = re.compile(r"^\$\{([^}]*)\}$")


class TemplateError(ValueError):
    """A template with no value: names the step, the parameter and the reference."""


def step_results(state: IncidentState) -> dict[str, Any]:
    """Results of earlier runbook steps by step name: reads from the evidence, writes from the steps."""
    out: dict[str, Any] = {}
    for ev in state.evidence:
        if ev.runbook_step and ev.ok:
            out[ev.runbook_step] = ev.result
    for st in state.steps:
        if st.runbook_step and st.result is not None:
            out[st.runbook_step] = st.result
    return out


def affected(state: IncidentState, pb: Playbook, uncatalogued: str | None = None) -> list[AlertIn]:
    """The incident's entities this playbook acts on: one firing alert per node it handles (the first
    alert's node first, then in the order they joined). Every one gets the runbook's steps."""
    out: dict[str, AlertIn] = {}
    # A node a read could not find (an alert naming a node the cluster does not have) is left out: the
    # truth about what is affected is the cluster's.
    unread = {
        str(e.params.get("node"))
        for e in state.evidence
        if e.tool == "k8s.get_node" and not e.ok and e.params.get("node")
    }
    for a in [state.alert, *state.alerts]:
        if a.status != "firing" or not a.node or a.node in out:
            continue
        if a is not state.alert and a.node in unread:
            continue
        if a is state.alert or pb.match_key(a.alertname, a.labels, None, None, uncatalogued) is not None:
            out[a.node] = a
    return list(out.values())


def _done_for(state: IncidentState, step: str, node: str) -> bool:
    """Whether a runbook step was done for one node: read for it, acted on for it (and run), or passed
    over for it (nothing to do there)."""
    if any(ev.runbook_step == step and ev.subject == node for ev in state.evidence):
        return True
    if any(
        s.runbook_step == step and s.subject == node and s.outcome in ("executed", "duplicate")
        for s in state.steps
    ):
        return True
    return any(
        e.kind in ("skip", "handoff") and e.data.get("runbook_step") == step and e.data.get("subject") == node
        for e in state.timeline
    )


def _told(state: IncidentState, step: str, node: str | None) -> set[str]:
    """Customers a notice step told (for one node of several, or for the incident's one node)."""
    return {
        str(s.action.params.get("customer"))
        for s in state.steps
        if s.runbook_step == step
        and s.outcome in ("executed", "duplicate")
        and (node is None or s.subject == node)
    }


def customers_on_node(state: IncidentState, node: str | None = None) -> list[str]:
    """Customers with tenant pods on the node (default: the alert's), from its latest pod listing."""
    node = node or state.alert.node
    for ev in reversed(state.evidence):
        if ev.tool == "k8s.list_pods_on_node" and ev.ok and ev.params.get("node") == node:
            pods = ev.result if isinstance(ev.result, list) else []
            return sorted(
                {
                    str(p["customer"])
                    for p in pods
                    if isinstance(p, dict) and p.get("customer") and not p.get("daemonset")
                }
            )
    return []


def template_scope(state: IncidentState, ctx: PlanContext) -> dict[str, Any]:
    alert = state.alert
    pb = ctx.playbook(state)
    started = alert.starts_at or state.opened_at
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "incident": {
            "id": state.incident_id,
            "title": alert.annotations.get("summary", alert.alertname),
            "url": alert.annotations.get("runbook_url", ""),
            "started_at": started.isoformat(),
            # A window is never empty: an alert handled the moment it fires still has a valid window.
            "now": max(ctx.now, started + timedelta(seconds=1)).isoformat(),
        },
        "playbook": {"id": pb.id, "title": pb.title} if pb else {},
        "steps": step_results(state),
    }


def _lookup(scope: Mapping[str, Any], ref: str) -> Any:
    value: Any = scope
    for part in ref.split("."):
        if isinstance(value, Mapping) and part in value and value[part] is not None:
            value = value[part]
        else:
            raise TemplateError(f"${{{ref}}} has no value")
    return value


def render(value: Any, scope: Mapping[str, Any], where: str = "params") -> Any:
    """Fill ``${...}`` templates. A parameter that is one whole template keeps the referenced value's
    type (a number stays a number); templates inside text are substituted as text."""
    if isinstance(value, str):
        whole = _WHOLE.match(value)
        try:
            if whole:
                return _lookup(scope, whole.group(1))
            return _TEMPLATE.sub(lambda m: str(_lookup(scope, m.group(1))), value)
        except TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None
    if isinstance(value, Mapping):
        return {k: render(v, scope, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, scope, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


class RunbookPlanner:
    name = "runbook"

    def propose(self, state: IncidentState, ctx: PlanContext) -> Proposal:
        pb = ctx.playbook(state)
        if pb is None:
            return Proposal(
                kind="escalate",
                planner=self.name,
                reason=f"no playbook matches {state.alert.alertname}: the runbook planner has nothing to follow",
            )
        if state.runbook_cursor >= len(pb.runbook):
            return Proposal(kind="done", planner=self.name, reason=f"runbook {pb.id} complete")
        step = pb.runbook[state.runbook_cursor]
        scope = template_scope(state, ctx)
        more = False
        subject: str | None = None
        entities = affected(state, pb, ctx.playbooks.limits.xid_uncatalogued)
        looked = {str(e.params.get("node")) for e in state.evidence if e.tool == "k8s.get_node"}
        unseen = [a.node for a in entities[1:] if a.node and a.node not in looked]
        if unseen:
            # Another node joined the incident: read it first (is it there? what does it show?).
            return Proposal(
                kind="act",
                tool="k8s.get_node",
                params={"node": unseen[0]},
                planner=self.name,
                reason=f"{unseen[0]} has the same alert: read it before acting on it",
            )
        if len(entities) > 1 and "${labels." in str(step.params):
            # Several nodes with this fault in one incident: the step is done for each, in turn, with
            # that node's alert's labels; the cursor moves on once every node has had it.
            per_customer = step.tool == "notify.customer" and "${labels.customer}" in str(step.params)

            def left(a: AlertIn) -> bool:
                node = a.node or ""
                if per_customer and not a.labels.get("customer"):
                    told = _told(state, step.name, node)
                    if [c for c in customers_on_node(state, node) if c not in told]:
                        return True
                    return not told and not _done_for(state, step.name, node)
                return not _done_for(state, step.name, node)

            todo = [a for a in entities if left(a)]
            if todo:
                current = todo[0]
                subject = current.node
                scope = {**scope, "labels": dict(current.labels)}
                more = len(todo) > 1
        if (
            step.tool == "notify.customer"
            and "${labels.customer}" in str(step.params)
            and not scope["labels"].get("customer")
        ):
            # A node alert names no customer: tell each customer whose pods the investigation found on
            # the node, one notice per customer, this step repeating until all are told.
            told = _told(state, step.name, subject)
            customers = [c for c in customers_on_node(state, subject) if c not in told]
            if customers:
                scope = {**scope, "labels": {**scope["labels"], "customer": customers[0]}}
                more = more or len(customers) > 1
        if (
            step.tool.startswith(("notify.", "billing."))
            and "${labels.customer}" in str(step.params)
            and not scope["labels"].get("customer")
        ):
            # A GPU with no customer's job on it: nobody to tell, nothing billed to look up or credit.
            return Proposal(
                kind="skip",
                planner=self.name,
                runbook_step=step.name,
                more=more,
                subject=subject,
                reason=f"no customer named by the alert: nothing for {step.tool} to do in this step",
            )
        try:
            params = render(step.params, scope, f"{pb.id}.runbook.{step.name}.params")
        except TemplateError as exc:
            return Proposal(kind="escalate", planner=self.name, runbook_step=step.name, reason=str(exc))
        if step.tool == "billing.issue_credit":
            try:
                amount = Decimal(str(params.get("amount_usd")))
            except (InvalidOperation, ValueError):
                amount = None
            if amount is not None and amount <= 0:
                return Proposal(
                    kind="skip",
                    planner=self.name,
                    runbook_step=step.name,
                    more=more,
                    subject=subject,
                    reason=f"nothing to credit: {step.name} renders ${amount}",
                )
        return Proposal(
            kind="act",
            tool=step.tool,
            params=params,
            planner=self.name,
            runbook_step=step.name,
            more=more,
            subject=subject,
            reason=step.description or f"{pb.title}: runbook step {step.name}",
            root_cause=pb.cause,
        )
