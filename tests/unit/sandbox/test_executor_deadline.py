"""The executor's timeout bounds the tool itself: a drain a budget blocks stops at the executor's
deadline with a partial result, one that overruns is told to stop and evicts nothing more, and the
audit says which happened."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from pydantic import BaseModel

from sandbox.executor.audit import AuditLog
from sandbox.executor.executor import GuardedExecutor
from sandbox.executor.runners import runners
from sandbox.fleet.server import FleetServer
from supply_agent.models import Action, Decision, Verdict
from tests.support.drains import evictions, pdb_held_node
from tools.catalogue import Clients, Deadline
from tools.kubernetes import KubeTools, WriteResult

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[KubeTools]:
    tools = KubeTools.from_kubeconfig(kubeconfig)  # real sleeps: a drain polls every second
    yield tools
    tools.close()


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog.from_url(f"sqlite:///{tmp_path / 'audit.db'}")


def _executor(kube: KubeTools, audit: AuditLog, timeout_s: float) -> GuardedExecutor:
    kube_runners = runners(Clients(kube=kube, ledger=None, outbox=None), ("k8s.",))  # type: ignore[arg-type]
    return GuardedExecutor(kube_runners, audit, frozenset(), timeout_s=timeout_s, clock=lambda: NOW)


def _allow(action: Action, ex: GuardedExecutor) -> Decision:
    return Decision(
        verdict=Verdict.ALLOW, action_hash=action.digest(), reasons=("test",), world_revision=ex.revision
    )


def _drain(node: str) -> Action:
    # What the shipped playbooks ask: three times the executor's default timeout.
    return Action(tool="k8s.drain_node", params={"node": node, "timeout_s": 900}, incident_id="inc-d", step=1)


def test_the_executor_stops_a_long_drain_at_its_deadline(
    kube: KubeTools, audit: AuditLog, policy: client.PolicyV1Api, fleet_server: FleetServer
) -> None:
    node = pdb_held_node(kube, policy)
    ex = _executor(kube, audit, timeout_s=3.0)
    action = _drain(node)
    t0 = time.monotonic()
    res = ex.execute(action, _allow(action, ex))
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0 + 1.0, f"the executor returned after {elapsed:.1f} s of a 3 s timeout"
    # The drain returned what it did by the deadline: a result, not a timeout.
    assert res.outcome == "executed" and not res.timed_out and res.result is not None
    assert res.result["stopped_at_deadline"] and not res.result["completed"] and res.result["remaining"]
    assert any("asked for 900 s" in n for n in res.result["notes"]), res.result["notes"]
    after = audit.records("inc-d")[-1]
    assert (after.phase, after.outcome) == ("after", "executed") and (after.result or {})[
        "stopped_at_deadline"
    ]
    tried = evictions(fleet_server)
    assert tried > 0
    time.sleep(1.5)  # more than a poll: a drain still running would have tried again
    assert evictions(fleet_server) == tried
    ex.close()


def test_a_drain_that_overruns_is_told_to_stop_and_the_timeout_is_audited(
    kube: KubeTools,
    audit: AuditLog,
    policy: client.PolicyV1Api,
    fleet_server: FleetServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = pdb_held_node(kube, policy)
    # A wait that overshoots what it was asked for (a simulated clock's step, a stalled host): the drain
    # is still asleep when the executor's deadline comes.
    kube._sleep = lambda s: time.sleep(4.0)
    returned = threading.Event()
    real_drain = kube.drain_node

    def drain(*args: Any, **kwargs: Any) -> Any:
        try:
            return real_drain(*args, **kwargs)
        finally:
            if not kwargs["dry_run"]:
                returned.set()

    monkeypatch.setattr(kube, "drain_node", drain)
    ex = _executor(kube, audit, timeout_s=2.0)
    action = _drain(node)
    t0 = time.monotonic()
    res = ex.execute(action, _allow(action, ex))
    assert time.monotonic() - t0 < 2.0 + 1.0
    assert res.outcome == "failed" and res.timed_out and "timed out" in (res.error or "")
    assert [(r.phase, r.outcome) for r in audit.records("inc-d")] == [
        ("before", "pending"),
        ("after", "timed_out"),
    ]
    at_timeout = evictions(fleet_server)
    assert at_timeout > 0 and not returned.is_set()  # it tried, then went to sleep past the deadline
    assert returned.wait(10), "the drain thread was left running"
    assert evictions(fleet_server) == at_timeout, "the drain evicted after the executor gave up"
    ex.close()


def test_one_deadline_covers_the_dry_run_and_the_run(audit: AuditLog) -> None:
    seen: list[Deadline] = []

    def slowish(i: BaseModel, dry: bool, action: Action, deadline: Deadline) -> BaseModel:
        seen.append(deadline)
        time.sleep(0.4)
        return WriteResult(tool="k8s.cordon_node", target="n1", dry_run=dry, changed=True)

    ex = GuardedExecutor({"k8s.cordon_node": slowish}, audit, frozenset(), timeout_s=0.6)
    action = Action(tool="k8s.cordon_node", params={"node": "n1"}, incident_id="inc-c", step=1)
    res = ex.execute(action, _allow(action, ex))
    assert res.outcome == "failed" and res.timed_out  # 0.4 s each fits 0.6 s apiece, not together
    assert len(seen) == 2 and seen[0] is seen[1] and seen[1].stop.is_set()
    ex.close()


def test_a_tools_own_timeout_error_is_a_failure_not_the_executors(audit: AuditLog) -> None:
    def socket_timeout(i: BaseModel, dry: bool, action: Action, deadline: Deadline) -> BaseModel:
        raise TimeoutError("timed out reading from the API server")

    ex = GuardedExecutor({"k8s.cordon_node": socket_timeout}, audit, frozenset(), timeout_s=5.0)
    action = Action(tool="k8s.cordon_node", params={"node": "n1"}, incident_id="inc-t", step=1)
    res = ex.execute(action, _allow(action, ex))
    assert res.outcome == "failed" and not res.timed_out and "TimeoutError" in (res.error or "")
    assert audit.records("inc-t")[-1].outcome == "failed"
    ex.close()
