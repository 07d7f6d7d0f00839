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
from supply_agent.policy.steps import Step

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


def _mine(subject: str | None, node: str | None, state: IncidentState) -> bool:
    """Whether a record with this subject was for ``node``: no subject means the incident's first node."""
    return subject == node or (subject is None and node == state.alert.node)


def _done_for(state: IncidentState, step: str, node: str) -> bool:
    """Whether a runbook step was done for one node: read for it, acted on for it (and run), or passed
    over for it (nothing to do there)."""
    if any(ev.runbook_step == step and _mine(ev.subject, node, state) for ev in state.evidence):
        return True
    if any(
        s.runbook_step == step and _mine(s.subject, node, state) and s.outcome in ("executed", "duplicate")
        for s in state.steps
    ):
        return True
    return any(
        e.kind in ("skip", "handoff")
        and e.data.get("runbook_step") == step
        and _mine(e.data.get("subject"), node, state)
        for e in state.timeline
    )


def _told(state: IncidentState, step: str, node: str | None) -> set[str]:
    """Customers a notice step told (for one node of several, or for the incident's one node)."""
    return {
        str(s.action.params.get("customer"))
        for s in state.steps
        if s.runbook_step == step
        and s.outcome in ("executed", "duplicate")
        and (node is None or _mine(s.subject, node, state))
    }


def _left(state: IncidentState, pb: Playbook, step: Step, a: AlertIn) -> bool:
    """Whether one entity still needs this step (a notice: while a customer there is untold)."""
    node = a.node or ""
    if step.tool == "notify.customer" and "${labels.customer}" in str(step.params):
        told = _told(state, step.name, node)
        if [c for c in customers_to_tell(state, a, pb, node) if c not in told]:
            return True
        return not told and not _done_for(state, step.name, node)
    return not _done_for(state, step.name, node)


def _pods_listed(state: IncidentState, node: str | None) -> list[dict[str, Any]] | None:
    """The node's latest pod listing in the evidence; None when it was never listed."""
    for ev in reversed(state.evidence):
        if ev.tool == "k8s.list_pods_on_node" and ev.ok and ev.params.get("node") == node:
            return [p for p in (ev.result if isinstance(ev.result, list) else []) if isinstance(p, dict)]
    return None


def customers_on_node(state: IncidentState, node: str | None = None) -> list[str]:
    """Customers with tenant pods on the node (default: the alert's), from its latest pod listing."""
    pods = _pods_listed(state, node or state.alert.node) or []
    return sorted({str(p["customer"]) for p in pods if p.get("customer") and not p.get("daemonset")})


# Who an alert says is affected: an exporter's attribution made at scrape time (dcgm-exporter's pod labels
# can be stale or wrong), so untrusted. The cluster says who is affected; these labels never reach a step.
_IDENTITY_LABELS = ("customer", "namespace", "pod", "container", "deployment", "exported_namespace")


def pod_subject(alert: AlertIn) -> bool:
    """Whether the alert is about a pod (its namespace and name are its subject). On a GPU's series
    (a ``gpu`` or ``xid`` label) the pod is the exporter's attribution, not the subject."""
    return alert.pod is not None


def trusted_labels(alert: AlertIn) -> dict[str, str]:
    """The alert's labels a step may use: never its customer; its pod only when the pod is its subject."""
    drop = ("customer",) if pod_subject(alert) else _IDENTITY_LABELS
    return {k: v for k, v in alert.labels.items() if k not in drop}


def pods_on_gpu(state: IncidentState, node: str | None, gpu: str | None) -> list[str] | None:
    """The pods the node-agent says are bound to one GPU ("ns/name", from the kubelet's pod-resources);
    None when no report said (not read, or an older node-agent)."""
    if not node or gpu is None:
        return None
    for ev in reversed(state.evidence):
        if ev.tool != "nvml.gpu_health" or not ev.ok or not isinstance(ev.result, dict):
            continue
        if ev.params.get("node") != node:
            continue
        report = ev.result.get("report") or {}
        for g in report.get("gpus") or []:
            if str(g.get("index")) == str(gpu):
                pods = g.get("pods")
                return [str(p) for p in pods] if isinstance(pods, list) else None
        return None
    return None


def customer_of_pod(state: IncidentState, namespace: str, pod: str, node: str | None = None) -> str | None:
    """A pod's customer as the cluster labels it (its own read, or its node's pod listing)."""
    for ev in reversed(state.evidence):
        if ev.tool == "k8s.get_pod" and ev.ok and isinstance(ev.result, dict):
            r = ev.result
            if r.get("namespace") == namespace and r.get("name") == pod:
                return str(r["customer"]) if r.get("customer") else None
    for p in _pods_listed(state, node) or []:
        if p.get("namespace") == namespace and p.get("name") == pod:
            return str(p["customer"]) if p.get("customer") else None
    return None


def identity(state: IncidentState, alert: AlertIn, labels: dict[str, str]) -> dict[str, str]:
    """The step's labels with who is affected filled from the cluster: a pod alert's customer from the
    pod; a GPU alert's pod and customer from the pods bound to that GPU (when the node-agent reports
    them). Notices go further (see :func:`customers_to_tell`)."""
    out = dict(labels)
    if pod_subject(alert):
        customer = customer_of_pod(state, alert.labels["namespace"], alert.labels["pod"], alert.node)
        if customer:
            out["customer"] = customer
        return out
    on_gpu = pods_on_gpu(state, alert.node, alert.labels.get("gpu"))
    for key in on_gpu or []:
        ns, _, name = key.partition("/")
        customer = customer_of_pod(state, ns, name, alert.node)
        if customer:
            out.update(customer=customer, namespace=ns, pod=name)
            break
    return out


def job_died(state: IncidentState, alert: AlertIn) -> bool:
    """Whether a pod bound to the alert's GPU (the node-agent's report) restarted or ended in error, as the
    node's latest pod listing shows it."""
    on_gpu = set(pods_on_gpu(state, alert.node, alert.labels.get("gpu")) or [])
    for p in _pods_listed(state, alert.node) or []:
        if f"{p.get('namespace')}/{p.get('name')}" not in on_gpu:
            continue
        if int(p.get("restarts") or 0) > 0 or p.get("last_termination_reason") or p.get("phase") == "Failed":
            return True
    return False


def gang_job(state: IncidentState, alert: AlertIn) -> str | None:
    """The gang workload a running pod on the alert's node is a rank of, from the node's latest pod
    listing, on the alert's GPU where the node-agent says which pods hold it (None: no such pod, or
    the node not listed)."""
    on_gpu = pods_on_gpu(state, alert.node, alert.labels.get("gpu"))
    for p in _pods_listed(state, alert.node) or []:
        if on_gpu is not None and f"{p.get('namespace')}/{p.get('name')}" not in on_gpu:
            continue
        if p.get("workload") and not p.get("terminating") and not p.get("daemonset"):
            return str(p["workload"])
    return None


def _takes_node_out(pb: Playbook, state: IncidentState, alert: AlertIn) -> bool:
    # A drain evicts every pod on the node; a cordon or taint only turns new work away. A drain only for
    # a gang job's rank takes the node out only where one runs.
    return any(
        s.tool == "k8s.drain_node" and (s.when != "gang_job" or gang_job(state, alert) is not None)
        for s in pb.runbook
    )


def customers_to_tell(state: IncidentState, alert: AlertIn, pb: Playbook, node: str | None) -> list[str]:
    """Customers a notice goes to: everyone with pods on a node the playbook takes out of service;
    otherwise the customers of the pods on the alert's GPU (every customer on the node when the GPU's
    pods are not known)."""
    node = node or alert.node
    on_gpu = None if _takes_node_out(pb, state, alert) else pods_on_gpu(state, node, alert.labels.get("gpu"))
    if on_gpu is None:
        return customers_on_node(state, node)
    found = set()
    for key in on_gpu:
        ns, _, name = key.partition("/")
        customer = customer_of_pod(state, ns, name, node)
        if customer:
            found.add(customer)
    return sorted(found)


def template_scope(state: IncidentState, ctx: PlanContext) -> dict[str, Any]:
    alert = state.alert
    pb = ctx.playbook(state)
    started = alert.starts_at or state.opened_at
    return {
        "labels": trusted_labels(alert),
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
        "component": (
            {
                "kind": c.kind,
                "name": c.name,
                "label": c.label,
                "nodes": ", ".join(c.nodes),
                "size": c.size,
                "alerting": len(c.nodes),
            }
            if (c := state.component)
            else {}
        ),
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
        current = state.alert
        rewound = False
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
        if len(entities) > 1:
            # A node that joined after earlier steps ran (while the incident waited for an approval, say)
            # gets those steps first: nobody is skipped past.
            for earlier in pb.runbook[: state.runbook_cursor]:
                if "${labels." not in str(earlier.params):
                    continue
                behind = [_left(state, pb, earlier, a) for a in entities]
                if any(behind) and not all(behind):  # another node had it and this one did not
                    step, rewound = earlier, True
                    break
        if len(entities) > 1 and "${labels." in str(step.params):
            # Several nodes with this fault in one incident: the step is done for each, in turn, with
            # that node's alert's labels; the cursor moves on once every node has had it.
            todo = [a for a in entities if _left(state, pb, step, a)]
            # A node whose step waits for its moment (a drain waiting for a gang job's checkpoint) goes
            # last: the others need not wait behind it.
            waits = {k for k, slot in state.scheduled.items() if slot.until > ctx.now}
            todo.sort(key=lambda a: f"{step.name}@{a.node}" in waits)
            if todo:
                current = todo[0]
                subject = current.node
                scope = {**scope, "labels": trusted_labels(current)}
                more = len(todo) > 1 or rewound
        entity = current
        needs_who = step.tool.startswith(("notify.", "billing.")) and "${labels.customer}" in str(step.params)
        where = subject or entity.node
        if needs_who and where and not pod_subject(entity) and _pods_listed(state, where) is None:
            # Who is affected is the cluster's to say: list the node's pods before telling or crediting.
            return Proposal(
                kind="act",
                tool="k8s.list_pods_on_node",
                params={"node": where},
                planner=self.name,
                reason=f"who has pods on {where}: read before {step.tool}",
            )
        scope = {**scope, "labels": identity(state, entity, scope["labels"])}

        def skip(reason: str) -> Proposal:
            """Pass over this step for this entity: there is nothing for it to do there."""
            return Proposal(
                kind="skip",
                planner=self.name,
                runbook_step=step.name,
                more=more,
                subject=subject,
                reason=reason,
            )

        if step.when == "job_died" and not job_died(state, entity):
            return skip(
                f"no job on GPU {entity.labels.get('gpu', '?')} of {entity.node} died: nothing for {step.name} to do"
            )
        if step.when == "gang_job" and not gang_job(state, entity):
            return skip(f"no pod on {entity.node} is a rank of a gang job: nothing for {step.name} to do")
        if (
            step.tool == "notify.customer"
            and "${labels.customer}" in str(step.params)
            and not pod_subject(entity)
        ):
            # Who to tell comes from the cluster: each customer whose pods the investigation found on the
            # node (or on the GPU), one notice per customer, this step repeating until all are told.
            told = _told(state, step.name, subject)
            customers = [c for c in customers_to_tell(state, entity, pb, subject) if c not in told]
            scope = {**scope, "labels": {k: v for k, v in scope["labels"].items() if k != "customer"}}
            if customers:
                scope = {**scope, "labels": {**scope["labels"], "customer": customers[0]}}
                more = more or len(customers) > 1
        if (
            step.tool.startswith(("notify.", "billing."))
            and "${labels.customer}" in str(step.params)
            and not scope["labels"].get("customer")
        ):
            # A GPU with no customer's job on it: nobody to tell, nothing billed to look up or credit.
            return skip(
                f"no customer's pod found there in the cluster: nothing for {step.tool} to do in this step"
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
                return skip(f"nothing to credit: {step.name} renders ${amount}")
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
