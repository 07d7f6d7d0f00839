"""The job store and its back-off: lanes in order, idempotent puts, retries that wait, dead letters kept;
and which errors are worth retrying."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine

from supply_agent.service.jobs import Backoff, JobStore
from tools.errors import describe, retry_after, transient
from tools.pagerduty import PagerDutyError
from tools.slack import SlackError


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _store(tmp_path: Path) -> tuple[JobStore, Clock]:
    clock = Clock()
    return JobStore(create_engine(f"sqlite:///{tmp_path / 'jobs.db'}"), wall=clock), clock


def test_a_lane_runs_in_order_one_at_a_time_and_lanes_side_by_side(tmp_path: Path) -> None:
    jobs, _ = _store(tmp_path)
    a1 = jobs.put("send", "a1", {"n": 1}, lane="pagerduty:i1", incident_id="i1")
    jobs.put("send", "a2", {"n": 2}, lane="pagerduty:i1", incident_id="i1")
    b1 = jobs.put("prompt", "b1", {}, lane="slack:i1", incident_id="i1")
    assert [j.id for j in jobs.due()] == [a1, b1]  # the head of each lane only
    assert [j.id for j in jobs.due(busy=frozenset({"pagerduty:i1"}))] == [b1]
    assert a1 is not None
    jobs.done(a1)
    assert [j.payload["n"] for j in jobs.due() if j.lane == "pagerduty:i1"] == [2]


def test_put_is_idempotent_by_key(tmp_path: Path) -> None:
    jobs, _ = _store(tmp_path)
    assert jobs.put("send", "k", {}, lane="l") is not None
    assert jobs.put("send", "k", {"other": True}, lane="l") is None
    assert len(jobs.due()) == 1


def test_a_retried_job_waits_and_holds_its_lane(tmp_path: Path) -> None:
    """A job put back is not due until its time, and the jobs behind it in its lane wait too (order
    per incident), while other lanes go on."""
    jobs, clock = _store(tmp_path)
    jobs.put("send", "first", {}, lane="pagerduty:i1", incident_id="i1")
    jobs.put("send", "second", {}, lane="pagerduty:i1", incident_id="i1")
    (head,) = jobs.due()
    jobs.retry(head, "PagerDutyError: HTTP 500", 5.0)
    assert jobs.due() == []
    assert jobs.next_due_in() == pytest.approx(5.0)
    clock.t += 5.0
    (again,) = jobs.due()
    assert again.key == "first" and again.attempts == 1 and again.last_error == "PagerDutyError: HTTP 500"
    assert again.first_failed_at == 1000.0
    assert [j.key for j in jobs.failing()] == ["first"]


def test_a_dead_job_is_kept_with_why_and_frees_its_lane(tmp_path: Path) -> None:
    jobs, _ = _store(tmp_path)
    jobs.put("send", "bad", {"tool": "pagerduty.note"}, lane="pagerduty:i1", incident_id="i1")
    jobs.put("send", "next", {}, lane="pagerduty:i1", incident_id="i1")
    (head,) = jobs.due()
    jobs.dead(head, "PagerDutyError: HTTP 400: Invalid Input Provided")
    (dead,) = jobs.with_status("dead")
    assert dead.key == "bad" and "400" in (dead.last_error or "")
    assert [j.key for j in jobs.due()] == ["next"]
    assert jobs.counts() == {"dead": 1, "queued": 1}


@given(st.integers(0, 60), st.floats(0, 1), st.one_of(st.none(), st.floats(0, 120)))
def test_backoff_is_capped_jittered_and_honours_retry_after(
    attempts: int, r: float, asked: float | None
) -> None:
    b = Backoff(base_s=0.5, cap_s=30.0, floor_s=0.05)
    wait = b.delay(attempts, asked, rand=lambda: r)
    assert wait >= 0.05
    if asked is not None:
        assert wait >= asked  # never sooner than the other side asked
    else:
        assert wait <= 30.0
        assert wait <= max(0.05, min(30.0, 0.5 * 2**attempts))


@pytest.mark.parametrize(
    ("exc", "again"),
    [
        (PagerDutyError("PUT /incidents/X", 500, "boom"), True),
        (PagerDutyError("PUT /incidents/X", 429, "slow down", retry_after=7), True),
        (PagerDutyError("GET /incidents/X/alerts", None, "ConnectError: refused"), True),
        (PagerDutyError("PUT /incidents/X", 400, "Invalid Input Provided"), False),
        (PagerDutyError("PUT /incidents/X", 404, "Not Found"), False),
        (SlackError("chat.postMessage", "internal_error", 500), True),
        (SlackError("chat.postMessage", "ratelimited", 429, retry_after=3), True),
        (SlackError("chat.postMessage", "URLError: <urlopen error [Errno 111] refused>"), True),
        (SlackError("chat.postMessage", "channel_not_found", 200), False),
        (ValueError("no alerts"), False),
        (json.JSONDecodeError("x", "y", 0), False),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
    ],
)
def test_transient_or_permanent(exc: Exception, again: bool) -> None:
    assert transient(exc) is again


def test_retry_after_and_description() -> None:
    assert retry_after(PagerDutyError("PUT /x", 429, "m", retry_after=7)) == 7.0
    assert retry_after(SlackError("chat.update", "ratelimited", 429, retry_after=2)) == 2.0
    assert retry_after(ValueError("x")) is None
    sql = Exception(
        "(sqlite3.OperationalError) database is locked\n[SQL: INSERT INTO t VALUES ('secret text')]"
    )
    assert describe(sql) == "Exception: (sqlite3.OperationalError) database is locked"


def test_cli_lists_dead_letters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from supply_agent.cli.main import main
    from supply_agent.settings import get_settings

    monkeypatch.setenv("SUPPLY_AGENT_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    try:
        settings = get_settings()
        from supply_agent.incidents.store import engine_for

        jobs = JobStore(engine_for(settings.resolved_database_url()))
        jobs.put("send", "k", {"tool": "pagerduty.note"}, lane="pagerduty:pd-X", incident_id="pd-X")
        (head,) = jobs.due()
        jobs.dead(head, "PagerDutyError: HTTP 400: [bold]Invalid[/bold]")
        result = CliRunner().invoke(main, ["incidents", "dead", "--json"])
        assert result.exit_code == 0, result.output
        rows = json.loads(result.output)
        assert rows[0]["incident"] == "pd-X" and rows[0]["what"] == "send pagerduty.note"
        table = CliRunner().invoke(main, ["incidents", "dead"], env={"COLUMNS": "240"})
        assert table.exit_code == 0 and "[bold]Invalid[/bold]" in table.output  # shown, not rendered
    finally:
        get_settings.cache_clear()


def test_waiting_sees_only_queued_jobs_of_the_kind_in_the_lane(tmp_path: Path) -> None:
    jobs, _ = _store(tmp_path)
    assert not jobs.waiting("run:i1", "run")
    jobs.put("run", "r1", {}, lane="run:i1", incident_id="i1")
    jobs.put("resume", "x1", {}, lane="run:i2", incident_id="i2")
    assert jobs.waiting("run:i1", "run") and not jobs.waiting("run:i2", "run")
    (head, _) = jobs.due()
    jobs.done(head.id)
    assert not jobs.waiting("run:i1", "run")
