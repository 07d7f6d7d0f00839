"""The checkpointer against a real PostgreSQL (and the SQLite default, the same way).

A run stopped at an ``interrupt()`` is resumed by another process through the checkpointer alone, and
our own state types come back out of a checkpoint as themselves, with no msgpack allowlist complaint.
"""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.serde.event_hooks import SerdeEvent, register_serde_event_listener
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from pydantic import BaseModel, Field

from supply_agent.incidents.checkpoint import open_checkpointer, serializer
from supply_agent.models import Action, Decision, Verdict
from supply_agent.models.incident import AlertIn, IncidentState, StepRecord, TimelineEntry

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["postgres", "sqlite"])
def checkpoint_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both backends of ``open_checkpointer``: the session's PostgreSQL, and a SQLite file."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'checkpoints.sqlite'}"


@pytest.fixture
def serde_events() -> Iterator[list[SerdeEvent]]:
    """What the msgpack allowlist said while reading checkpoints back (unregistered or blocked types)."""
    events: list[SerdeEvent] = []
    unregister = register_serde_event_listener(events.append)
    try:
        yield events
    finally:
        unregister()


def thread() -> RunnableConfig:
    return {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:12]}"}}


# -- a run interrupted in one process, resumed in another ---------------------------------------------
class Flow(BaseModel):
    incident_id: str
    answer: str | None = None
    log: Annotated[list[str], operator.add] = Field(default_factory=list)


def _propose(state: Flow) -> dict[str, Any]:
    return {"log": [f"proposed:{state.incident_id}"]}


def _ask(state: Flow) -> dict[str, Any]:
    answer = interrupt({"question": f"cordon for {state.incident_id}?"})
    return {"answer": str(answer), "log": ["answered"]}


def _act(state: Flow) -> dict[str, Any]:
    return {"log": [f"acted:{state.answer}"]}


def flow_graph() -> StateGraph[Flow]:
    """Imported by the resuming process too: the graph is code, only the checkpoint crosses over."""
    g = StateGraph(Flow)
    g.add_node("propose", _propose)
    g.add_node("ask", _ask)
    g.add_node("act", _act)
    g.add_edge(START, "propose")
    g.add_edge("propose", "ask")
    g.add_edge("ask", "act")
    g.add_edge("act", END)
    return g


RESUME = """
import json, sys
from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener
from langgraph.types import Command
from supply_agent.incidents.checkpoint import open_checkpointer
from tests.unit.incidents.test_checkpoint_postgres import flow_graph

url, thread_id = sys.argv[1:3]
events = []
register_serde_event_listener(events.append)
cfg = {"configurable": {"thread_id": thread_id}}
with open_checkpointer(url) as saver:
    graph = flow_graph().compile(checkpointer=saver)
    snap = graph.get_state(cfg)
    (pending,) = snap.interrupts
    answer = "yes: " + pending.value["question"]
    graph.invoke(Command(resume={pending.id: answer}), cfg, durability="sync")
    print(json.dumps({"next": list(snap.next), "interrupt": pending.value, "events": events}))
"""


def test_interrupt_resumed_by_another_process(checkpoint_url: str, serde_events: list[SerdeEvent]) -> None:
    cfg = thread()
    with open_checkpointer(checkpoint_url) as saver:
        graph = flow_graph().compile(checkpointer=saver)
        out = graph.invoke(Flow(incident_id="inc-1"), cfg, durability="sync")
        assert [i.value for i in out["__interrupt__"]] == [{"question": "cordon for inc-1?"}]

    path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    child = subprocess.run(
        [sys.executable, "-c", RESUME, checkpoint_url, cfg["configurable"]["thread_id"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stdout + child.stderr
    seen = json.loads(child.stdout.splitlines()[-1])
    assert seen == {"next": ["ask"], "interrupt": {"question": "cordon for inc-1?"}, "events": []}

    with open_checkpointer(checkpoint_url) as saver:
        snap = flow_graph().compile(checkpointer=saver).get_state(cfg)
    assert snap.next == ()
    assert snap.interrupts == ()
    assert snap.values == {
        "incident_id": "inc-1",
        "answer": "yes: cordon for inc-1?",
        "log": ["proposed:inc-1", "answered", "acted:yes: cordon for inc-1?"],
    }
    assert serde_events == []


# -- our state types through a checkpoint ---------------------------------------------------------------
def _step(state: IncidentState) -> StepRecord:
    action = Action(tool="k8s.cordon_node", params={"node": "n1"}, incident_id=state.incident_id, step=1)
    decision = Decision(
        verdict=Verdict.ALLOW,
        action_hash=action.digest(),
        reasons=("within limits",),
        decided_at=datetime(2026, 5, 20, 12, 0, tzinfo=UTC),
    )
    return StepRecord(
        index=0, action=action, planner="runbook", decision=decision, outcome="executed", result={"ok": True}
    )


def _record(state: IncidentState) -> dict[str, Any]:
    entry = TimelineEntry(at=state.opened_at, node="record", kind="decision", text="allow k8s.cordon_node")
    return {"steps": [_step(state)], "phase": "act", "timeline": [entry]}


def test_incident_state_round_trips(checkpoint_url: str, serde_events: list[SerdeEvent]) -> None:
    start = IncidentState(
        incident_id="i",
        alerts=[AlertIn(alertname="GPUFallenOffBus", labels={"node": "n1", "xid": "79"})],
        opened_at=datetime.now(UTC),
    )
    g = StateGraph(IncidentState)
    g.add_node("record", _record)
    g.add_edge(START, "record")
    g.add_edge("record", END)
    cfg = thread()
    with open_checkpointer(checkpoint_url) as saver:
        g.compile(checkpointer=saver).invoke(start, cfg, durability="sync")
    assert os.environ["LANGGRAPH_STRICT_MSGPACK"] == "true"

    with open_checkpointer(checkpoint_url) as saver:
        values = g.compile(checkpointer=saver).get_state(cfg).values
    step = values["steps"][0]
    assert isinstance(values["alerts"][0], AlertIn)
    assert isinstance(step, StepRecord)
    assert isinstance(step.action, Action)
    assert isinstance(step.decision, Decision)
    assert step.decision.verdict is Verdict.ALLOW
    assert step.decision.action_hash == step.action.digest()
    assert isinstance(values["timeline"][0], TimelineEntry)
    assert values["opened_at"] == start.opened_at
    expected = start.model_copy(update=_record(start))
    assert IncidentState.model_validate(values).model_dump() == expected.model_dump()
    assert serde_events == []


class Foreign(BaseModel):
    x: int = 1


def test_serializer_blocks_what_it_does_not_know(serde_events: list[SerdeEvent]) -> None:
    """The control for the two tests above: an empty event list means something only if a type outside
    the allowlist does show up there."""
    serde = serializer()
    serde.loads_typed(
        serde.dumps_typed(
            {"step": _step(IncidentState(incident_id="i", alerts=[], opened_at=datetime.now(UTC)))}
        )
    )
    assert serde_events == []
    serde.loads_typed(serde.dumps_typed(Foreign()))
    assert [(e["kind"], e["name"]) for e in serde_events] == [("msgpack_blocked", "Foreign")]
