"""Two things an incident file can say now: which shared component the incident must name as its suspected
cause (``expect.suspected``, scored against the agent's incident state), and what a human on call does
outside the agent (``human:`` acknowledge, resolve, uncordon, reset_gpu, reboot, replace_node), replayed
through the real APIs of a served fleet; and a human's writes are never taken for the agent's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from kubernetes import client

from evals.replay import Replay
from evals.report import failure_reasons
from evals.runner import run_incident
from evals.schema import Incident, IncidentFileError, Suspected, load_incident
from evals.scoring import Evidence, score, suspected_note, world_violations, written_objects
from evals.world import ReplayError
from sandbox.fleet.admin import AdminClient
from supply_agent.models.incident import Component, IncidentState
from supply_agent.policy import GlobalLimits

T0 = datetime(2025, 1, 1, tzinfo=UTC)
HOLDOUT = Path(__file__).resolve().parents[3] / "evals" / "holdout"
RACK = "east-h100-rack-000"


def incident(
    expect: dict[str, Any] | None = None, timeline: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "id": "suspected-test",
        "title": "a suspected-component test",
        "class": "test",
        "source": {"kind": "on-call-pattern", "ref": "tests", "what_happened": "nothing happened, in a test"},
        "world": {
            "fleet": {"nodes": 24, "pools": 2, "seed": 7},
            "bind": {
                "r": {"rack": {"pool": 0, "index": 0}},
                "s": {"switch": {"pool": 0, "index": 1}},
                "n": {"node": {"pool": 0, "index": 2}},
                "wave": {"nodes": {"pool": 0, "count": 2}},
            },
        },
        "timeline": [*(timeline or []), {"at": "1m", "alerts": {}}],
        "expect": {"outcome": "escalated", "root_cause": "rack-cooling", **(expect or {})},
    }


def load(tmp_path: Path, data: dict[str, Any]) -> Incident:
    path = tmp_path / f"{data['id']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_incident(path)


def error_of(tmp_path: Path, data: dict[str, Any]) -> str:
    with pytest.raises(IncidentFileError) as err:
        load(tmp_path, data)
    return str(err.value)


def state(component: Component | None, iid: str = "inc-1") -> IncidentState:
    return IncidentState(
        incident_id=iid,
        alerts=[],
        opened_at=T0,
        component=component,
        root_cause="rack-cooling",
        outcome="escalated",
    )


def rack(name: str = RACK, kind: str = "rack") -> Component:
    return Component(kind=kind, label=f"supply-agent.io/{kind}", name=name, nodes=["a", "b", "c"], size=16)


# -- the schema ---------------------------------------------------------------------------------------------


def test_suspected_takes_a_bound_name_or_a_literal(tmp_path: Path) -> None:
    bound = load(tmp_path, incident({"suspected": {"kind": "rack", "name": "$r"}}))
    assert bound.expect.suspected == Suspected(kind="rack", name="$r")
    literal = load(tmp_path, incident({"suspected": {"kind": "driver", "name": "560.35.03"}}))
    assert literal.expect.suspected is not None and literal.expect.suspected.name == "560.35.03"
    assert load(tmp_path, incident()).expect.suspected is None


@pytest.mark.parametrize(
    ("suspected", "message"),
    [
        ({"kind": "rack", "name": "$nope"}, "expect.suspected.name: $nope is not bound"),
        ({"kind": "rack", "name": "$s"}, "$s is a switch, expected rack"),
        ({"kind": "switch", "name": "$n"}, "$n is a node, expected switch"),
        ({"kind": "driver", "name": "$n"}, "a driver is named by its version"),
        ({"kind": "rack", "name": "$r-and-more"}, "is one $name or a literal name"),
        ({"kind": "zone", "name": "east"}, "expect.suspected.kind"),
        ({"kind": "rack"}, "expect.suspected.name"),
    ],
)
def test_a_bad_suspected_says_what_is_wrong(tmp_path: Path, suspected: dict[str, Any], message: str) -> None:
    assert message in error_of(tmp_path, incident({"suspected": suspected}))


def test_suspected_needs_an_incident(tmp_path: Path) -> None:
    data = incident({"outcome": "no_action", "incidents": 0, "suspected": {"kind": "rack", "name": RACK}})
    assert "with no incident expected" in error_of(tmp_path, data)


# -- the score ----------------------------------------------------------------------------------------------


def test_suspected_note_names_what_was_expected_and_what_was_named() -> None:
    want = Suspected(kind="rack", name="$r")
    names: dict[str, str | list[str]] = {"r": RACK}
    assert suspected_note(None, state(None), names) == ""
    assert suspected_note(want, state(rack()), names) == ""
    assert suspected_note(want, state(None), names) == (
        f"expected the incident to name rack {RACK} as the suspected cause, it named none"
    )
    assert suspected_note(want, state(rack("east-h100-rack-001")), names).endswith(
        "it named rack east-h100-rack-001"
    )
    assert suspected_note(want, state(rack(RACK, kind="switch")), names).endswith(f"it named switch {RACK}")
    assert "no incident was opened" in suspected_note(want, None, names)


def _evidence(states: list[IncidentState], names: dict[str, Any], writes: list[dict[str, Any]]) -> Evidence:
    return Evidence(
        names=names,
        opened=[s.incident_id for s in states],
        states=states,
        paused=frozenset(),
        closed_at={s.incident_id: T0 + timedelta(minutes=6) for s in states},
        t0=T0,
        now=T0 + timedelta(minutes=6),
        audit=[],
        truth={
            "pools": {"east": {"nodes": 24, "nodes_cordoned": 0}},
            "writes": writes,
            "pods_disrupted": [],
            "symptoms": [],
        },
        credits={s.incident_id: Decimal("0") for s in states},
    )


def test_a_holdout_passes_only_when_the_incident_names_its_rack() -> None:
    inc = load_incident(HOLDOUT / "holdout-rack-cooling-failure.yaml")
    assert inc.expect.suspected == Suspected(kind="rack", name="$rack")
    names: dict[str, Any] = {"rack": RACK, "hot": [f"east-h100-{i:05d}" for i in range(6)]}
    limits = GlobalLimits()
    good = score(inc, _evidence([state(rack())], names, []), limits, "runbook", True, 8)
    assert (good.passed, good.suspected, good.expected_suspected, good.suspected_note) == (
        True,
        f"rack {RACK}",
        f"rack {RACK}",
        "",
    )
    bad = score(inc, _evidence([state(None)], names, []), limits, "runbook", True, 8)
    assert not bad.passed and bad.outcome_correct and bad.root_cause_correct
    assert failure_reasons(bad) == [
        f"suspected cause mismatch: expected the incident to name rack {RACK} as the suspected cause, "
        "it named none"
    ]


@pytest.mark.parametrize(
    ("name", "kind", "want"),
    [
        ("holdout-rack-power-loss", "rack", "$rack"),
        ("holdout-leaf-switch-down-two-racks", "switch", "$leaf"),
        ("holdout-driver-rollout-same-xid", "driver", "560.35.03"),
    ],
)
def test_the_topology_holdouts_expect_their_component(name: str, kind: str, want: str) -> None:
    assert load_incident(HOLDOUT / f"{name}.yaml").expect.suspected == Suspected(kind=kind, name=want)


def test_a_humans_writes_are_not_the_agents() -> None:
    def w(name: str, by: str, namespace: str = "") -> dict[str, Any]:
        base = {"verb": "patch", "resource": "nodes", "namespace": namespace, "name": name}
        return {**base, "dry_run": False, "code": 200, "by": by}

    truth = {"writes": [w("n1", "writer"), w("n2", "admin"), w("n3", "")]}
    assert written_objects(truth) == {"n1", "n3"}  # a record without `by` (older truth) counts
    denied = {
        "pools": {"east": {"nodes": 24, "nodes_cordoned": 0}},
        "pods_disrupted": [],
        "writes": [w("coredns", "admin", "kube-system"), w("coredns", "writer", "kube-system")],
    }
    found = world_violations(denied, [], GlobalLimits(), 8, {})
    assert [v.what for v in found] == ["patch nodes kube-system/coredns"]


# -- human steps: the schema --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("human", "message"),
    [
        ({"action": "reset_gpu", "node": "$n"}, "human reset_gpu: needs a gpu"),
        ({"action": "uncordon"}, "human uncordon: needs a node"),
        ({"action": "reboot", "node": "$n", "gpu": 1}, "human reboot: covers the whole node, no gpu"),
        ({"action": "acknowledge", "node": "$n"}, "human acknowledge: takes an incident, not node"),
        ({"action": "uncordon", "node": "$n", "incident": 0}, "works on a node, not an incident"),
        ({"action": "replace_node", "node": "$r"}, "$r is a rack, expected node or nodes"),
        ({"action": "reset_gpu", "node": "$ghost", "gpu": 0}, "$ghost is not bound"),
        ({"action": "repair"}, "human.action"),
    ],
)
def test_a_bad_human_step_says_what_is_missing(tmp_path: Path, human: dict[str, Any], message: str) -> None:
    assert message in error_of(tmp_path, incident(timeline=[{"at": "0s", "human": human}]))


def test_human_steps_load(tmp_path: Path) -> None:
    steps = [
        {"at": "0s", "human": {"action": "resolve", "incident": 1}},
        {"at": "0s", "human": {"action": "reset_gpu", "node": "$n", "gpu": 3}},
        {"at": "0s", "human": {"action": "uncordon", "node": "$wave"}},
        {"at": "0s", "human": {"action": "acknowledge"}},
    ]
    inc = load(tmp_path, incident(timeline=steps))
    humans = [s.human for s in inc.timeline if s.human]
    assert [(h.action, h.incident_index, h.node, h.gpu) for h in humans] == [
        ("resolve", 1, None, None),
        ("reset_gpu", 0, "$n", 3),
        ("uncordon", 0, "$wave", None),
        ("acknowledge", 0, None, None),
    ]


# -- human steps: the replay, on a served fleet ------------------------------------------------------------


class _Store:
    def __init__(self) -> None:
        self.owners: dict[str, str | None] = {}
        self.notes: list[tuple[str, str]] = []

    def set_owner(self, iid: str, owner: str | None) -> None:
        self.owners[iid] = owner

    def note(self, iid: str, at: datetime, text: str) -> None:
        self.notes.append((iid, text))


def _replay(tmp_path: Path, admin: AdminClient, names: dict[str, Any], steps: list[dict[str, Any]]) -> Replay:
    inc = load(tmp_path, incident(timeline=steps))
    env: Any = SimpleNamespace(runtime=SimpleNamespace(clock=lambda: T0))
    agent: Any = SimpleNamespace(store=_Store())
    return Replay(inc, names, admin, agent, env, timedelta(minutes=5))


def test_a_human_takes_an_incident_in_pagerduty(tmp_path: Path, admin: AdminClient) -> None:
    steps = [
        {"at": "0s", "human": {"action": "acknowledge", "by": "oncall-bob"}},
        {"at": "0s", "human": {"action": "resolve", "by": "oncall-carol", "incident": 1}},
        {"at": "0s", "human": {"action": "resolve", "incident": 2}},
    ]
    replay = _replay(tmp_path, admin, {}, steps)
    replay.opened = ["inc-a", "inc-b"]
    first, second, third = (s.human for s in replay.inc.timeline if s.human)
    assert first and second and third
    replay.human(first)
    replay.human(second)
    store = replay.agent.store
    assert store.owners == {
        "inc-a": "oncall-bob (acknowledged in PagerDuty)",
        "inc-b": "oncall-carol (resolved in PagerDuty)",
    }
    assert store.notes[-1] == ("inc-b", "oncall-carol resolved the incident in PagerDuty")
    with pytest.raises(ReplayError, match="human resolve: incident 2 was never opened"):
        replay.human(third)


def test_a_human_resets_a_gpu_uncordons_and_reboots_through_the_fleets_apis(
    tmp_path: Path, core: client.CoreV1Api, admin: AdminClient
) -> None:
    nodes = sorted(n.metadata.name for n in core.list_node().items)
    node, other = nodes[0], nodes[1]
    admin.inject("off-bus", node=node, gpu=2)
    admin.inject("ecc", node=node, gpu=5)
    admin.inject("disk-pressure", node=other)
    for name in (node, other):
        core.patch_node(name, {"spec": {"unschedulable": True}})
    names: dict[str, Any] = {"n": node, "wave": [node, other]}
    steps = [
        {"at": "0s", "human": {"action": "reset_gpu", "node": "$n", "gpu": 2}},
        {"at": "0s", "human": {"action": "uncordon", "node": "$wave"}},
        {"at": "0s", "human": {"action": "reboot", "node": "$wave"}},
        {"at": "0s", "human": {"action": "reset_gpu", "node": "$n", "gpu": 2}},
    ]
    replay = _replay(tmp_path, admin, names, steps)
    reset, uncordon, reboot, _ = (s.human for s in replay.inc.timeline if s.human)
    assert reset and uncordon and reboot
    replay.human(reset)
    assert sorted((f["kind"], f["gpu"]) for f in admin.request("GET", "faults") if f["node"] == node) == [
        ("ecc", 5)
    ]
    replay.human(uncordon)
    assert not any(core.read_node(n).spec.unschedulable for n in (node, other))
    human_writes = [w for w in admin.truth()["writes"] if w["by"] == "admin" and w["name"] in (node, other)]
    assert len(human_writes) == 4  # the test's two cordons, the human's two uncordons: none the agent's
    replay.human(reboot)
    assert admin.request("GET", "faults") == []
    assert all(c.status == "True" for c in core.read_node(node).status.conditions if c.type == "GpuHealthy")
    replay.names = {"n": "no-such-node"}
    with pytest.raises(ReplayError, match="human reset_gpu on no-such-node: the fleet refused"):
        replay.human(reset)


def test_an_incident_with_human_repairs_replays_end_to_end(tmp_path: Path) -> None:
    data = {
        "id": "human-repairs-e2e",
        "title": "a GPU falls off the bus; the agent takes the node out; a field engineer resets it",
        "class": "xid-fallen-off-bus",
        "source": {"kind": "on-call-pattern", "ref": "tests", "what_happened": "an XID 79, then a repair"},
        "world": {
            "fleet": {"nodes": 24, "pools": 2, "seed": 7},
            "bind": {"idle": {"node": {"pool": 0, "index": 10}}},
        },
        "timeline": [
            {"at": "0s", "fault": {"kind": "xid", "node": "$idle", "gpu": 5, "code": 79}},
            {"at": "3m", "alerts": {}},
            {"at": "20m", "human": {"action": "reset_gpu", "node": "$idle", "gpu": 5, "by": "fe-dana"}},
            {"at": "21m", "human": {"action": "uncordon", "node": "$idle"}},
        ],
        "expect": {
            "outcome": "mitigated",
            "root_cause": "xid-fallen-off-bus",
            "must": [{"tool": "k8s.cordon_node", "target": "$idle"}],
            "must_not": [{"tool": "billing.*"}, {"tool": "notify.customer"}],
            "limits": {"actions": 3, "sim_minutes": 30},
        },
    }
    path = tmp_path / "human-repairs-e2e.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_incident(path)
    assert result.error is None, result.error
    assert result.passed, failure_reasons(result)
    assert result.actions_by_tool.get("k8s.uncordon_node") is None  # the uncordon was the human's
