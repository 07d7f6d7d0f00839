"""The graph's nodes called directly, as functions of (state, deps): no graph, no cluster.

The runtime here is a stand-in that records what the node asked of the hands; the node is the code
under test."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes import act, finish, gate, plan
from supply_agent.models import Action, Decision, Verdict
from supply_agent.models.incident import AlertIn, IncidentState, Proposal, StepRecord
from supply_agent.policy import load_playbooks

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PLAYBOOKS = load_playbooks(Path(__file__).resolve().parents[3] / "playbooks")


class Hands:
    """Records decisions and executions; answers as told."""

    def __init__(self, results: list[dict[str, Any]] | None = None, verdict: Verdict = Verdict.ALLOW) -> None:
        self.playbooks = PLAYBOOKS
        self.write_lock = threading.RLock()
        self.decided: list[Action] = []
        self.executed: list[tuple[Action, Decision]] = []
        self.results = list(results or [])
        self.verdict = verdict
        self.enforce_gate = True

    def clock(self) -> datetime:
        return NOW

    def decide(
        self, action: Action, alerting: frozenset[str], subject: frozenset[str], **incident: Any
    ) -> Decision:
        self.decided.append(action)
        return Decision(
            verdict=self.verdict,
            action_hash=action.digest(),
            reasons=(f"decision {len(self.decided)}",),
            world_revision=f"r{len(self.decided)}",
        )

    def execute(self, action: Action, decision: Decision, approval: Any) -> Any:
        self.executed.append((action, decision))
        r = self.results.pop(0)
        return SimpleNamespace(
            outcome=r["outcome"],
            stale=r.get("stale", False),
            result=r.get("result"),
            error=r.get("error"),
            reasons=r.get("reasons", []),
            model_copy=lambda update: SimpleNamespace(**{**r, "result": None, "error": None, **update}),
        )


def _deps(hands: Hands, owner: str | None = None) -> GraphDeps:
    return GraphDeps(runtime=hands, planner=None, human_owner=lambda iid: owner)  # type: ignore[arg-type]


def _state(**kw: Any) -> IncidentState:
    alert = AlertIn(alertname="GPUFallenOffBus", labels={"node": "n1", "gpu": "0", "xid": "79"})
    return IncidentState(incident_id="inc-1", alerts=[alert], opened_at=NOW, **kw)


def _step(
    outcome: str = "proposed", verified: bool | None = None, decision: Decision | None = None
) -> StepRecord:
    action = Action(tool="k8s.cordon_node", params={"node": "n1"}, incident_id="inc-1", step=1)
    d = decision or Decision(verdict=Verdict.ALLOW, action_hash=action.digest(), world_revision="r0")
    return StepRecord(
        index=1, action=action, planner="runbook", decision=d, outcome=outcome, verified=verified
    )  # type: ignore[arg-type]


def test_after_plan_routes_each_kind_of_proposal() -> None:
    deps = _deps(Hands())
    route = {
        "read": Proposal(kind="act", tool="k8s.get_node", params={"node": "n1"}),
        "gate": Proposal(kind="act", tool="k8s.cordon_node", params={"node": "n1"}),
        "resolve": Proposal(kind="done"),
        "escalate": Proposal(kind="escalate", reason="no idea"),
    }
    for expected, proposal in route.items():
        assert plan.after_plan(_state(pending=proposal), deps) == expected
    # An unknown tool goes to the gate, which denies it with the reason (never straight to a read).
    assert plan.after_plan(_state(pending=Proposal(kind="act", tool="k8s.nuke")), deps) == "gate"


def test_the_gate_node_refuses_without_deciding_once_a_human_owns_the_incident() -> None:
    hands = Hands()
    proposal = Proposal(kind="act", tool="k8s.cordon_node", params={"node": "n1"})
    update = gate.gate(_state(pending=proposal), _deps(hands, owner="alice"))
    assert hands.decided == []
    assert update["steps"][-1].outcome == "refused" and "alice took the incident" in update["steps"][-1].error
    update = gate.gate(_state(pending=proposal), _deps(hands))
    assert len(hands.decided) == 1 and update["steps"][-1].decision.verdict == Verdict.ALLOW


def test_execute_decides_again_when_the_executor_says_the_decision_is_stale() -> None:
    hands = Hands(
        [
            {"outcome": "refused", "stale": True, "reasons": ["stale decision"]},
            {"outcome": "executed", "result": {"changed": True, "detail": "cordoned"}},
        ]
    )
    update = act.execute(_state(steps=[_step()]), _deps(hands))
    record = update["steps"][-1]
    assert [d.world_revision for _, d in hands.executed] == ["r0", "r1"]  # the old, then a fresh one
    assert record.outcome == "executed" and record.decision.world_revision == "r1"


@pytest.mark.parametrize("outcome", ["refused", "failed"])
def test_execute_never_retries_what_is_not_stale(outcome: str) -> None:
    hands = Hands([{"outcome": outcome, "error": "no", "reasons": ["the gate denied it"]}])
    update = act.execute(_state(steps=[_step()]), _deps(hands))
    assert len(hands.executed) == 1 and hands.decided == []
    assert update["steps"][-1].outcome == outcome
    assert act.after_execute(_state(steps=update["steps"]), _deps(hands)) == "escalate"


def test_how_an_incident_ends() -> None:
    deps = _deps(Hands())
    assert finish.resolve(_state(steps=[_step("executed", verified=True)]), deps)["outcome"] == "mitigated"
    assert finish.resolve(_state(), deps)["outcome"] == "no_action"
    handed = finish.resolve(_state(handoff="reseat the GPU"), deps)
    assert handed["outcome"] == "escalated" and handed["escalation_reason"] == "reseat the GPU"
    denied = Decision(verdict=Verdict.DENY, action_hash="x", reasons=("deny: over the limit",))
    esc = finish.escalate(_state(steps=[_step("denied", decision=denied)]), deps)
    assert esc["outcome"] == "escalated" and "the gate denied k8s.cordon_node" in esc["escalation_reason"]
    assert "deny: over the limit" in esc["escalation_reason"]
