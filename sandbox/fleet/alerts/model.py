"""What an alert is: the alert as Alertmanager holds it, the alerting rule and inhibit rule that make and
mute it, and the wire form of its timestamps.

Shared by the rules (rules.py), their evaluation (evaluate.py) and every receiver's rendering
(alertmanager.py, pagerduty.py), so it sits below all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

Severity = Literal["critical", "warning", "info"]
# Labels a rule adds beyond those every alert gets (alertname, severity, cluster, node, namespace, pod and
# the fault's enrichment labels): "gpu" = dcgm-exporter's per-GPU labels, "xid" = the XID code,
# "instance" = the scrape target, as a node-local exporter's `up` series carries it.
Scope = Literal["gpu", "xid", "instance"]
# Where the series a rule's expression reads comes from: dcgm-exporter (the DCGM_FI_* GPU series),
# kube-state-metrics (node and pod objects), Prometheus itself (`up`, its scrape of a node-local target)
# or the billing meter. A monitor-silent fault takes one exporter's series away from a node.
Exporter = Literal["dcgm-exporter", "kube-state-metrics", "prometheus", "billing"]


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
    exporter: Exporter = "kube-state-metrics"  # whose series `expr` reads
    for_: timedelta = timedelta(0)
    scope: tuple[Scope, ...] = ()
    static_labels: Mapping[str, str] = field(default_factory=dict)  # labels the matched series carries
    xid: int | None = None  # the XID this condition is (pinned); None: the fault's code names it
    # The severity of the alert for an XID and the fault's GPU recovery action; None: always `severity`.
    severity_of_xid: Callable[[int, str | None], Severity] | None = None


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


def utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already (the fleet clock's convention)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with "Z", fractional seconds only when there are some (as Go's RFC3339Nano)."""
    moment = utc(moment)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"
