"""`supply-agent serve` as two processes: the intake process stores and acknowledges, the worker process
handles; a worker that stalls or crashes loses nothing, and no worker outlives its intake."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx

from supply_agent.intake.app import merge_metrics
from supply_agent.intake.events import Classified, EventLog
from supply_agent.metrics import Metrics
from tests.support.served import Served
from tests.support.served import serve_env as _env
from tests.support.served import until as _until
from tests.support.service_harness import AM_TOKEN, outside_world

AUTH = {"authorization": f"Bearer {AM_TOKEN}", "content-type": "application/json"}


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _am(node: str, starts_at: str) -> bytes:
    alert = {
        "status": "firing",
        "labels": {"alertname": "KubeNodeNotReady", "node": node, "severity": "critical"},
        "annotations": {"summary": f"{node} is NotReady"},
        "startsAt": starts_at,
        "fingerprint": f"fp-{node}",
    }
    body = {
        "version": "4",
        "groupKey": f'{{}}:{{node="{node}"}}',
        "status": "firing",
        "receiver": "supply-agent",
        "alerts": [alert],
    }
    return json.dumps(body).encode()


def _metric(text: str, line_start: str) -> float:
    """The value of one sample (name and labels as printed), or the sum over a name's labels."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(
            (line_start + " ", line_start + "{") if "{" not in line_start else line_start + " "
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_intake_acknowledges_while_the_worker_stalls_and_a_crashed_worker_is_replaced(
    tmp_path: Path,
) -> None:
    with outside_world(tmp_path) as (fleet, kubeconfig, pd, slack):
        env = _env(tmp_path, pd, slack) | {"SUPPLY_AGENT_QUEUE_MAX": "2"}
        served = Served(env, kubeconfig, tmp_path / "serve.log")
        worker = 0
        try:
            worker = _until("the worker process", lambda: _children(served.proc.pid))[0]
            nodes = sorted(n["metadata"]["name"] for n in fleet.store.items("nodes"))
            a, b = _am(nodes[0], "2026-11-23T10:00:00Z"), _am(nodes[1], "2026-11-23T10:00:00Z")
            flap = _am(nodes[0], "2026-11-23T10:05:00Z")
            post = lambda body: httpx.post(f"{served.url}/webhooks/alertmanager", content=body, headers=AUTH)  # noqa: E731

            # The worker stalls: the intake process still checks, stores and acknowledges on its own.
            os.kill(worker, signal.SIGSTOP)
            assert httpx.get(f"{served.url}/healthz").json() == {"status": "ok"}
            # /metrics still answers, with the intake's own part: its heap settled at start (the
            # objects start-up made are out of the collector's full passes, supply_agent.heap).
            own = httpx.get(f"{served.url}/metrics", timeout=10).text
            assert _metric(own, "supply_agent_gc_frozen_objects") > 10_000
            assert post(a).status_code == 202
            assert post(a).json()["status"] == "duplicate"
            assert httpx.post(f"{served.url}/webhooks/alertmanager", content=a).status_code == 401
            assert post(b'{"alerts": [{"labels": {}}]}').status_code == 400
            assert post(b).status_code == 202
            full = post(flap)  # two stored and not handled: the queue (2) is full
            assert full.status_code == 503 and full.headers["retry-after"] == "5"
            assert post(b).json()["status"] == "duplicate"  # a re-delivery is still known when full

            # The stalled worker dies: another is started and handles what was stored.
            os.kill(worker, signal.SIGKILL)
            worker = _until("a new worker", lambda: [p for p in _children(served.proc.pid) if p != worker])[0]
            _until("the worker to be ready", lambda: httpx.get(f"{served.url}/readyz").status_code == 200)
            text = _until(
                "both events handled",
                lambda: (
                    t
                    if _metric(
                        t := httpx.get(f"{served.url}/metrics").text, "supply_agent_events_handled_total"
                    )
                    >= 2
                    else None
                ),
            )
            # /metrics adds up both processes: intake's counts and the worker's.
            received = 'supply_agent_events_received_total{result="%s",source="alertmanager"}'
            assert _metric(text, received % "accepted") == 2
            assert _metric(text, received % "duplicate") == 2
            assert _metric(text, received % "queue_full") == 1
            assert _metric(text, 'supply_agent_events_handled_total{status="handled"}') == 2
            assert _metric(text, "supply_agent_gc_pause_seconds_count") > 0  # every pass is timed
            incidents = httpx.get(f"{served.url}/incidents", params={"limit": 100}).json()
            assert len(incidents) == 2, incidents
            one = httpx.get(f"{served.url}/incidents/{incidents[0]['id']}").json()
            assert one["id"] == incidents[0]["id"] and "timeline" in one
            assert httpx.get(f"{served.url}/incidents/nope").status_code == 404

            # Room again (intake recounts what waits every half second; a sender retries a 503): the flap
            # is taken and folds into its node's incident.
            _until("the flap to be taken", lambda: post(flap).status_code == 202, 10)
            _until(
                "the flap handled",
                lambda: (
                    _metric(httpx.get(f"{served.url}/metrics").text, "supply_agent_events_handled_total") >= 3
                ),
            )
            assert len(httpx.get(f"{served.url}/incidents", params={"limit": 100}).json()) == 2
        finally:
            if worker and _alive(worker):
                os.kill(worker, signal.SIGCONT)
            served.kill()  # SIGKILL the intake process: its worker goes with it
            served.stop()
        _until("the worker to exit with its intake", lambda: not _alive(worker), 10)


def test_sigterm_stops_the_worker_in_order(tmp_path: Path) -> None:
    with outside_world(tmp_path) as (_, kubeconfig, pd, slack):
        served = Served(_env(tmp_path, pd, slack), kubeconfig, tmp_path / "serve.log")
        try:
            worker = _until("the worker process", lambda: _children(served.proc.pid))[0]
        finally:
            served.proc.terminate()
            assert served.proc.wait(30) in (0, -signal.SIGTERM)
        assert not _alive(worker)
        assert "the worker process exited" not in (tmp_path / "serve.log").read_text()  # not restarted


def test_event_log_fast_path_reads_back_and_counts_pending(tmp_path: Path) -> None:
    log = EventLog.from_url(f"sqlite:///{tmp_path / 'intake.db'}", track_pending=True)
    try:
        first = log.add(Classified("alertmanager", "am:1", "alertmanager.firing", True), b'{"a": 1}')
        assert first is not None
        assert log.add(Classified("alertmanager", "am:1", "alertmanager.firing", True), b"{}") is None
        second = log.add(Classified("pagerduty", "pd:2", "incident.triggered", True), b'{"b": 2}')
        assert second is not None and second > first
        assert log.pending_estimate() == 2
        ev = log.get(first)
        assert ev is not None and ev.body == b'{"a": 1}' and ev.status == "pending"
        assert ev.received_at.tzinfo is not None and abs(time.time() - ev.received_at.timestamp()) < 60
        assert log.pending() == [first, second] and log.pending(after=first) == [second]
        assert set(log.get_many([first, second, 999])) == {first, second}
        log.finish(first, "handled", "ok")
        assert log.counts() == {"handled": 1, "pending": 1}
        assert log.pending() == [second]
    finally:
        log.close()
    again = EventLog.from_url(f"sqlite:///{tmp_path / 'intake.db'}", track_pending=True)
    try:
        assert again.pending_estimate() == 1  # counted from the table on start
    finally:
        again.close()


def test_merged_metrics_add_counters_and_keep_the_largest_gauge() -> None:
    one, two = Metrics(), Metrics()
    one.events.labels("alertmanager", "accepted").inc(3)
    two.events.labels("alertmanager", "accepted").inc(2)
    two.events.labels("slack", "accepted").inc()
    one.queue.set(5)
    two.queue.set(1)
    two.tool_latency.labels("kubernetes.get_node").observe(0.02)
    from prometheus_client import generate_latest

    text = merge_metrics(
        generate_latest(one.registry).decode(), generate_latest(two.registry).decode()
    ).decode()
    assert 'supply_agent_events_received_total{result="accepted",source="alertmanager"} 5.0' in text
    assert 'supply_agent_events_received_total{result="accepted",source="slack"} 1.0' in text
    assert "supply_agent_queue_depth 5.0" in text
    assert 'supply_agent_tool_call_seconds_count{tool="kubernetes.get_node"} 1.0' in text
    assert text.count("# TYPE supply_agent_events_received_total counter") == 1
