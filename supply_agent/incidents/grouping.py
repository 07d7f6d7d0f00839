"""How alerts fold into incidents: the one grouping rule.

Alerts of one class fold into one incident; the same alert again within the grouping window (a flap, a
storm of re-sends) joins the incident it belonged to; a resolved alert never opens one; an incident
that closed is followed by a new one of its class (``-2``, ``-3``)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from supply_agent.models.incident import AlertIn
from supply_agent.policy.xids import follows_another

# The monitor down on many nodes is one outage, one page.
MONITOR_ALERTS = frozenset({"NodeAgentDown"})


def grouping_key(alert: AlertIn) -> str:
    """Alerts of one class fold into one incident. A GPU fault groups by alert name and XID, not by
    node: the same XID on many nodes at once is one incident (a rollout), not many. A pod alert
    groups by pod, any other node alert by node."""
    xid = alert.labels.get("xid") or alert.labels.get("err_code")
    if xid:
        return f"{alert.alertname}|xid={xid}"
    if alert.alertname in MONITOR_ALERTS:  # the monitor down on many nodes is one outage, one page
        return alert.alertname
    if "pod" in alert.labels and "namespace" in alert.labels and "node" not in alert.labels:
        return f"{alert.alertname}|pod={alert.labels['namespace']}/{alert.labels['pod']}"
    if alert.alertname.startswith("KubePod") and "pod" in alert.labels:
        return f"{alert.alertname}|pod={alert.labels.get('namespace', '')}/{alert.labels['pod']}"
    if "node" in alert.labels:  # NotReady, Unreachable and NodeDown on one node are one incident
        return f"node={alert.labels['node']}"
    rest = ",".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if k not in ("severity", "cluster"))
    return f"{alert.alertname}|{rest}"


def node_incident_base(node: str) -> str:
    """The id a node's own incident (NotReady, NodeDown, disk pressure ...) has, before ``-2``, ``-3``."""
    return "inc-" + hashlib.sha256(f"node={node}".encode()).hexdigest()[:12]


def _gpu_of(alert: AlertIn) -> tuple[str, str] | None:
    node, gpu = alert.labels.get("node"), alert.labels.get("gpu")
    return (node, gpu) if node and gpu is not None else None


def _xid(alert: AlertIn) -> int | None:
    raw = alert.labels.get("xid") or alert.labels.get("err_code")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def group_alerts(alerts: Iterable[AlertIn]) -> list[list[AlertIn]]:
    """Alerts folded into incidents by grouping key, in arrival order; a resolved alert joins its group.

    An XID NVIDIA's catalogue says follows another (45, preemptive cleanup after an earlier error; 154,
    the recovery action changed) joins the incident of the other XID on the same GPU: one fault, one
    incident, the other XID's playbook."""
    alerts = list(alerts)
    leaders: dict[tuple[str, str], str] = {}
    for alert in alerts:
        code, gpu = _xid(alert), _gpu_of(alert)
        if code is not None and gpu is not None and not follows_another(code):
            leaders.setdefault(gpu, grouping_key(alert))
    groups: dict[str, list[AlertIn]] = {}
    for alert in alerts:
        code, gpu = _xid(alert), _gpu_of(alert)
        key = grouping_key(alert)
        if code is not None and gpu is not None and follows_another(code) and gpu in leaders:
            key = leaders[gpu]
        groups.setdefault(key, []).append(alert)
    return list(groups.values())


def incident_id_for(alerts: list[AlertIn]) -> str:
    """A stable id for a group of alerts: the same alerts open (or join) the same incident."""
    first = alerts[0]
    if first.source == "pagerduty" and first.source_id:
        return f"pd-{first.source_id}"
    return "inc-" + hashlib.sha256(grouping_key(first).encode()).hexdigest()[:12]


def join_window(alert: AlertIn, now: datetime, window: timedelta | None) -> tuple[bool, datetime | None]:
    """Whether an alert looks for the incident its fingerprint belonged to, and since when: a resolved
    alert always looks (at any time); a firing one only with a grouping window, within it."""
    if alert.status == "resolved":
        return True, None
    if window is None:
        return False, None
    return True, now - window


def next_incident_id(base: str, closed: Callable[[str], bool]) -> str:
    """``base``, or ``base-2``, ``base-3``... past every incident of that id that already closed."""
    iid, n = base, 1
    while closed(iid):
        n += 1
        iid = f"{base}-{n}"
    return iid
