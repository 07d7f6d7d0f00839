"""The guarded executor against the sandbox fleet: no decision, no write; audit before and after."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.executor.audit import AuditLog
from sandbox.executor.executor import GuardedExecutor
from sandbox.executor.runners import runners
from sandbox.fleet.server import FleetServer
from supply_agent.models import Action, Approval, Decision, Verdict
from tests.support.release import as_release_before_migrations
from tools.catalogue import Clients
from tools.kubernetes import KubeTools

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[KubeTools]:
    tools = KubeTools.from_kubeconfig(kubeconfig)
    tools._sleep = lambda s: None
    yield tools
    tools.close()


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog.from_url(f"sqlite:///{tmp_path / 'audit.db'}")


@pytest.fixture
def executor(kube: KubeTools, audit: AuditLog) -> Iterator[GuardedExecutor]:
    ex = GuardedExecutor(kube_runners(kube), audit, approvers=frozenset({"U123"}), clock=lambda: NOW)
    yield ex
    ex.close()


def _cordon(node: str, step: int = 1) -> Action:
    return Action(tool="k8s.cordon_node", params={"node": node}, incident_id="inc-1", step=step)


def kube_runners(kube: KubeTools) -> dict:
    """The Kubernetes writes and the control latches, over ``kube`` (ledger and outbox unused)."""
    return runners(Clients(kube=kube, ledger=None, outbox=None), ("k8s.", "control."))  # type: ignore[arg-type]


def _allow(action: Action, ex: GuardedExecutor) -> Decision:
    """An allow made on the executor's current world revision, as the runtime records it."""
    return Decision(
        verdict=Verdict.ALLOW,
        action_hash=action.digest(),
        reasons=("within limits",),
        world_revision=ex.revision,
    )


def _writes(server: FleetServer) -> list[dict]:
    return [w for w in server.fleet.writes if not w["dry_run"]]


def test_refuses_without_a_matching_decision(
    executor: GuardedExecutor, kube: KubeTools, fleet_server: FleetServer, audit: AuditLog
) -> None:
    node = kube.list_nodes()[0].name
    action = _cordon(node)
    other = _cordon(kube.list_nodes()[1].name)
    for decision in (
        None,
        _allow(other, executor),
        Decision(verdict=Verdict.DENY, action_hash=action.digest(), reasons=("no",)),
    ):
        result = executor.execute(action, decision)
        assert result.outcome == "refused" and result.reasons
    assert not kube.get_node(node).unschedulable
    assert _writes(fleet_server) == []
    assert [r.phase for r in audit.records()] == ["refused"] * 3


def test_ask_needs_an_approval_bound_to_the_action(executor: GuardedExecutor, kube: KubeTools) -> None:
    node = kube.list_nodes()[0].name
    action = _cordon(node)
    ask = Decision(
        verdict=Verdict.ASK,
        action_hash=action.digest(),
        reasons=("over the soft limit",),
        world_revision=executor.revision,
    )

    def approval(**kw: object) -> Approval:
        base: dict[str, object] = {
            "action_hash": action.digest(),
            "approver": "U123",
            "approved": True,
            "decided_at": NOW,
            "expires_at": NOW + timedelta(minutes=15),
        }
        return Approval(**{**base, **kw})

    assert executor.execute(action, ask).outcome == "refused"
    assert "different action" in executor.execute(action, ask, approval(action_hash="0" * 64)).reasons[0]
    assert "not an authorised approver" in executor.execute(action, ask, approval(approver="U999")).reasons[0]
    assert "expired" in executor.execute(action, ask, approval(expires_at=NOW)).reasons[0]
    assert "rejected" in executor.execute(action, ask, approval(approved=False)).reasons[0]
    assert not kube.get_node(node).unschedulable
    assert executor.execute(action, ask, approval()).outcome == "executed"
    assert kube.get_node(node).unschedulable


def test_executes_with_dry_run_first_and_audits_before_and_after(
    executor: GuardedExecutor, kube: KubeTools, fleet_server: FleetServer, audit: AuditLog
) -> None:
    node = kube.list_nodes()[0].name
    action = _cordon(node)
    result = executor.execute(action, _allow(action, executor))
    assert result.outcome == "executed" and result.dry_run_ok is True and result.result["changed"] is True
    assert kube.get_node(node).unschedulable
    writes = [w for w in fleet_server.fleet.writes if w["resource"] == "nodes"]
    assert [w["dry_run"] for w in writes] == [True, False]
    rows = audit.records("inc-1")
    assert [(r.phase, r.outcome) for r in rows] == [("before", "pending"), ("after", "executed")]
    assert rows[1].result["target"] == node and rows[0].action_hash == action.digest()


def test_a_repeated_step_never_acts_twice(
    executor: GuardedExecutor, kube: KubeTools, fleet_server: FleetServer
) -> None:
    pod = next(p for p in kube.list_pods_on_node(kube.list_nodes()[0].name) if not p.daemonset)
    action = Action(
        tool="k8s.delete_pod",
        params={"namespace": pod.namespace, "pod": pod.name},
        incident_id="inc-2",
        step=3,
    )
    assert executor.execute(action, _allow(action, executor)).outcome == "executed"
    again = executor.execute(action, _allow(action, executor))
    assert again.outcome == "duplicate" and again.result["changed"] is True
    deletes = [w for w in _writes(fleet_server) if w["verb"] == "delete"]
    assert len(deletes) == 1


def test_failures_are_recorded_not_raised(executor: GuardedExecutor, audit: AuditLog) -> None:
    action = _cordon("no-such-node")
    result = executor.execute(action, _allow(action, executor))
    assert result.outcome == "failed" and "not found" in (result.error or "")
    assert [(r.phase, r.outcome) for r in audit.records()] == [("before", "pending"), ("after", "failed")]


def test_reads_and_bad_parameters_are_refused(executor: GuardedExecutor) -> None:
    read = Action(tool="k8s.get_node", params={"node": "x"}, incident_id="inc-3", step=1)
    assert "read" in executor.execute(read, _allow(read, executor)).reasons[0]
    bad = Action(
        tool="k8s.scale_deployment",
        params={"namespace": "ns", "deployment": "d", "replicas": -3},
        incident_id="inc-3",
        step=2,
    )
    assert "invalid parameters" in executor.execute(bad, _allow(bad, executor)).reasons[0]


def test_timeout_is_enforced(kube: KubeTools, audit: AuditLog) -> None:
    import time

    from pydantic import BaseModel

    from tools.kubernetes import WriteResult

    def slow(i: BaseModel, dry: bool, action: Action, deadline: object) -> BaseModel:
        if not dry:
            time.sleep(2)
        return WriteResult(tool="k8s.cordon_node", target="n1", dry_run=dry, changed=True)

    ex = GuardedExecutor({"k8s.cordon_node": slow}, audit, frozenset(), timeout_s=0.2)
    action = _cordon("n1")
    result = ex.execute(action, _allow(action, ex))
    assert result.outcome == "failed" and "within" in (result.error or "")
    ex.close()


def test_a_second_credit_with_the_same_key_is_one_credit(tmp_path: Path, audit: AuditLog) -> None:
    from decimal import Decimal

    from tools.billing import Ledger
    from tools.notify import Outbox

    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'billing.db'}")
    ledger.upsert_customer({"id": "acme", "name": "Acme", "price_per_gpu_hour": Decimal("2.50")})
    outbox = Outbox.from_url(f"sqlite:///{tmp_path / 'outbox.db'}")
    clients = Clients(kube=None, ledger=ledger, outbox=outbox, max_credit_usd=Decimal("500"))  # type: ignore[arg-type]
    ex = GuardedExecutor(runners(clients, ("billing.", "notify.")), audit, frozenset())
    credit = Action(
        tool="billing.issue_credit",
        params={"customer": "acme", "amount_usd": "12.34", "reason": "XID 79"},
        incident_id="inc-9",
        step=4,
    )
    first = ex.execute(credit, _allow(credit, ex))
    assert (
        first.outcome == "executed"
        and first.result["amount_usd"] == "12.34"
        and first.result["created"] is True
    )
    # A crash between the write and its audit row: the executor runs the step again; the ledger's key holds.
    audit_less = GuardedExecutor(runners(clients, ("billing.",)), AuditLog.from_url("sqlite://"), frozenset())
    again = audit_less.execute(credit, _allow(credit, audit_less))
    assert again.outcome == "executed" and again.result["created"] is False
    assert ex.execute(credit, _allow(credit, ex)).outcome == "duplicate"
    assert ledger.credits_for_incident("inc-9").total_usd == Decimal("12.34")
    too_much = Action(
        tool="billing.issue_credit",
        params={"customer": "acme", "amount_usd": "900", "reason": "x"},
        incident_id="inc-9",
        step=5,
    )
    assert ex.execute(too_much, _allow(too_much, ex)).outcome == "failed"
    notice = Action(
        tool="notify.customer",
        params={"customer": "acme", "subject": "GPU fault", "body": "We moved your pods."},
        incident_id="inc-9",
        step=6,
    )
    assert ex.execute(notice, _allow(notice, ex)).outcome == "executed"
    assert len(outbox.notices("inc-9")) == 1
    ex.close()
    audit_less.close()


def test_the_tool_table_derives_every_view_and_gives_llm_schemas() -> None:
    from supply_agent.policy import Verify
    from tools.catalogue import (
        CATALOGUE,
        CONTROL_TOOLS,
        DISRUPTING,
        K8S_VERBS,
        OUT_OF_SERVICE,
        TOOLS,
        UNTRUSTED_OUTPUT,
        Effect,
        llm_tools,
    )

    assert set(CATALOGUE) == set(TOOLS) | CONTROL_TOOLS and not set(TOOLS) & CONTROL_TOOLS
    for name, spec in CATALOGUE.items():
        if spec.inverse:
            assert CATALOGUE[spec.inverse].inverse == name
        if spec.verify is not None:  # every read-back parses as a playbook's `verify:`
            Verify.model_validate(spec.verify)
        if name.startswith("k8s."):
            assert name in K8S_VERBS, f"{name} names no Kubernetes verbs"
        assert (spec.run is None) == (name == "escalate.human")
    assert {"k8s.cordon_node", "k8s.drain_node", "k8s.taint_node"} == OUT_OF_SERVICE
    assert "k8s.drain_node" in DISRUPTING and "k8s.cordon_node" not in DISRUPTING
    assert {"k8s.pod_logs", "k8s.events_for"} == UNTRUSTED_OUTPUT
    schemas = llm_tools()
    assert [s["name"] for s in schemas] == sorted(TOOLS)  # control actions are never offered to a model
    drain = next(s for s in schemas if s["name"] == "k8s.drain_node")
    assert drain["input_schema"]["required"] == ["node"]
    assert all(CATALOGUE[s["name"]].effect == Effect.READ for s in llm_tools((Effect.READ,)))


def test_a_decision_made_before_a_write_is_stale(
    executor: GuardedExecutor, kube: KubeTools, fleet_server: FleetServer, audit: AuditLog
) -> None:
    first, second = (n.name for n in kube.list_nodes()[:2])
    a, b = _cordon(first, 1), _cordon(second, 2)
    decision_b = _allow(b, executor)  # both decided on the same world
    assert executor.execute(a, _allow(a, executor)).outcome == "executed"
    stale = executor.execute(b, decision_b)
    assert stale.outcome == "refused" and stale.stale and "decide again" in stale.reasons[0]
    assert not kube.get_node(second).unschedulable
    # A decision carrying no revision, or an earlier process's, is stale too.
    assert executor.execute(b, decision_b.model_copy(update={"world_revision": None})).stale
    other = GuardedExecutor(kube_runners(kube), audit, frozenset(), clock=lambda: NOW)
    assert executor.execute(b, _allow(b, other)).stale
    other.close()
    # Decided again on the world as it is now, it runs.
    assert executor.execute(b, _allow(b, executor)).outcome == "executed"
    assert kube.get_node(second).unschedulable


def test_control_actions_are_audited_and_never_run_as_proposals(
    executor: GuardedExecutor, kube: KubeTools, audit: AuditLog
) -> None:
    from supply_agent.hands.world import read_freeze

    freeze = Action(tool="control.freeze", params={"reason": "rollout"}, incident_id="control", step=0)
    refused = executor.execute(freeze, _allow(freeze, executor))
    assert refused.outcome == "refused" and "control action" in refused.reasons[0]
    assert read_freeze(kube) == (False, "")
    done = executor.control(freeze, by="alice", key="k1")
    assert done.outcome == "executed" and read_freeze(kube) == (True, "rollout")
    rows = [r for r in audit.records("control") if r.phase == "after"]
    assert [(r.tool, r.outcome, r.verdict, r.approver) for r in rows] == [
        ("control.freeze", "executed", "control", "alice")
    ]
    not_control = _cordon(kube.list_nodes()[0].name)
    assert executor.control(not_control, by="alice").outcome == "refused"
    assert not kube.get_node(not_control.params["node"]).unschedulable


def test_a_tripping_decision_latches_the_breaker_until_a_human_resets_it(
    kube: KubeTools, audit: AuditLog
) -> None:
    from supply_agent.hands.world import read_breaker, read_world
    from supply_agent.policy import load_playbooks
    from supply_agent.policy.gate import decide
    from supply_agent.policy.world import History, PastAction

    playbooks = load_playbooks(Path(__file__).resolve().parents[3] / "playbooks")
    world = read_world(kube, NOW)
    names = sorted(world.nodes)
    failed = tuple(
        PastAction(tool="k8s.cordon_node", incident_id=f"i{i}", at=NOW, nodes=(names[i],), verified=False)
        for i in range(2)
    )
    action = Action(
        tool="k8s.cordon_node", params={"node": names[5]}, incident_id="i9", step=1, proposed_by="human"
    )
    decision = decide(action, world, History(actions=failed), playbooks)
    assert decision.verdict == Verdict.DENY and decision.trips_breaker

    ex = GuardedExecutor(kube_runners(kube), audit, frozenset(), clock=lambda: NOW)
    assert ex.execute(action, decision).outcome == "refused"
    assert read_breaker(kube)[0]
    latch = [r for r in audit.records("i9") if r.tool == "control.latch_breaker" and r.phase == "after"]
    assert (
        len(latch) == 1 and latch[0].outcome == "executed" and "circuit breaker" in latch[0].params["reason"]
    )
    # An hour later the failures are out of the window, but the latch still blocks every write.
    later = read_world(kube, NOW + timedelta(hours=1))
    tripped, why = read_breaker(kube)
    again = decide(action, later, History(breaker_tripped=tripped, breaker_reason=why), playbooks)
    assert again.verdict == Verdict.DENY and any("a human must reset it" in r for r in again.reasons)
    reset = Action(tool="control.reset_breaker", params={"reason": "fixed"}, incident_id="control", step=0)
    assert ex.control(reset, by="sre", key="reset-1").outcome == "executed"
    assert (
        decide(action, later, History(breaker_tripped=read_breaker(kube)[0]), playbooks).verdict
        == Verdict.ALLOW
    )
    ex.close()


def test_the_audit_keeps_the_decisions_targets_and_an_older_log_gains_the_column(
    executor: GuardedExecutor, kube: KubeTools, tmp_path: Path
) -> None:
    import sqlite3

    from supply_agent.models import Targets

    node = kube.list_nodes()[0].name
    action = _cordon(node)
    decision = _allow(action, executor).model_copy(update={"targets": Targets(nodes=(node,), gpus=8)})
    assert executor.execute(action, decision).outcome == "executed"
    rows = executor.audit.records("inc-1")
    assert [r.targets for r in rows] == [Targets(nodes=(node,), gpus=8).model_dump(mode="json")] * 2
    # A log written before the column existed: opened again, it has the column, its rows None.
    path = tmp_path / "old.db"
    AuditLog.from_url(f"sqlite:///{path}").append(
        phase="after",
        outcome="executed",
        incident_id="i",
        step=1,
        tool="k8s.cordon_node",
        action_hash="h",
        idempotency_key="k",
        params={},
        verdict="allow",
    )
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE audit DROP COLUMN targets")
    as_release_before_migrations(con)
    con.commit()
    con.close()
    [old] = AuditLog.from_url(f"sqlite:///{path}").records()
    assert old.targets is None and old.tool == "k8s.cordon_node"


def test_a_write_is_fenced_by_its_works_lease_and_one_from_a_moved_lease_changes_nothing(
    executor: GuardedExecutor, audit: AuditLog, kube: KubeTools
) -> None:
    """Replica a's lease on the incident lapses while it is frozen and replica b takes it: a's next
    write is refused (audited) and raises LeaseLost, and the node stays as it was; b's goes through.
    Work under no lease at all is refused the same way."""
    from sandbox.executor.fencing import Fence, LeaseLost, LeaseTable

    t = [1_000.0]
    table = LeaseTable(audit.engine, ttl_s=15, clock=lambda: t[0])
    executor.fence = Fence(table)
    node = kube.list_nodes()[0].name
    a = table.acquire("inc-1", "replica-a")
    assert a is not None
    t[0] += 16  # frozen past the lease
    b = table.acquire("inc-1", "replica-b")
    assert b is not None and b.token == a.token + 1
    action = _cordon(node)
    with executor.fence.under(a), pytest.raises(LeaseLost, match="held by replica-b"):
        executor.execute(action, _allow(action, executor))
    assert kube.get_node(node).unschedulable is False
    refused = [r for r in audit.records() if r.phase == "refused"]
    assert len(refused) == 1 and "fenced" in (refused[0].error or "")
    assert not [r for r in audit.records() if r.phase == "before"]
    with pytest.raises(LeaseLost, match="no lease"):
        executor.execute(action, _allow(action, executor))
    with executor.fence.under(b):
        assert executor.execute(action, _allow(action, executor)).outcome == "executed"
    assert kube.get_node(node).unschedulable is True
