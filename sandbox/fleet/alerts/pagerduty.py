"""What PagerDuty makes of an alert: the V3 webhook body (``incident.triggered`` / ``.resolved``) it POSTs,
and the body of ``GET /incidents/{id}/alerts`` that carries the alert's details.

Rendering only: the emulated PagerDuty service that answers that request is :mod:`sandbox.fleet.pagerduty`.
Its ids are stable functions of the alert's fingerprint, so the webhook and the REST answer agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Literal

from sandbox.fleet.alerts.model import Alert, rfc3339

PAGERDUTY_API = "https://api.pagerduty.com"
PAGERDUTY_WEB = "https://sandbox.pagerduty.com"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


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
                    "occurred_at": rfc3339(occurred),
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
                        "created_at": rfc3339(alert.starts_at),
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


def alertmanager_default_details(alerts: list[Alert]) -> dict[str, str]:
    """The custom_details Alertmanager's PagerDuty receiver sends when its config sets none
    (prometheus/alertmanager config/notifiers.go DefaultPagerdutyDetails): ``firing`` and ``resolved``
    rendered by template/default.tmpl's ``__text_alert_list`` (``Labels:``, `` - name = value`` per pair,
    alertname first then by name; ``Annotations:`` likewise; ``Source: <generatorURL>``), and the counts."""

    def text(group: list[Alert]) -> str:
        out = []
        for a in group:
            labels = {"alertname": a.alertname, **a.labels}
            names = ["alertname", *sorted(k for k in labels if k != "alertname")]
            out.append("Labels:\n" + "".join(f" - {k} = {labels[k]}\n" for k in names))
            out.append(
                "Annotations:\n" + "".join(f" - {k} = {a.annotations[k]}\n" for k in sorted(a.annotations))
            )
            out.append(f"Source: {a.generator_url}\n")
        return "".join(out)

    firing = [a for a in alerts if a.status == "firing"]
    resolved = [a for a in alerts if a.status != "firing"]
    return {
        "firing": text(firing),
        "resolved": text(resolved),
        "num_firing": str(len(firing)),
        "num_resolved": str(len(resolved)),
    }


def pagerduty_incident_alerts(
    alert: Alert, *, service_id: str = "PSANDBX", details: Literal["flat", "alertmanager"] = "flat"
) -> dict[str, Any]:
    """What `GET /incidents/{id}/alerts` returns for the incident `to_pagerduty` made of this alert.

    `body.details` is the Events API v2 `payload.custom_details` the sender put there. ``flat``: the
    alert's labels and annotations, one key each (a label wins over an annotation of the same name), as a
    receiver configured with ``details: {node: '{{ .CommonLabels.node }}', ...}`` sends them.
    ``alertmanager``: what a receiver with no ``details`` sends (:func:`alertmanager_default_details`).
    """
    alert_id = _pd_id("alert", alert.fingerprint)
    if details == "alertmanager":
        body_details = alertmanager_default_details([alert])
    else:
        body_details = dict(alert.labels)
        for name, value in alert.annotations.items():
            body_details.setdefault(name, value)
    return {
        "alerts": [
            {
                "id": alert_id,
                "type": "alert",
                "summary": alert.annotations.get("summary", alert.alertname),
                "self": f"{PAGERDUTY_API}/alerts/{alert_id}",
                "html_url": f"{PAGERDUTY_WEB}/alerts/{alert_id}",
                "created_at": rfc3339(alert.starts_at),
                "status": "triggered" if alert.status == "firing" else "resolved",
                "alert_key": alert.fingerprint,
                "service": _pd_service(service_id),
                "incident": {
                    "id": _pd_id("incident", alert.fingerprint),
                    "type": "incident_reference",
                },
                "suppressed": False,
                "severity": _pd_severity(alert),
                "body": {"type": "alert_body", "contexts": [], "details": body_details},
            }
        ],
        "limit": 25,
        "offset": 0,
        "more": False,
    }


def urgency(alert: Alert) -> Literal["high", "low"]:
    """PagerDuty urgency: critical alerts page now (high); the rest wait for working hours (low)."""
    return "high" if alert.severity == "critical" else "low"


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
