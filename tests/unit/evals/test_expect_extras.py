"""What an incident file may say and what a failure says back: durations written as Go and Prometheus
write them, an outcome the source allows either way, and a failure that names a wrong incident count."""

from __future__ import annotations

from datetime import timedelta

import pytest

from evals.report import failure_reasons
from evals.results import EvalResult
from evals.schema import Expect, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m15s", 315), ("1h30m", 5400), ("1h2m3s", 3723), ("2m500ms", 120.5), ("90", 90), ("1.5h", 5400)],
)
def test_durations_add_their_parts(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["5x", "m5", "5m15", "-5m", "5 m 15 s"])
def test_a_bad_duration_says_what_is_expected(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_an_outcome_may_list_what_the_source_allows() -> None:
    e = Expect.model_validate({"outcome": ["mitigated", "no_action"], "root_cause": "xid-application"})
    assert (e.outcome, e.acceptable) == ("mitigated", ["no_action"])
    plain = Expect.model_validate({"outcome": "mitigated", "root_cause": "x"})
    assert plain.acceptable == []
    with pytest.raises(ValueError):
        Expect.model_validate({"outcome": ["mitigated", "fixed-it"], "root_cause": "x"})


def _result(**kw: object) -> EvalResult:
    base: dict[str, object] = {
        "id": "i",
        "planner": "runbook",
        "gate": True,
        "outcome": "mitigated",
        "expected_outcome": "mitigated",
        "outcome_correct": False,
        "root_cause_correct": True,
        "passed": False,
        "incidents_opened": 2,
        "incidents_expected": 1,
    }
    return EvalResult.model_validate({**base, **kw})


def test_a_wrong_incident_count_is_named_not_hidden_behind_a_matching_outcome() -> None:
    reasons = failure_reasons(_result())
    assert reasons[0] == "incident count mismatch: expected 1 incident(s), opened 2"
    assert not any("outcome mismatch" in r for r in reasons)
    both = failure_reasons(_result(outcome="escalated"))
    assert any("incident count" in r for r in both) and any("outcome mismatch" in r for r in both)
