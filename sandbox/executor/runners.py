"""The executor's runners, derived from the tool table and bound to the write credentials: what the
guarded executor calls, and nothing else does."""

from __future__ import annotations

from pydantic import BaseModel

from sandbox.executor.executor import Runner
from supply_agent.models import Action
from tools.catalogue import CATALOGUE, Call, Clients, Deadline, Effect, ToolSpec


def _bind(spec: ToolSpec, clients: Clients) -> Runner:
    assert spec.run is not None
    run = spec.run

    def runner(parsed: BaseModel, dry_run: bool, action: Action, deadline: Deadline) -> BaseModel:
        # Keys come from (incident, step, tool): a repeated step acts once.
        call = Call(action.incident_id, action.step, action.idempotency_key(), dry_run, deadline)
        result: BaseModel = run(clients, parsed, call)
        return result

    return runner


def runners(clients: Clients, prefixes: tuple[str, ...] = ()) -> dict[str, Runner]:
    """A runner for every write and control action in the table (or those whose names start with one
    of ``prefixes``), over ``clients``, which must hold the writer's Kubernetes client."""
    return {
        name: _bind(spec, clients)
        for name, spec in CATALOGUE.items()
        if spec.effect is not Effect.READ
        and spec.run is not None
        and (not prefixes or name.startswith(prefixes))
    }
