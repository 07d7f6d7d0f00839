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
from supply_agent.models.incident import IncidentState, Proposal

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


def customers_on_node(state: IncidentState) -> list[str]:
    """Customers with tenant pods on the alert's node, from the latest pod listing of that node."""
    node = state.alert.node
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
        if (
            step.tool == "notify.customer"
            and "${labels.customer}" in str(step.params)
            and not scope["labels"].get("customer")
        ):
            # A node alert names no customer: tell each customer whose pods the investigation found on
            # the node, one notice per customer, this step repeating until all are told.
            told = {
                s.action.params.get("customer")
                for s in state.steps
                if s.runbook_step == step.name and s.outcome in ("executed", "duplicate")
            }
            todo = [c for c in customers_on_node(state) if c not in told]
            if todo:
                scope = {**scope, "labels": {**scope["labels"], "customer": todo[0]}}
                more = len(todo) > 1
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
                    reason=f"nothing to credit: {step.name} renders ${amount}",
                )
        return Proposal(
            kind="act",
            tool=step.tool,
            params=params,
            planner=self.name,
            runbook_step=step.name,
            more=more,
            reason=step.description or f"{pb.title}: runbook step {step.name}",
            root_cause=pb.cause,
        )
