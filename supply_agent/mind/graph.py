"""The agent loop: a LangGraph ``StateGraph`` from alert to verified mitigation (or a human).

triage -> investigate -> plan -> (read -> plan)* -> [schedule -> (wait -> plan)] -> gate -> [approval]
-> execute -> verify -> plan ... -> resolve | escalate -> summarise. A step that stops gang jobs and may
wait for their checkpoint is scheduled first (supply_agent.mind.nodes.wait): the thread pauses until
its moment and plans again then. Alerts joining a thread paused at an approval wake it: approval ->
plan with the step parked, and plan -> approval (the same question) when the plan comes back to it
(gate -> defer -> approval when a new step needs an approval meanwhile: one question at a time).
Thread id = incident id. Every write goes through the gate and the guarded executor; a denied,
rejected, expired or failed step escalates to a human with the reason. A node re-runs from its start
after a crash or a resume, so each node is safe to run twice: reads are harmless, and the executor
returns the recorded result for a step that already executed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from supply_agent.mind.deps import GraphDeps
from supply_agent.mind.nodes import act, approval, finish, gate, investigate, plan, wait
from supply_agent.models.incident import IncidentState

__all__ = ["GraphDeps", "build_graph"]

Node = Callable[[IncidentState, GraphDeps], Any]


def build_graph(deps: GraphDeps, checkpointer: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph, its nodes bound to ``deps``."""

    def bind(fn: Node) -> Callable[[IncidentState], Any]:
        def node(state: IncidentState) -> Any:
            return fn(state, deps)

        node.__name__ = getattr(fn, "__name__", "node")
        return node

    g: StateGraph[Any, Any, Any, Any] = StateGraph(IncidentState)
    nodes: list[tuple[str, Node]] = [
        ("triage", investigate.triage),
        ("investigate", investigate.investigate),
        ("plan", plan.plan),
        ("read", plan.read),
        ("schedule", wait.schedule),
        ("wait", wait.wait),
        ("gate", gate.gate),
        ("approval", approval.approval),
        ("defer", approval.defer),
        ("execute", act.execute),
        ("verify", act.verify),
        ("resolve", finish.resolve),
        ("escalate", finish.escalate),
        ("summarise", finish.summarise),
    ]
    for name, fn in nodes:
        g.add_node(name, _timed(deps, name, bind(fn)))
    g.add_edge(START, "triage")
    g.add_edge("triage", "investigate")
    g.add_conditional_edges(
        "investigate", lambda s: "summarise" if s.outcome else "plan", ["summarise", "plan"]
    )
    g.add_conditional_edges(
        "plan", bind(_after_plan), ["read", "schedule", "gate", "approval", "resolve", "escalate"]
    )
    g.add_conditional_edges("schedule", bind(wait.after_schedule), ["wait", "gate"])
    g.add_edge("wait", "plan")
    g.add_conditional_edges("read", bind(plan.after_read), ["plan", "escalate"])
    g.add_conditional_edges("gate", bind(_after_gate), ["approval", "defer", "execute", "escalate"])
    g.add_edge("defer", "approval")
    g.add_conditional_edges("approval", bind(approval.after_approval), ["execute", "escalate", "plan"])
    g.add_conditional_edges("execute", bind(act.after_execute), ["verify", "escalate"])
    g.add_conditional_edges("verify", bind(act.after_verify), ["plan", "escalate"])
    g.add_edge("resolve", "summarise")
    g.add_edge("escalate", "summarise")
    g.add_edge("summarise", END)
    return g.compile(checkpointer=checkpointer)


def _after_plan(state: IncidentState, deps: GraphDeps) -> str:
    # A step parked at its approval (alerts woke the thread) is asked again when the plan comes back to it.
    if approval.back_to_parked(state):
        return "approval"
    after = plan.after_plan(state, deps)
    return "schedule" if after == "gate" and wait.needs_schedule(state, deps) else after


def _after_gate(state: IncidentState, deps: GraphDeps) -> str:
    # One question at a time: a new ask while a parked step waits is let go and the parked one asked.
    return "defer" if approval.asks_behind_parked(state) else gate.after_gate(state, deps)


def _timed(deps: GraphDeps, name: str, fn: Callable[[IncidentState], dict[str, Any]]) -> Callable[..., Any]:
    def run(state: IncidentState) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            return fn(state)
        finally:
            deps.timings[name] = deps.timings.get(name, 0.0) + time.perf_counter() - t0

    run.__name__ = name
    return run
