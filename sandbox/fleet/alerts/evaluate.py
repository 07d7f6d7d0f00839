"""Evaluating the rules: the alerts Alertmanager would hold for a set of faults at a moment, after the
rules' ``for`` durations, de-duplication by label set and inhibition.

Pure: the same faults and the same ``now`` give the same alerts, in the same order, so evals and
cassettes can pin them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from urllib.parse import quote_plus

from sandbox.fleet.alerts.model import Alert, Inhibit, Trigger, utc
from sandbox.fleet.alerts.rules import INHIBIT_RULES, RULES, SILENCED_BY
from sandbox.fleet.faults import Fault

_TEMPLATE = re.compile(r"\{\{\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_INVALID_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_]")


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
    A rule whose series a silent exporter no longer exports for the fault's node (`SILENCED_BY`) is not
    true there: it neither fires nor inhibits.
    """
    now = utc(now)
    silent = _silenced(faults)
    candidates: list[tuple[datetime, datetime, str, int, Alert]] = []
    for fault in faults:
        for index, trigger in enumerate(RULES[fault.kind]):
            if not _applies(trigger, fault) or _is_silenced(trigger, fault, silent):
                continue
            starts_at = utc(fault.started_at) + trigger.rule.for_
            if starts_at > now:
                continue  # still pending: Prometheus has not sent it
            alert = _alert(trigger, fault, starts_at, cluster, generator_base)
            candidates.append((starts_at, utc(fault.started_at), fault.id, index, alert))
    candidates.sort(key=lambda c: c[:4])
    unique: dict[str, Alert] = {}
    for *_, alert in candidates:
        unique.setdefault(alert.fingerprint, alert)
    return _uninhibited(list(unique.values()))


def _silenced(faults: Sequence[Fault]) -> set[tuple[str, str, int | None]]:
    """(exporter, node, GPU or None for all of them) for every series a silencing fault takes away."""
    return {
        (exporter, fault.node, fault.gpu)
        for fault in faults
        if fault.node is not None
        for exporter in SILENCED_BY.get(fault.kind, ())
    }


def _is_silenced(trigger: Trigger, fault: Fault, silent: set[tuple[str, str, int | None]]) -> bool:
    if not silent:
        return False
    node = fault.node or fault.labels.get("node")
    exporter = trigger.rule.exporter
    return node is not None and (
        (exporter, node, None) in silent or (fault.gpu is not None and (exporter, node, fault.gpu) in silent)
    )


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
    severity = rule.severity
    if rule.severity_of_xid is not None and xid is not None:
        severity = rule.severity_of_xid(xid, fault.recovery_action)
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
