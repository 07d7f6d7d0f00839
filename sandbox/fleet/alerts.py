"""The alerts the sandbox fleet's faults fire, rendered as a real alerting stack would deliver them.

The stack modelled is the usual one for a Kubernetes GPU cloud: dcgm-exporter (GPU series), kube-state-metrics
(node and pod series), node-exporter and the node-agent (scrape health, `up`), a billing meter, Prometheus
rules over them, and Alertmanager in front of the receivers. `RULES` says, as data, which alerting rules each
kind of fault makes true; `INHIBIT_RULES` says which alerts Alertmanager mutes because a more specific one
fires. `fire` applies both and is pure: the same faults and the same `now` give the same alerts, in the same
order. `to_alertmanager` and `to_pagerduty` render them as the exact webhook bodies those systems POST.

Nothing here reveals the fault behind an alert to the receiver: `Alert.fault_id` is for the sandbox's own
bookkeeping and appears in no rendered body, so an agent under evaluation sees only what production shows it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote_plus

from pydantic import BaseModel, ConfigDict

from sandbox.fleet.faults import Fault, FaultKind

Severity = Literal["critical", "warning", "info"]
# Labels a rule adds beyond those every alert gets (alertname, severity, cluster, node, namespace, pod and
# the fault's enrichment labels): "gpu" = dcgm-exporter's per-GPU labels, "xid" = the XID code,
# "instance" = the scrape target, as a node-local exporter's `up` series carries it.
Scope = Literal["gpu", "xid", "instance"]

FIRING_ENDS_AT = "0001-01-01T00:00:00Z"  # Go's zero time, which Alertmanager sends as endsAt while firing
PAGERDUTY_API = "https://api.pagerduty.com"
PAGERDUTY_WEB = "https://sandbox.pagerduty.com"
RUNBOOKS = "http://runbooks.sandbox.local/alerts"
MIXIN_RUNBOOKS = "https://runbooks.prometheus-operator.dev/runbooks/kubernetes"


class Alert(BaseModel):
    """One alert as Alertmanager holds it, plus the id of the sandbox fault that fired it."""

    model_config = ConfigDict(frozen=True)

    alertname: str
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None = None
    fingerprint: str
    generator_url: str
    fault_id: str

    @property
    def severity(self) -> str:
        """The `severity` label."""
        return self.labels.get("severity", "")


@dataclass(frozen=True, slots=True)
class Rule:
    """One Prometheus alerting rule, as a rules file would hold it, plus how its labels are derived."""

    alert: str
    expr: str
    severity: Severity
    summary: str  # Prometheus template syntax: only {{ $labels.NAME }} is supported
    description: str
    runbook_url: str
    for_: timedelta = timedelta(0)
    scope: tuple[Scope, ...] = ()
    static_labels: Mapping[str, str] = field(default_factory=dict)  # labels the matched series carries
    xid: int | None = None  # the XID this condition is (pinned); None: the fault's code names it
    severity_by_xid: Mapping[int, Severity] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Trigger:
    """A rule a fault kind makes true; `codes` limits it to faults with those codes (XIDs)."""

    rule: Rule
    codes: frozenset[int] | None = None
    requires: tuple[Literal["node", "gpu", "code", "namespace", "pod"], ...] = ()  # fault fields needed
    default_xid: int | None = None  # the XID this fault kind raises when the fault names none


@dataclass(frozen=True, slots=True)
class Inhibit:
    """An Alertmanager inhibit rule: a firing source mutes targets whose `equal` labels match."""

    source: frozenset[str]
    target: frozenset[str]
    equal: tuple[str, ...]


# XIDs that mean the GPU (not the job) is broken and needs a reset, a reboot or a replacement
# (NVIDIA's XID catalogue). Others (13, 31, 43, 45, ...) are usually the application's own fault.
_CRITICAL_XIDS: frozenset[int] = frozenset({48, 62, 64, 74, 79, 95, 119, 120})

_GPU: tuple[Scope, ...] = ("gpu", "xid")

GPU_XID_ERROR = Rule(
    alert="GPUXidError",
    expr="DCGM_FI_DEV_XID_ERRORS > 0",
    severity="warning",
    severity_by_xid={code: "critical" for code in sorted(_CRITICAL_XIDS)},
    summary="XID {{ $labels.xid }} on GPU {{ $labels.gpu }} of node {{ $labels.node }}",
    description="GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node "
    "{{ $labels.node }} reported XID {{ $labels.xid }}. Some XIDs are faults of the job running on it, "
    "others mean the GPU needs a reset or must be drained; look the code up before acting.",
    runbook_url=f"{RUNBOOKS}/gpuxiderror",
    scope=_GPU,
)
GPU_FALLEN_OFF_BUS = Rule(
    alert="GPUFallenOffBus",
    expr="DCGM_FI_DEV_XID_ERRORS == 79",
    severity="critical",
    xid=79,
    summary="GPU {{ $labels.gpu }} of node {{ $labels.node }} has fallen off the bus",
    description="GPU {{ $labels.gpu }} ({{ $labels.UUID }}) on node {{ $labels.node }} raised XID "
    "{{ $labels.xid }} and is no longer reachable over PCIe; NVML reports it lost and the jobs on it have "
    "failed. Only a node reboot (or a reseat) brings it back: drain the node first.",
    runbook_url=f"{RUNBOOKS}/gpufallenoffbus",
    scope=_GPU,
)
GPU_ECC_UNCORRECTABLE = Rule(
    alert="GPUEccUncorrectable",
    expr="DCGM_FI_DEV_ECC_DBE_VOL_TOTAL > 0",
    severity="critical",
    xid=48,
    summary="Uncorrectable ECC errors on GPU {{ $labels.gpu }} of node {{ $labels.node }}",
    description="GPU {{ $labels.gpu }} ({{ $labels.UUID }}) on node {{ $labels.node }} counted volatile "
    "double-bit (uncorrectable) ECC errors (XID {{ $labels.xid }}). Memory of the job on it may be corrupt; "
    "the GPU must be reset before it is given work again.",
    runbook_url=f"{RUNBOOKS}/gpueccuncorrectable",
    scope=_GPU,
)
GPU_ROW_REMAP_PENDING = Rule(
    alert="GPURowRemapPending",
    expr="DCGM_FI_DEV_ROW_REMAP_PENDING > 0",
    severity="warning",
    xid=63,
    summary="Row remap pending on GPU {{ $labels.gpu }} of node {{ $labels.node }}",
    description="GPU {{ $labels.gpu }} ({{ $labels.UUID }}) on node {{ $labels.node }} recorded a row remap "
    "(XID {{ $labels.xid }}) that takes effect only after a GPU reset: drain the GPU and reset it when its "
    "workload allows.",
    runbook_url=f"{RUNBOOKS}/gpurowremappending",
    scope=_GPU,
)
GPU_ROW_REMAP_FAILURE = Rule(
    alert="GPURowRemapFailure",
    expr="DCGM_FI_DEV_ROW_REMAP_FAILURE > 0",
    severity="critical",
    xid=64,
    summary="Row remap failed on GPU {{ $labels.gpu }} of node {{ $labels.node }}",
    description="GPU {{ $labels.gpu }} ({{ $labels.UUID }}) on node {{ $labels.node }} failed to remap a "
    "row (XID {{ $labels.xid }}): it has no spare rows left. Take it out of service and have it replaced.",
    runbook_url=f"{RUNBOOKS}/gpurowremapfailure",
    scope=_GPU,
)
GPU_THERMAL_THROTTLING = Rule(
    alert="GPUThermalThrottling",
    expr="rate(DCGM_FI_DEV_THERMAL_VIOLATION[5m]) > 0",
    severity="warning",
    for_=timedelta(minutes=5),
    summary="GPU {{ $labels.gpu }} of node {{ $labels.node }} is thermally throttled",
    description="GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node "
    "{{ $labels.node }} has spent time in thermal slowdown throughout the last 5 minutes; its clocks are "
    "reduced and jobs on it run slower. Check the node's cooling.",
    runbook_url=f"{RUNBOOKS}/gputhermalthrottling",
    scope=("gpu",),
)
KUBE_NODE_NOT_READY = Rule(
    alert="KubeNodeNotReady",
    expr='kube_node_status_condition{condition="Ready",status!="true"} == 1',
    severity="critical",
    for_=timedelta(minutes=15),
    static_labels={"condition": "Ready", "status": "unknown"},
    summary="Node {{ $labels.node }} is not ready",
    description="Node {{ $labels.node }} has been Ready={{ $labels.status }} for more than 15 minutes: its "
    "kubelet has stopped posting status to the API server.",
    runbook_url=f"{MIXIN_RUNBOOKS}/kubenodenotready",
)
KUBE_NODE_UNREACHABLE = Rule(
    alert="KubeNodeUnreachable",
    expr='kube_node_spec_taint{key="node.kubernetes.io/unreachable",effect="NoSchedule"} == 1',
    severity="warning",
    for_=timedelta(minutes=15),
    static_labels={"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
    summary="Node {{ $labels.node }} is unreachable",
    description="Node {{ $labels.node }} carries the node.kubernetes.io/unreachable taint: the control "
    "plane cannot reach it, and its pods will be evicted and may be rescheduled elsewhere.",
    runbook_url=f"{MIXIN_RUNBOOKS}/kubenodeunreachable",
)
NODE_DOWN = Rule(
    alert="NodeDown",
    expr='up{job="node-exporter"} == 0',
    severity="critical",
    for_=timedelta(minutes=5),
    static_labels={"job": "node-exporter"},
    scope=("instance",),
    summary="Node {{ $labels.node }} is down",
    description="Prometheus has failed to scrape node-exporter on {{ $labels.instance }} for 5 minutes. "
    "With KubeNodeNotReady this means the machine itself is down, not only cut off from the control plane.",
    runbook_url=f"{RUNBOOKS}/nodedown",
)
NODE_AGENT_DOWN = Rule(
    alert="NodeAgentDown",
    expr='up{job="node-agent"} == 0',
    severity="warning",
    for_=timedelta(minutes=5),
    static_labels={"job": "node-agent"},
    scope=("instance",),
    summary="GPU node-agent on node {{ $labels.node }} is down",
    description="Prometheus has failed to scrape the supply-agent node-agent on {{ $labels.instance }} for 5 "
    "minutes: GPU health (XID, ECC, row remapping, temperature) on this node is not being observed. The "
    "GPUs themselves may be fine.",
    runbook_url=f"{RUNBOOKS}/nodeagentdown",
)
KUBE_NODE_DISK_PRESSURE = Rule(
    alert="KubeNodeDiskPressure",
    expr='kube_node_status_condition{condition="DiskPressure",status="true"} == 1',
    severity="warning",
    for_=timedelta(minutes=5),
    static_labels={"condition": "DiskPressure", "status": "true"},
    summary="Node {{ $labels.node }} is under disk pressure",
    description="Node {{ $labels.node }} has reported DiskPressure for 5 minutes; the kubelet taints it and "
    "evicts pods to reclaim image and ephemeral storage.",
    runbook_url=f"{RUNBOOKS}/kubenodediskpressure",
)
KUBE_POD_CRASH_LOOPING = Rule(
    alert="KubePodCrashLooping",
    expr='kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff"} == 1',
    severity="warning",
    for_=timedelta(minutes=15),
    static_labels={"reason": "CrashLoopBackOff"},
    summary="Pod {{ $labels.namespace }}/{{ $labels.pod }} is crash looping",
    description="Pod {{ $labels.namespace }}/{{ $labels.pod }} on node {{ $labels.node }} has been in "
    "CrashLoopBackOff for 15 minutes.",
    runbook_url=f"{MIXIN_RUNBOOKS}/kubepodcrashlooping",
)
KUBE_POD_OOM_KILLED = Rule(
    alert="KubePodOOMKilled",
    expr="increase(kube_pod_container_status_restarts_total[10m]) > 0 and on (namespace, pod, container) "
    'kube_pod_container_status_last_terminated_reason{reason="OOMKilled"} == 1',
    severity="warning",
    static_labels={"reason": "OOMKilled"},
    summary="Pod {{ $labels.namespace }}/{{ $labels.pod }} was OOMKilled",
    description="A container of pod {{ $labels.namespace }}/{{ $labels.pod }} on node {{ $labels.node }} was "
    "killed for exceeding its memory limit and has restarted in the last 10 minutes.",
    runbook_url=f"{RUNBOOKS}/kubepodoomkilled",
)
KUBE_POD_STUCK_TERMINATING = Rule(
    alert="KubePodStuckTerminating",
    expr="kube_pod_deletion_timestamp > 0",
    severity="warning",
    for_=timedelta(minutes=10),
    summary="Pod {{ $labels.namespace }}/{{ $labels.pod }} is stuck terminating",
    description="Pod {{ $labels.namespace }}/{{ $labels.pod }} was deleted more than 10 minutes ago and the "
    "kubelet on node {{ $labels.node }} has not confirmed it; its GPUs stay allocated.",
    runbook_url=f"{RUNBOOKS}/kubepodstuckterminating",
)
GPU_METERING_ANOMALY = Rule(
    alert="GPUMeteringAnomaly",
    expr="sum by (namespace, pod) (rate(billing_gpu_seconds_total[10m])) > 1.05 * sum by (namespace, pod) "
    '(kube_pod_container_resource_requests{resource="nvidia_com_gpu"})',
    severity="warning",
    for_=timedelta(minutes=10),
    summary="GPU time of pod {{ $labels.namespace }}/{{ $labels.pod }} is metered above its allocation",
    description="For 10 minutes the billing meter has counted GPU-seconds for pod {{ $labels.namespace }}/"
    "{{ $labels.pod }} faster than the GPUs it requested allow: customer {{ $labels.customer }} is likely "
    "being charged twice.",
    runbook_url=f"{RUNBOOKS}/gpumeteringanomaly",
)

# Which rules each kind of fault makes true. A real stack fires the generic XID alert alongside the specific
# GPU ones (DCGM_FI_DEV_XID_ERRORS moves too); INHIBIT_RULES mutes it, as a production Alertmanager would.
# A dead node and a partitioned one look the same to the control plane (Ready=Unknown, the unreachable taint);
# only the dead one also stops answering Prometheus (which scrapes over the data network), hence NodeDown.
RULES: dict[FaultKind, tuple[Trigger, ...]] = {
    FaultKind.XID: (
        Trigger(GPU_XID_ERROR),
        Trigger(GPU_FALLEN_OFF_BUS, codes=frozenset({79})),
        Trigger(GPU_ECC_UNCORRECTABLE, codes=frozenset({48})),
        Trigger(GPU_ROW_REMAP_PENDING, codes=frozenset({63})),
        Trigger(GPU_ROW_REMAP_FAILURE, codes=frozenset({64})),
    ),
    FaultKind.ECC: (
        Trigger(GPU_ECC_UNCORRECTABLE),
        Trigger(GPU_ROW_REMAP_PENDING, codes=frozenset({63})),
        Trigger(GPU_ROW_REMAP_FAILURE, codes=frozenset({64})),
        Trigger(GPU_XID_ERROR, default_xid=48),
    ),
    FaultKind.OFF_BUS: (
        Trigger(GPU_FALLEN_OFF_BUS),
        Trigger(GPU_XID_ERROR, default_xid=79),
    ),
    FaultKind.THERMAL: (Trigger(GPU_THERMAL_THROTTLING),),
    FaultKind.NOT_READY: (
        Trigger(KUBE_NODE_NOT_READY),
        Trigger(KUBE_NODE_UNREACHABLE),
        Trigger(NODE_DOWN),
        Trigger(NODE_AGENT_DOWN),
    ),
    FaultKind.PARTITION: (
        Trigger(KUBE_NODE_NOT_READY),
        Trigger(KUBE_NODE_UNREACHABLE),
    ),
    FaultKind.AGENT_DOWN: (
        Trigger(NODE_AGENT_DOWN),
        Trigger(KUBE_POD_CRASH_LOOPING, requires=("pod",)),
    ),
    FaultKind.DISK_PRESSURE: (Trigger(KUBE_NODE_DISK_PRESSURE),),
    FaultKind.CRASHLOOP: (Trigger(KUBE_POD_CRASH_LOOPING),),
    FaultKind.OOMKILL: (Trigger(KUBE_POD_OOM_KILLED),),
    FaultKind.STUCK_TERMINATING: (Trigger(KUBE_POD_STUCK_TERMINATING),),
    FaultKind.DOUBLE_METERING: (Trigger(GPU_METERING_ANOMALY),),
}

INHIBIT_RULES: tuple[Inhibit, ...] = (
    Inhibit(
        source=frozenset(
            {"GPUFallenOffBus", "GPUEccUncorrectable", "GPURowRemapPending", "GPURowRemapFailure"}
        ),
        target=frozenset({"GPUXidError"}),
        equal=("cluster", "node", "gpu", "xid"),
    ),
    Inhibit(source=frozenset({"NodeDown"}), target=frozenset({"NodeAgentDown"}), equal=("cluster", "node")),
)


def all_rules() -> list[Rule]:
    """Every distinct rule in `RULES`, in table order."""
    seen: dict[str, Rule] = {}
    for triggers in RULES.values():
        for trigger in triggers:
            seen.setdefault(trigger.rule.alert, trigger.rule)
    return list(seen.values())


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: FNV-1a 64 over the sorted pairs, as 16 hex digits."""
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ 0xFF) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF  # model.SeparatorByte
    return f"{h:016x}"


def fire(
    faults: Sequence[Fault],
    *,
    now: datetime,
    cluster: str = "sandbox",
    generator_base: str = "http://prometheus.sandbox.local:9090",
) -> list[Alert]:
    """The alerts Alertmanager would hold for these faults at `now`, after `for` durations and inhibition.

    An alert starts `for` after its fault (Prometheus sends it only once the rule has been true that long);
    alerts with identical labels are one alert (the earliest); order is by start, then fault, then rule.
    """
    now = _utc(now)
    candidates: list[tuple[datetime, datetime, str, int, Alert]] = []
    for fault in faults:
        for index, trigger in enumerate(RULES[fault.kind]):
            if not _applies(trigger, fault):
                continue
            starts_at = _utc(fault.started_at) + trigger.rule.for_
            if starts_at > now:
                continue  # still pending: Prometheus has not sent it
            alert = _alert(trigger, fault, starts_at, cluster, generator_base)
            candidates.append((starts_at, _utc(fault.started_at), fault.id, index, alert))
    candidates.sort(key=lambda c: c[:4])
    unique: dict[str, Alert] = {}
    for *_, alert in candidates:
        unique.setdefault(alert.fingerprint, alert)
    return _uninhibited(list(unique.values()))


def to_alertmanager(
    alerts: Iterable[Alert],
    *,
    receiver: str = "supply-agent",
    external_url: str = "http://alertmanager.sandbox.local:9093",
    group_by: Sequence[str] = ("alertname",),
) -> list[dict[str, Any]]:
    """One Alertmanager webhook body (version 4) per group, ordered by group key.

    `group_by=("...",)` groups by every label, as Alertmanager's special value does.
    """
    groups: dict[str, tuple[dict[str, str], list[Alert]]] = {}
    for alert in alerts:
        if "..." in group_by:
            group_labels = dict(alert.labels)
        else:
            group_labels = {name: alert.labels[name] for name in group_by if name in alert.labels}
        key = "{}:" + _labelset_string(group_labels)  # the root route's key is "{}"
        groups.setdefault(key, (dict(sorted(group_labels.items())), []))[1].append(alert)
    bodies: list[dict[str, Any]] = []
    for key in sorted(groups):
        group_labels, members = groups[key]
        members = sorted(members, key=_alertmanager_order)
        bodies.append(
            {
                "receiver": receiver,
                "status": "firing" if any(a.status == "firing" for a in members) else "resolved",
                "alerts": [_alertmanager_alert(a) for a in members],
                "groupLabels": group_labels,
                "commonLabels": _common([a.labels for a in members]),
                "commonAnnotations": _common([a.annotations for a in members]),
                "externalURL": external_url,
                "version": "4",
                "groupKey": key,
                "truncatedAlerts": 0,
            }
        )
    return bodies


def to_pagerduty(
    alerts: Iterable[Alert],
    *,
    service_id: str = "PSANDBX",
    escalation_policy_id: str = "PESCSBX",
) -> list[dict[str, Any]]:
    """One PagerDuty V3 webhook body (`incident.triggered`, or `.resolved`) per alert.

    The incident is what the Events API v2 makes of the alert sent with `dedup_key` = its fingerprint. As in
    production, the body carries no alert details: see `pagerduty_incident_alerts`.
    """
    bodies: list[dict[str, Any]] = []
    for alert in alerts:
        firing = alert.status == "firing"
        incident_id = _pd_id("incident", alert.fingerprint)
        occurred = alert.starts_at if firing or alert.ends_at is None else alert.ends_at
        event_type = "incident.triggered" if firing else "incident.resolved"
        bodies.append(
            {
                "event": {
                    "id": _crockford(
                        hashlib.sha256(f"{event_type}:{alert.fingerprint}".encode()).digest(), 26
                    ),
                    "event_type": event_type,
                    "resource_type": "incident",
                    "occurred_at": _rfc3339(occurred),
                    "agent": None,
                    "client": None,
                    "data": {
                        "id": incident_id,
                        "type": "incident",
                        "self": f"{PAGERDUTY_API}/incidents/{incident_id}",
                        "html_url": f"{PAGERDUTY_WEB}/incidents/{incident_id}",
                        "number": int(alert.fingerprint, 16) % 1_000_000 + 1,
                        "status": "triggered" if firing else "resolved",
                        "incident_key": alert.fingerprint,
                        "created_at": _rfc3339(alert.starts_at),
                        "title": alert.annotations.get("summary", alert.alertname),
                        "service": _pd_service(service_id),
                        "assignees": [],
                        "escalation_policy": {
                            "id": escalation_policy_id,
                            "type": "escalation_policy_reference",
                            "summary": "GPU fleet on-call",
                            "self": f"{PAGERDUTY_API}/escalation_policies/{escalation_policy_id}",
                            "html_url": f"{PAGERDUTY_WEB}/escalation_policies/{escalation_policy_id}",
                        },
                        "teams": [],
                        "priority": None,
                        "urgency": urgency(alert),
                        "conference_bridge": None,
                        "resolve_reason": None,
                    },
                }
            }
        )
    return bodies


def pagerduty_incident_alerts(alert: Alert, *, service_id: str = "PSANDBX") -> dict[str, Any]:
    """What `GET /incidents/{id}/alerts` returns for the incident `to_pagerduty` made of this alert.

    `body.details` is the Events API v2 `payload.custom_details` the sender put there: the alert's labels
    and annotations, flat (a label wins over an annotation of the same name).
    """
    alert_id = _pd_id("alert", alert.fingerprint)
    details = dict(alert.labels)
    for name, value in alert.annotations.items():
        details.setdefault(name, value)
    return {
        "alerts": [
            {
                "id": alert_id,
                "type": "alert",
                "summary": alert.annotations.get("summary", alert.alertname),
                "self": f"{PAGERDUTY_API}/alerts/{alert_id}",
                "html_url": f"{PAGERDUTY_WEB}/alerts/{alert_id}",
                "created_at": _rfc3339(alert.starts_at),
                "status": "triggered" if alert.status == "firing" else "resolved",
                "alert_key": alert.fingerprint,
                "service": _pd_service(service_id),
                "incident": {
                    "id": _pd_id("incident", alert.fingerprint),
                    "type": "incident_reference",
                },
                "suppressed": False,
                "severity": _pd_severity(alert),
                "body": {"type": "alert_body", "contexts": [], "details": details},
            }
        ],
        "limit": 25,
        "offset": 0,
        "more": False,
    }


def urgency(alert: Alert) -> Literal["high", "low"]:
    """PagerDuty urgency: critical alerts page now (high); the rest wait for working hours (low)."""
    return "high" if alert.severity == "critical" else "low"


# --- rendering helpers -----------------------------------------------------------------------------------

_TEMPLATE = re.compile(r"\{\{\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_INVALID_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_]")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def render(template: str, labels: Mapping[str, str]) -> str:
    """Expand `{{ $labels.NAME }}`; a missing label renders as Go templates render it, `<no value>`."""
    return _TEMPLATE.sub(lambda m: labels.get(m.group(1), "<no value>"), template)


def _applies(trigger: Trigger, fault: Fault) -> bool:
    if trigger.codes is not None and fault.code not in trigger.codes:
        return False
    return all(getattr(fault, name) is not None for name in trigger.requires)


def _alert(trigger: Trigger, fault: Fault, starts_at: datetime, cluster: str, generator_base: str) -> Alert:
    rule = trigger.rule
    labels = _labels(trigger, fault, cluster)
    annotations = {
        "description": render(rule.description, labels),
        "runbook_url": rule.runbook_url,
        "summary": render(rule.summary, labels),
    }
    return Alert(
        alertname=rule.alert,
        status="firing",
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=None,
        fingerprint=fingerprint(labels),
        generator_url=f"{generator_base}/graph?g0.expr={quote_plus(rule.expr)}&g0.tab=1",
        fault_id=fault.id,
    )


def _labels(trigger: Trigger, fault: Fault, cluster: str) -> dict[str, str]:
    """The label set: enrichment labels, then what the series and the rule carry (which win)."""
    rule = trigger.rule
    labels = {_label_name(name): value for name, value in fault.labels.items()}
    for name in ("node", "namespace", "pod"):
        if getattr(fault, name) is not None:
            labels[name] = getattr(fault, name)
    if "gpu" in rule.scope and fault.gpu is not None:
        labels.update(
            {
                "gpu": str(fault.gpu),
                "device": f"nvidia{fault.gpu}",
                "UUID": fault.labels.get("gpu_uuid", ""),
                "modelName": fault.labels.get("gpu_product", ""),
                "Hostname": fault.node or "",
            }
        )
    xid = next((x for x in (rule.xid, fault.code, trigger.default_xid) if x is not None), None)
    if "xid" in rule.scope and xid is not None:
        labels.update({"xid": str(xid), "err_code": str(xid)})
    if "instance" in rule.scope:
        labels["instance"] = fault.node or ""  # node-local exporters are relabelled to the node name
    labels.update(rule.static_labels)
    severity = rule.severity_by_xid.get(xid, rule.severity) if xid is not None else rule.severity
    labels.update({"alertname": rule.alert, "severity": severity, "cluster": cluster})
    return {name: value for name, value in sorted(labels.items()) if value}  # Prometheus drops empty labels


def _label_name(name: str) -> str:
    """A valid Prometheus label name, as Kubernetes service discovery sanitises one."""
    clean = _INVALID_LABEL_CHARS.sub("_", name)
    return f"_{clean}" if clean[:1].isdigit() else clean


def _uninhibited(alerts: list[Alert]) -> list[Alert]:
    """The alerts no firing source mutes (a missing label equals an empty one, as in Alertmanager)."""
    muting: list[dict[tuple[str, ...], set[str]]] = []
    for rule in INHIBIT_RULES:
        keys: dict[tuple[str, ...], set[str]] = {}
        for source in alerts:
            if source.status == "firing" and source.alertname in rule.source:
                keys.setdefault(_equal_key(source, rule), set()).add(source.fingerprint)
        muting.append(keys)

    def muted(alert: Alert) -> bool:
        return any(
            alert.alertname in rule.target
            and bool(keys.get(_equal_key(alert, rule), set()) - {alert.fingerprint})
            for rule, keys in zip(INHIBIT_RULES, muting, strict=True)
        )

    return [a for a in alerts if not muted(a)]


def _equal_key(alert: Alert, rule: Inhibit) -> tuple[str, ...]:
    return tuple(alert.labels.get(name, "") for name in rule.equal)


def _alertmanager_alert(alert: Alert) -> dict[str, Any]:
    firing = alert.status == "firing"
    return {
        "status": alert.status,
        "labels": dict(sorted(alert.labels.items())),
        "annotations": dict(sorted(alert.annotations.items())),
        "startsAt": _rfc3339(alert.starts_at),
        "endsAt": FIRING_ENDS_AT if firing or alert.ends_at is None else _rfc3339(alert.ends_at),
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }


def _alertmanager_order(alert: Alert) -> tuple[str, str, list[tuple[str, str]]]:
    """Alertmanager sorts a group's alerts by job, then instance, then the whole label set."""
    return alert.labels.get("job", ""), alert.labels.get("instance", ""), sorted(alert.labels.items())


def _common(label_sets: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not label_sets:
        return {}
    first, *rest = label_sets
    return {k: v for k, v in sorted(first.items()) if all(other.get(k) == v for other in rest)}


def _labelset_string(labels: Mapping[str, str]) -> str:
    """Go's model.LabelSet.String(): sorted, `name="value"` (Go-quoted), joined by ", "."""
    pairs = (f"{name}={json.dumps(labels[name], ensure_ascii=False)}" for name in sorted(labels))
    return "{" + ", ".join(pairs) + "}"


def _pd_service(service_id: str) -> dict[str, str]:
    return {
        "id": service_id,
        "type": "service_reference",
        "summary": "GPU fleet (sandbox)",
        "self": f"{PAGERDUTY_API}/services/{service_id}",
        "html_url": f"{PAGERDUTY_WEB}/services/{service_id}",
    }


def _pd_severity(alert: Alert) -> str:
    """The Events API v2 severity (critical, error, warning, info) the alert was sent with."""
    return alert.severity if alert.severity in ("critical", "error", "warning", "info") else "error"


def _pd_id(kind: str, fp: str) -> str:
    """A PagerDuty-style object id ("Q" + 13 of [0-9A-Z]), stable for the alert's fingerprint."""
    return "Q" + _crockford(hashlib.sha256(f"{kind}:{fp}".encode()).digest(), 13)


def _crockford(digest: bytes, length: int) -> str:
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(chars)


def _utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already (the fleet clock's convention)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with "Z", fractional seconds only when there are some (as Go's RFC3339Nano)."""
    moment = _utc(moment)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"
