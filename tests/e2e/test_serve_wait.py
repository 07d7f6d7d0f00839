"""`supply-agent serve`: a drain that waits for a gang job's checkpoint. XID 154 "drain and reset" on a
node of an 8-node training JobSet 50 minutes into its hour: the node is cordoned and its customer told at
once, the drain is scheduled for just after the checkpoint (a PagerDuty note says when and why), the
thread waits on a durable timer, the service restarts meanwhile, and the drain runs when the fleet's
clock passes the checkpoint: the job loses a minute, not fifty."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.world import Fleet, FleetSpec
from sandbox.fleet.world.jobsets import JOB_INDEX, JOBSET_NAME
from sandbox.fleet.world.spec import JobSetSpec
from supply_agent.intake.signing import sign_pagerduty
from supply_agent.mind.planners.runbook import RunbookPlanner
from supply_agent.service.api import create_app
from supply_agent.service.core import Service, open_service
from supply_agent.settings import Settings
from tests.support.pd_stub import PagerDutyStub
from tests.support.service_harness import AM_TOKEN, PD_SECRET, outside_world, settings_for
from tests.support.slack_stub import SlackStub

ROOT = Path(__file__).resolve().parents[2]
SPEC = FleetSpec(
    nodes=24,
    pools=2,
    seed=11,
    workloads=[JobSetSpec(name="llm", nodes=8, pool=0, checkpoint_every_s=3600, since_checkpoint_s=50 * 60)],
)


@contextlib.contextmanager
def _world(tmp_path: Path, **extra: Any) -> Iterator[tuple[Fleet, Path, PagerDutyStub, SlackStub, Settings]]:
    """The outside world on SPEC's fleet, and the service's settings for it."""
    with outside_world(tmp_path, spec=SPEC) as (fleet, kubeconfig, pd, slack):
        ca = tmp_path / "pagerduty-ca.pem"
        ca.write_bytes(pd.ca_pem)
        yield fleet, kubeconfig, pd, slack, settings_for(tmp_path, pd, slack, pagerduty_ca_file=ca, **extra)


@contextlib.contextmanager
def _serving(settings: Settings, kubeconfig: Path) -> Iterator[tuple[Service, TestClient]]:
    with (
        open_service(settings, kubeconfig, planner=RunbookPlanner()) as service,
        TestClient(create_app(service)) as http,
    ):
        yield service, http


def _until(what: str, check: Callable[[], object], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _job_pods_on(fleet: Fleet, node: str) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in fleet.store.items("pods")
        if p["metadata"]["labels"].get(JOBSET_NAME) == "llm"
        and p["spec"].get("nodeName") == node
        and not p["metadata"].get("deletionTimestamp")
    ]


def _job_node(fleet: Fleet) -> str:
    """The node of the JobSet's job index 3."""
    return next(
        str(p["spec"]["nodeName"])
        for p in fleet.store.items("pods")
        if p["metadata"]["labels"].get(JOBSET_NAME) == "llm" and p["metadata"]["labels"].get(JOB_INDEX) == "3"
    )


def _page(
    fleet: Fleet, admin: AdminClient, pd: PagerDutyStub, http: TestClient
) -> tuple[str, dict[str, Any]]:
    """XID 154 "drain and reset" on the node of job index 3, paged through PagerDuty; the node, the hook."""
    node = _job_node(fleet)
    detail = "GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)"
    admin.inject("xid", node=node, gpu=2, code=154, detail=detail)
    admin.advance(60)
    (hook,) = list(admin.alerts("pagerduty"))
    pd_id = hook["event"]["data"]["id"]
    pd.alerts[pd_id] = admin.request("GET", f"pagerduty/incidents/{pd_id}/alerts")["alerts"]
    _post(http, hook)
    return node, hook


def _post(http: TestClient, hook: dict[str, Any]) -> None:
    raw = json.dumps(hook).encode()
    headers = {"content-type": "application/json", "x-pagerduty-signature": sign_pagerduty(raw, PD_SECRET)}
    r = http.post("/webhooks/pagerduty", content=raw, headers=headers)
    assert r.status_code in (200, 202), r.text


def test_a_human_who_takes_the_incident_ends_the_wait_at_once(tmp_path: Path) -> None:
    with _world(tmp_path) as (fleet, kubeconfig, pd, _slack, settings):
        admin = AdminClient.from_kubeconfig(kubeconfig)
        with _serving(settings, kubeconfig) as (service, http):
            node, hook = _page(fleet, admin, pd, http)
            assert service.drain(60)
            (row,) = service.store.incidents()
            assert service.agent.waiting(row.id) is not None
            human = json.loads(json.dumps(hook))
            human["event"].update(id="EVHUMAN", event_type="incident.acknowledged")
            human["event"]["agent"] = {"id": "PBOB", "type": "user_reference", "summary": "Bob Oncall"}
            _post(http, human)
            _until("the thread to end", lambda: service.agent.state(row.id).outcome is not None)
            assert service.agent.waiting(row.id) is None
            state = service.agent.state(row.id)
            assert not [
                s for s in state.steps if s.action.tool == "k8s.drain_node" and s.outcome == "executed"
            ]
            texts = [e.text for e in state.timeline]
            assert any("woke (a human took the incident)" in t for t in texts)
            assert any(
                "Bob Oncall (acknowledged in PagerDuty) took the incident: no wait" in t for t in texts
            )
            assert _job_pods_on(fleet, node)  # the job runs on: the drain is Bob's
            assert pd.statuses(hook["event"]["data"]["id"]) == ["acknowledged"]


def test_the_drain_waits_for_the_checkpoint_on_a_timer_that_survives_a_restart(tmp_path: Path) -> None:
    with _world(tmp_path) as (fleet, kubeconfig, pd, slack, settings):
        admin = AdminClient.from_kubeconfig(kubeconfig)
        with _serving(settings, kubeconfig) as (service, http):
            kube = service.env.runtime.kube
            node = next(
                str(p["spec"]["nodeName"])
                for p in fleet.store.items("pods")
                if p["metadata"]["labels"].get(JOBSET_NAME) == "llm"
                and p["metadata"]["labels"].get(JOB_INDEX) == "3"
            )
            detail = "GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)"
            admin.inject("xid", node=node, gpu=2, code=154, detail=detail)
            admin.advance(60)
            hooks = list(admin.alerts("pagerduty"))
            assert hooks
            for hook in hooks:
                pd_id = hook["event"]["data"]["id"]
                pd.alerts[pd_id] = admin.request("GET", f"pagerduty/incidents/{pd_id}/alerts")["alerts"]
                raw = json.dumps(hook).encode()
                r = http.post(
                    "/webhooks/pagerduty",
                    content=raw,
                    headers={
                        "content-type": "application/json",
                        "x-pagerduty-signature": sign_pagerduty(raw, PD_SECRET),
                    },
                )
                assert r.status_code in (200, 202), r.text
            assert service.drain(60)
            (row,) = service.store.incidents()
            iid = row.id
            t0 = service.clock()
            waiting = service.agent.waiting(iid)
            assert waiting is not None and waiting.tool == "k8s.drain_node" and waiting.subject == node
            # Ten minutes to the job's hourly checkpoint, and a minute for it to be written.
            assert timedelta(minutes=10) <= waiting.until - t0 <= timedelta(minutes=11, seconds=1)
            assert kube.get_node(node).unschedulable
            assert _job_pods_on(fleet, node)
            timers = [j for j in service.jobs.with_status("queued", iid) if j.kind == "timer"]
            assert len(timers) == 1 and timers[0].lane == f"timer:{iid}"
            _until(
                "the scheduled note",
                lambda: any("[scheduled]" in n and "scheduled for" in n for n in pd.notes(pd_id)),
            )
            assert slack.posted() == []  # nobody is asked: the gate allows the drain, later

        # Restarted before the moment: the thread still waits, on one timer.
        with _serving(settings, kubeconfig) as (service, http):
            assert service.drain(60)
            again = service.agent.waiting(iid)
            assert again is not None and again.until == waiting.until
            assert _job_pods_on(fleet, node)
            assert len([j for j in service.jobs.with_status("queued", iid) if j.kind == "timer"]) == 1

            admin.advance((waiting.until - service.clock()).total_seconds() + 1)
            _until(
                "the drain after the checkpoint",
                lambda: service.agent.state(iid).outcome is not None,
            )
            state = service.agent.state(iid)
            assert state.outcome == "mitigated", state.escalation_reason
            assert not [p for p in kube.list_pods_on_node(node) if not p.daemonset]
            drained = [
                s for s in state.steps if s.action.tool == "k8s.drain_node" and s.outcome == "executed"
            ]
            assert len(drained) == 1
            (job,) = [w for w in admin.truth()["workloads"] if w.get("name") == "llm"]
            assert float(job["gpu_minutes_lost"]) <= 2 * 64, job  # a minute or two of 64 GPUs, not 50


def _alertmanager(http: TestClient, admin: AdminClient, node: str) -> None:
    """The fleet's firing alerts for ``node``, through Alertmanager's webhook."""
    auth = {"authorization": f"Bearer {AM_TOKEN}", "content-type": "application/json"}
    for body in admin.alerts("alertmanager"):
        body["alerts"] = [a for a in body["alerts"] if a["labels"].get("node") == node]
        if body["alerts"]:
            r = http.post("/webhooks/alertmanager", content=json.dumps(body).encode(), headers=auth)
            assert r.status_code in (200, 202), r.text


def test_a_wake_while_waiting_plans_the_joined_node_and_waits_again_on_a_timer_of_its_own(
    tmp_path: Path,
) -> None:
    """The same XID 154 on a node that runs no gang job joins the waiting incident (Alertmanager, one
    class): it is contained at once (no job to wait for), and the first node's drain waits again for
    the same moment, on a new pause with a timer of its own; it runs when the clock gets there."""
    books = tmp_path / "playbooks"
    shutil.copytree(ROOT / "playbooks", books)
    g = books / "_global.yaml"
    text = g.read_text()
    assert "gpus_out: {soft: 8, hard: 32}" in text
    g.write_text(
        text.replace("gpus_out: {soft: 8, hard: 32}", "gpus_out: {soft: 16, hard: 32}")
    )  # 2 nodes out
    drain_and_reset = "GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)"
    with _world(tmp_path, playbooks_dir=books) as (fleet, kubeconfig, _pd, _slack, settings):
        admin = AdminClient.from_kubeconfig(kubeconfig)
        with _serving(settings, kubeconfig) as (service, http):
            node = _job_node(fleet)
            admin.inject("xid", node=node, gpu=2, code=154, detail=drain_and_reset)
            admin.advance(60)
            _alertmanager(http, admin, node)
            assert service.drain(60)
            (row,) = service.store.incidents()
            first = service.agent.waiting(row.id)
            assert first is not None and first.subject == node
            other = next(  # a node of the pool with no JobSet pod
                n["metadata"]["name"]
                for n in fleet.store.items("nodes")
                if n["metadata"]["labels"]["supply-agent.io/pool"] == "east-h100"
                and not _job_pods_on(fleet, n["metadata"]["name"])
            )
            admin.inject("xid", node=other, gpu=1, code=154, detail=drain_and_reset)
            admin.advance(60)
            _alertmanager(http, admin, other)
            assert service.drain(60)
            kube = service.env.runtime.kube
            assert [r.id for r in service.store.incidents()] == [row.id]
            assert not [p for p in kube.list_pods_on_node(other) if not p.daemonset]  # contained at once
            again = service.agent.waiting(row.id)
            assert again is not None and again.subject == node
            assert again.until == first.until and again.interrupt_id != first.interrupt_id
            timers = {j.key for j in service.jobs.with_status("queued", row.id) if j.kind == "timer"}
            # The new pause has its own (the first pause's may still be queued: it finds nothing to do).
            assert f"timer:{row.id}:{again.interrupt_id}" in timers
            assert _job_pods_on(fleet, node)
            admin.advance((again.until - service.clock()).total_seconds() + 1)
            _until("the first node's drain", lambda: service.agent.state(row.id).outcome is not None)
            assert not _job_pods_on(fleet, node)
            assert service.agent.state(row.id).outcome == "mitigated"
