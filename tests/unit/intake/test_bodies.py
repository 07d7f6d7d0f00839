"""Bad webhook bodies get a 400 with the reason at intake, before anything is stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supply_agent.intake.events import MAX_DEPTH, IntakeError, classify_alertmanager, classify_pagerduty

VECTOR = Path(__file__).resolve().parents[2] / "vectors" / "pd_gopagerduty_priority_updated.json"


def _triggered(event_id: str = "01BWDWL3NYY7LUFPZCC28QUCMK", incident_id: str = "PGR0VU2") -> dict:
    return {
        "event": {
            "id": event_id,
            "event_type": "incident.triggered",
            "resource_type": "incident",
            "data": {"id": incident_id, "type": "incident", "title": "GPU fell off the bus"},
        }
    }


def _reason(body: bytes, classify=classify_pagerduty) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(IntakeError) as exc:
        classify(body)
    assert exc.value.status == 400
    return exc.value.reason


def test_a_well_formed_triggered_event_is_taken() -> None:
    c = classify_pagerduty(json.dumps(_triggered()).encode())
    assert c.handled and c.dedup_key == "pd:01BWDWL3NYY7LUFPZCC28QUCMK"


@pytest.mark.parametrize(
    ("event_id", "incident_id", "where"),
    [
        ("x" * 200_000, "PGR0VU2", "body.event.id"),
        ("01BWDWL3NYY7LUFPZCC28QUCMK", "../../etc/passwd", "body.event.data.id"),
        ("01BWDWL3NYY7LUFPZCC28QUCMK", "PGR0VU\u0417", "body.event.data.id"),  # a Cyrillic Ze for a 3
    ],
)
def test_ids_that_are_not_pagerduty_ids_are_refused(event_id: str, incident_id: str, where: str) -> None:
    reason = _reason(json.dumps(_triggered(event_id, incident_id)).encode())
    assert reason.startswith(where) and "not a PagerDuty id" in reason and len(reason) < 200


def test_utf8_only() -> None:
    body = json.dumps(_triggered()).encode("utf-16")
    assert "not UTF-8" in _reason(body)
    assert "not JSON" in _reason(b"\xef\xbb\xbf" + json.dumps(_triggered()).encode())  # a BOM


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deep_nesting_is_refused_not_a_500(depth: int) -> None:
    body = ("[" * depth + "]" * depth).encode()
    assert "nested deeper" in _reason(body)
    assert "nested deeper" in _reason(b'{"alerts": ' + body + b"}", classify_alertmanager)


def test_the_published_vector_still_classifies() -> None:
    c = classify_pagerduty(VECTOR.read_bytes())
    assert c.source == "pagerduty" and c.dedup_key.startswith("pd:")
