"""The alerts the sandbox fleet's faults fire, rendered as a real alerting stack would deliver them.

The stack modelled is the usual one for a Kubernetes GPU cloud: dcgm-exporter (GPU series), kube-state-metrics
(node and pod series), node-exporter and the node-agent (scrape health, `up`), a billing meter, Prometheus
rules over them, and Alertmanager in front of the receivers. `RULES` says, as data, which alerting rules each
kind of fault makes true; `INHIBIT_RULES` says which alerts Alertmanager mutes because a more specific one
fires, and `SILENCED_BY` whose series a silent monitor takes away (all in rules.py). `fire` (evaluate.py)
applies them and is pure: the same faults and the same `now` give the same alerts, in the same order. `to_alertmanager` (alertmanager.py) and `to_pagerduty`
(pagerduty.py) render them as the exact webhook bodies those systems POST.

Nothing here reveals the fault behind an alert to the receiver: `Alert.fault_id` is for the sandbox's own
bookkeeping and appears in no rendered body, so an agent under evaluation sees only what production shows it.

A package of one module per concept; everything callers use is importable from here, as it was from the
single module this package replaced.
"""

from __future__ import annotations

from sandbox.fleet.alerts.alertmanager import FIRING_ENDS_AT, to_alertmanager
from sandbox.fleet.alerts.evaluate import fingerprint, fire, render
from sandbox.fleet.alerts.model import Alert, Exporter, Inhibit, Rule, Scope, Severity, Trigger
from sandbox.fleet.alerts.pagerduty import (
    PAGERDUTY_API,
    PAGERDUTY_WEB,
    pagerduty_incident_alerts,
    to_pagerduty,
    urgency,
)
from sandbox.fleet.alerts.rules import (
    GPU_ECC_UNCORRECTABLE,
    GPU_FALLEN_OFF_BUS,
    GPU_METERING_ANOMALY,
    GPU_ROW_REMAP_FAILURE,
    GPU_ROW_REMAP_PENDING,
    GPU_THERMAL_THROTTLING,
    GPU_XID_ERROR,
    INHIBIT_RULES,
    KUBE_NODE_DISK_PRESSURE,
    KUBE_NODE_NOT_READY,
    KUBE_NODE_UNREACHABLE,
    KUBE_POD_CRASH_LOOPING,
    KUBE_POD_OOM_KILLED,
    KUBE_POD_STUCK_TERMINATING,
    MIXIN_RUNBOOKS,
    NODE_AGENT_DOWN,
    NODE_DOWN,
    RULES,
    RUNBOOKS,
    SILENCED_BY,
    all_rules,
)

__all__ = [
    "FIRING_ENDS_AT",
    "GPU_ECC_UNCORRECTABLE",
    "GPU_FALLEN_OFF_BUS",
    "GPU_METERING_ANOMALY",
    "GPU_ROW_REMAP_FAILURE",
    "GPU_ROW_REMAP_PENDING",
    "GPU_THERMAL_THROTTLING",
    "GPU_XID_ERROR",
    "INHIBIT_RULES",
    "KUBE_NODE_DISK_PRESSURE",
    "KUBE_NODE_NOT_READY",
    "KUBE_NODE_UNREACHABLE",
    "KUBE_POD_CRASH_LOOPING",
    "KUBE_POD_OOM_KILLED",
    "KUBE_POD_STUCK_TERMINATING",
    "MIXIN_RUNBOOKS",
    "NODE_AGENT_DOWN",
    "NODE_DOWN",
    "PAGERDUTY_API",
    "PAGERDUTY_WEB",
    "RULES",
    "RUNBOOKS",
    "SILENCED_BY",
    "Alert",
    "Exporter",
    "Inhibit",
    "Rule",
    "Scope",
    "Severity",
    "Trigger",
    "all_rules",
    "fingerprint",
    "fire",
    "pagerduty_incident_alerts",
    "render",
    "to_alertmanager",
    "to_pagerduty",
    "urgency",
]
