"""The PagerDuty emulator: the slice of PagerDuty's REST API an on-call agent reads, answered from the
alerts the fleet's faults fire now.

PagerDuty is a different service from the cluster, and the sandbox fakes it too. Its V3 webhook
(``incident.triggered``, rendered by :func:`sandbox.fleet.alerts.to_pagerduty`) carries no alert details,
so a receiver fetches them with ``GET /incidents/{id}/alerts``; this module answers that. The fleet's API
only routes ``/sandbox/v1/pagerduty/*`` here (RBAC lets the reader call it, as a read-only PagerDuty key).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from sandbox.fleet import alerts
from sandbox.fleet.faults import Fault
from sandbox.fleet.world import FleetError


def incident_of(path: str) -> str | None:
    """The incident id in ``pagerduty/incidents/{id}/alerts`` (a path under ``/sandbox/v1/``), else None."""
    if path.startswith("pagerduty/incidents/") and path.endswith("/alerts"):
        return path.split("/")[2]
    return None


def incident_alerts(
    faults: Iterable[Fault],
    *,
    now: datetime,
    cluster: str,
    incident_id: str,
    details: Literal["flat", "alertmanager"] = "flat",
) -> dict[str, Any]:
    """What ``GET /incidents/{incident_id}/alerts`` returns now; a 404 for an incident no firing alert made.
    ``details``: how the sender filled the event's custom_details (see ``pagerduty_incident_alerts``)."""
    fired = alerts.fire(list(faults), now=now, cluster=cluster)
    for alert, hook in zip(fired, alerts.to_pagerduty(fired), strict=True):
        if hook["event"]["data"]["id"] == incident_id:
            return alerts.pagerduty_incident_alerts(alert, details=details)
    raise FleetError(404, "NotFound", f"incident {incident_id} not found")
