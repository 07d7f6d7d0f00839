"""Alerts in, and the incident state the graph carries: the vocabulary of one incident.

An alert arrives as an Alertmanager webhook body, a PagerDuty V3 webhook body or the project's own
form (what ``sandbox alerts --format raw`` prints). Every form becomes :class:`AlertIn`; alerts of one
class fold into one incident by a grouping key. :class:`IncidentState` is the LangGraph state: JSON
all the way down, so a checkpoint survives a crash and a restart in another process.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from supply_agent.models import Action, Approval, Decision
from supply_agent.models.labels import gpu_series, node_from_labels

Outcome = Literal["mitigated", "escalated", "no_action"]
ZERO_TIME = "0001-01-01T00:00:00Z"


# Alerts about the monitoring itself, not the machines: however many nodes fire them, one incident.


class AlertError(ValueError):
    """An alert body that cannot be read: says where and what was expected."""


class AlertIn(BaseModel):
    """One alert, whatever sent it."""

    model_config = ConfigDict(frozen=True)

    alertname: str = Field(min_length=1)
    status: Literal["firing", "resolved"] = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = None
    fingerprint: str = ""
    # "agent": not received but found: the fault the cluster shows behind a received alert (its
    # annotations say what it was derived from); never stored as a received alert.
    source: Literal["alertmanager", "pagerduty", "file", "agent"] = "file"
    source_id: str = Field("", description="PagerDuty incident id, or Alertmanager groupKey.")
    group_key: str = ""

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items() if v is not None}
        return value

    @field_validator("labels", mode="after")
    @classmethod
    def _node(cls, labels: dict[str, str]) -> dict[str, str]:
        """``node`` from the label that names it under another name (``kubernetes_node``, dcgm-exporter's
        ``Hostname``, a scrape target's ``instance``: supply_agent/models/data/node_labels.yaml)."""
        if "exported_node" in labels:  # the series' own node, where `node` is the scrape target's
            found = node_from_labels({"exported_node": labels["exported_node"]})
            if found is not None:
                return {**labels, "node": found[0]}
        if "node" in labels:
            return labels
        # A pod's own series (kube-state-metrics' kube_pod_*): its scrape labels name the exporter's
        # node, not the pod's, which the cluster says. A GPU's series names its GPU's node even where
        # the exporter also names the pod on it.
        if "pod" in labels and "namespace" in labels and not gpu_series(labels):
            return labels
        found = node_from_labels(labels)
        return labels if found is None else {**labels, "node": found[0]}

    def model_post_init(self, context: Any, /) -> None:
        if not self.fingerprint:
            digest = hashlib.sha256(
                json.dumps({"alertname": self.alertname, **self.labels}, sort_keys=True).encode()
            ).hexdigest()
            object.__setattr__(self, "fingerprint", digest[:16])

    @property
    def node(self) -> str | None:
        return self.labels.get("node")

    @property
    def pod(self) -> tuple[str, str] | None:
        """The pod the alert is about (namespace, name), when a pod is its subject. On a GPU's series (a
        ``gpu``, ``xid`` or ``err_code`` label) a pod label is the exporter's attribution, not the subject."""
        labels = self.labels
        if "pod" not in labels or "namespace" not in labels:
            return None
        if self.alertname.startswith("KubePod") or not ({"gpu", "xid", "err_code"} & labels.keys()):
            return labels["namespace"], labels["pod"]
        return None


def _time(value: Any, where: str) -> datetime | None:
    if value in (None, "", ZERO_TIME):
        return None
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise AlertError(f"{where}: {value!r} is not an RFC 3339 time") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _alert(data: Any, where: str, **extra: Any) -> AlertIn:
    if not isinstance(data, Mapping):
        raise AlertError(f"{where}: expected an object, got {type(data).__name__}")
    labels = data.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise AlertError(f"{where}.labels: expected an object of strings")
    alertname = data.get("alertname") or labels.get("alertname")
    if not alertname:
        raise AlertError(f"{where}: no alertname (neither a field nor a label)")
    try:
        return AlertIn(
            alertname=str(alertname),
            status=data.get("status") or "firing",
            labels={k: v for k, v in labels.items() if k != "alertname"},
            annotations=data.get("annotations") or {},
            starts_at=_time(data.get("startsAt", data.get("starts_at")), f"{where}.startsAt"),
            fingerprint=str(data.get("fingerprint") or ""),
            **extra,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise AlertError(f"{where}.{loc}: {err['msg']}") from exc


class PagerDutyRef(BaseModel):
    """A PagerDuty V3 webhook names an incident but carries no alert details: they are fetched."""

    event_id: str
    event_type: str
    incident_id: str
    title: str
    status: str
    html_url: str = ""
    urgency: str = ""


def parse_alerts(body: Any, where: str = "body") -> tuple[list[AlertIn], list[PagerDutyRef]]:
    """The alerts in one body: Alertmanager (version "4"), PagerDuty V3 (references to fetch), or the
    project's own form (one alert object, or a list of them)."""
    if isinstance(body, Mapping) and "event" in body:
        event = body["event"]
        if not isinstance(event, Mapping) or not isinstance(event.get("data"), Mapping):
            raise AlertError(f"{where}.event: a PagerDuty V3 webhook needs event.data")
        data = event["data"]
        missing = [k for k in ("id", "event_type") if not (data if k == "id" else event).get(k)]
        if missing:
            raise AlertError(f"{where}.event: missing {', '.join(missing)}")
        if data.get("type", "incident") != "incident":
            return [], []
        return [], [
            PagerDutyRef(
                event_id=str(event.get("id", "")),
                event_type=str(event["event_type"]),
                incident_id=str(data["id"]),
                title=str(data.get("title", "")),
                status=str(data.get("status", "")),
                html_url=str(data.get("html_url", "")),
                urgency=str(data.get("urgency", "")),
            )
        ]
    if isinstance(body, Mapping) and "alerts" in body:
        if str(body.get("version", "4")) != "4":
            raise AlertError(
                f"{where}.version: Alertmanager webhook version {body.get('version')!r}; expected '4'"
            )
        alerts = body["alerts"]
        if not isinstance(alerts, list):
            raise AlertError(f"{where}.alerts: expected a list")
        group = str(body.get("groupKey", ""))
        return [
            _alert(a, f"{where}.alerts[{i}]", source="alertmanager", source_id=group, group_key=group)
            for i, a in enumerate(alerts)
        ], []
    if isinstance(body, list):
        return [_alert(a, f"{where}[{i}]") for i, a in enumerate(body)], []
    if isinstance(body, Mapping):
        return [_alert(body, where)], []
    raise AlertError(f"{where}: expected an Alertmanager or PagerDuty V3 webhook, or an alert object")


_LABEL_PAIR = re.compile(r"^ - ([a-zA-Z_][a-zA-Z0-9_]*) = (.*)$")


def _text_alert_list(text: str) -> list[tuple[dict[str, str], dict[str, str]]]:
    """The alerts in Alertmanager's ``__text_alert_list`` rendering (template/default.tmpl), which its
    PagerDuty receiver sends as the ``firing`` and ``resolved`` details when configured with none: for
    each alert ``Labels:`` then `` - name = value`` lines, ``Annotations:`` likewise, then lines such
    as ``Source: <url>`` (newer releases add ``Value:``, ``Silence:``, ``Dashboard:``). A line that
    continues an annotation's value (a multi-line description) is kept with it. The text is the
    sender's, untrusted: only its label pairs are read as labels, as a webhook's would be."""
    alerts: list[tuple[dict[str, str], dict[str, str]]] = []
    section: dict[str, str] | None = None
    last = ""
    for line in text.splitlines():
        if line.strip() == "Labels:":
            alerts.append(({}, {}))
            section, last = alerts[-1][0], ""
        elif line.strip() == "Annotations:" and alerts:
            section, last = alerts[-1][1], ""
        elif section is not None and (m := _LABEL_PAIR.match(line)):
            section[m.group(1)] = m.group(2)
            last = m.group(1)
        elif alerts and section is alerts[-1][1] and last and not re.match(r"^[A-Z][a-z]*: ", line):
            section[last] += "\n" + line
        else:
            section, last = None, ""
    return [(labels, ann) for labels, ann in alerts if labels]


_DEFAULT_DETAILS = frozenset({"firing", "resolved", "num_firing", "num_resolved"})


def _alertmanager_default(details: Mapping[str, Any]) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(status, labels, annotations) of each alert in Alertmanager's default PagerDuty details; [] for
    details of another shape. Alertmanager adds its default keys to a receiver's own ``details`` too, so
    details with keys of their own are read as those keys. The text is read only when it holds as many
    alerts as ``num_firing`` and ``num_resolved`` say: text inside an annotation that mimics another
    alert (or a label value with a line break) makes them disagree, and the page is then read key by key
    (which names no node: it goes to a human)."""
    if set(details) - _DEFAULT_DETAILS:
        return []
    out: list[tuple[str, dict[str, str], dict[str, str]]] = []
    for key, status in (("firing", "firing"), ("resolved", "resolved")):
        value = details.get(key)
        parsed = _text_alert_list(value) if isinstance(value, str) and "Labels:" in value else []
        count = str(details.get(f"num_{key}", "")).strip()
        if count.isdigit() and int(count) != len(parsed):
            return []
        out += [(status, labels, ann) for labels, ann in parsed]
    return out


def pagerduty_alerts(ref: PagerDutyRef, incident_alerts: Mapping[str, Any]) -> list[AlertIn]:
    """The alerts of a PagerDuty incident from ``GET /incidents/{id}/alerts``: labels and annotations are
    the Events API v2 ``custom_details`` the sender (Alertmanager's PagerDuty receiver) put there, one
    key each where its config says so, else as its default details render them (the ``firing`` and
    ``resolved`` text of every alert in the group: one alert each)."""
    out = []
    for i, a in enumerate(incident_alerts.get("alerts") or []):
        details = ((a.get("body") or {}).get("details")) or {}
        if not isinstance(details, Mapping):
            details = {"details": str(details)}
        where = f"pagerduty incident {ref.incident_id} alerts[{i}]"
        grouped = _alertmanager_default(details)
        for j, (status, labels, notes) in enumerate(grouped):
            alertname = labels.pop("alertname", None) or a.get("summary") or ref.title
            out.append(
                _alert(
                    {
                        "alertname": alertname,
                        "status": status if a.get("status", "triggered") == "triggered" else "resolved",
                        "labels": labels,
                        "annotations": notes,
                        "startsAt": a.get("created_at"),
                    },
                    f"{where}.body.details.{status}[{j}]",
                    source="pagerduty",
                    source_id=ref.incident_id,
                )
            )
        if grouped:
            continue
        annotations = {k: details[k] for k in ("summary", "description", "runbook_url") if k in details}
        labels = {k: v for k, v in details.items() if k not in annotations}
        alertname = labels.pop("alertname", None) or a.get("summary") or ref.title
        out.append(
            _alert(
                {
                    "alertname": alertname,
                    "status": "firing" if a.get("status", "triggered") == "triggered" else "resolved",
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": a.get("created_at"),
                    "fingerprint": a.get("alert_key") or "",
                },
                where,
                source="pagerduty",
                source_id=ref.incident_id,
            )
        )
    return out


def read_alert_file(path: Path) -> Any:
    """The JSON (or YAML) body of an alert file, with an error that names the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise AlertError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise AlertError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from exc


# -- the graph's state --------------------------------------------------------------------------------
class TimelineEntry(BaseModel):
    """One line of the incident's timeline."""

    at: datetime
    node: str  # the graph node that wrote it
    kind: str  # triage, evidence, proposal, decision, approval, action, verify, escalate, resolve, ...
    text: str
    data: dict[str, Any] = Field(default_factory=dict)


class Evidence(BaseModel):
    """One read: the tool, its parameters, and what it said (untrusted text fenced)."""

    tool: str
    params: dict[str, Any]
    ok: bool
    summary: str
    result: Any = None
    untrusted: bool = False
    ms: float = 0.0
    runbook_step: str | None = None
    subject: str | None = None  # the affected node the runbook step read for (see Proposal.subject)
    planner: str = "investigate"


class LlmCall(BaseModel):
    """One model exchange: which planner, model, tokens and dollars."""

    planner: str
    model: str
    graph_node: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: Decimal = Decimal("0")
    ms: float = 0.0


class Proposal(BaseModel):
    """What a planner wants next: one action, to pass over a runbook step with nothing to do (skip), or
    to stop (done) or hand over (escalate)."""

    kind: Literal["act", "skip", "done", "escalate"]
    tool: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""
    planner: str = "runbook"
    runbook_step: str | None = None  # the playbook step it follows, when it follows one
    more: bool = False  # the same runbook step has more to do after this action (one notice per customer)
    subject: str | None = None  # the affected node this step is for, when the incident has several
    root_cause: str | None = None
    calls: list[LlmCall] = Field(default_factory=list)


class StepRecord(BaseModel):
    """One proposed action through gate, approval, execution and verification."""

    index: int
    action: Action
    planner: str
    more: bool = False  # the runbook step is not done after this action: the cursor stays
    subject: str | None = None  # the affected node the step is for (see Proposal.subject)
    runbook_step: str | None = None
    decision: Decision | None = None
    approval: Approval | None = None
    approval_state: Literal["none", "pending", "approved", "rejected", "expired"] = "none"
    outcome: Literal[
        "proposed", "denied", "refused", "executed", "failed", "duplicate", "rejected", "expired"
    ] = "proposed"
    result: dict[str, Any] | None = None
    error: str | None = None
    verified: bool | None = None
    verify_note: str = ""
    attempts: int = 1
    io_ms: float = 0.0


class ScheduledStep(BaseModel):
    """A step that waits for a better moment (supply_agent.policy.waiting): when it first came due, when
    it runs (``until``) and the deadline it never passes. Kept per runbook step and node, so the deadline
    stays the first one however often the thread wakes."""

    key: str  # "runbook step@node"
    tool: str
    subject: str | None = None
    first_due: datetime
    until: datetime
    deadline: datetime
    reason: str
    waits_for: list[str] = Field(default_factory=list)


class Component(BaseModel):
    """A component several alerting nodes share (a rack, a leaf switch, a driver version), as the
    cluster's node labels say: the incident's suspected cause."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(description="rack, switch, driver: a kind _global.yaml's topology names.")
    label: str = Field(description="The node label that says which component a node is in.")
    name: str = Field(description="The label's value: the component's name.")
    nodes: list[str] = Field(description="The alerting nodes in it.")
    size: int = Field(ge=1, description="How many nodes the cluster has in it.")


class IncidentState(BaseModel):
    """The LangGraph state of one incident (thread id = incident id)."""

    incident_id: str
    alerts: list[AlertIn]
    opened_at: datetime
    component: Component | None = None  # the shared component the incident is about, if any
    playbook_id: str | None = None
    severity: str = "warning"
    root_cause: str | None = None
    phase: str = "triage"
    evidence: Annotated[list[Evidence], operator.add] = Field(default_factory=list)
    steps: list[StepRecord] = Field(default_factory=list)
    runbook_cursor: int = 0
    read_budget: int = 30
    llm_calls: Annotated[list[LlmCall], operator.add] = Field(default_factory=list)
    pending: Proposal | None = None
    outcome: Outcome | None = None
    escalation_reason: str | None = None
    handoff: str | None = None  # a hardware ticket or follow-up for humans after a mitigation
    scheduled: dict[str, ScheduledStep] = Field(default_factory=dict)  # steps waiting for their moment
    summary: dict[str, Any] | None = None
    timeline: Annotated[list[TimelineEntry], operator.add] = Field(default_factory=list)

    @property
    def alert(self) -> AlertIn:
        return self.alerts[0]

    def nodes(self) -> list[str]:
        return sorted({a.node for a in self.alerts if a.node and a.status == "firing"})


STATE_TYPES: tuple[type[BaseModel], ...] = (
    AlertIn,
    Component,
    TimelineEntry,
    Evidence,
    LlmCall,
    Proposal,
    StepRecord,
    ScheduledStep,
    IncidentState,
)
