"""Running incidents: one incident file, end to end, on a fleet of its own.

It exists to orchestrate the parts that live elsewhere: ``evals.world`` builds the fleet and binds the
file's names, ``evals.replay`` drives the agent through the timeline on the simulated clock, and
``evals.scoring`` turns what the replay left behind into an ``EvalResult``. Here the fleet is served on
a free loopback port with a manual clock, and the agent is wired to it exactly as ``supply-agent
handle`` wires one (``open_agent``), with its own SQLite files in a temporary directory and the planner
(and, for an LLM planner, its cassette) the run asks for. An incident that cannot be replayed is a row
with its error, never the end of the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from evals.replay import Replay, waits_on_the_sim_clock
from evals.results import EvalResult
from evals.schema import Incident, load_incident
from evals.scoring import score
from evals.world import add_pdbs, build_fleet, resolve
from sandbox.fleet.admin import AdminClient
from sandbox.fleet.server import FleetServer
from supply_agent.incidents.agent import open_agent
from supply_agent.mind.planners.base import Planner
from supply_agent.mind.planners.factory import make_planner
from supply_agent.policy import PlaybookSet, load_playbooks
from supply_agent.settings import Settings

DEFAULT_APPROVER = "oncall-alice"


def _books(settings: Settings, node_only: bool) -> PlaybookSet | None:
    """The playbooks with the workload rules off (``--node-only``); None: as the settings load them."""
    if not node_only:
        return None
    books = load_playbooks(settings.playbooks_dir)
    # Off everywhere: the fleet's rules and every node group's.
    off = books.limits.workloads.model_copy(update={"enabled": False})
    groups = [
        g.model_copy(update={"workloads": {**g.workloads, "enabled": False}})
        for g in books.limits.node_groups
    ]
    limits = books.limits.model_copy(update={"workloads": off, "node_groups": groups})
    return dataclasses.replace(books, limits=limits)


@contextlib.contextmanager
def _planner(
    name: str, settings: Settings, path: Path, incident_id: str, record: bool, gate: bool
) -> Iterator[tuple[Planner, Any]]:
    """The planner, and for an LLM planner the cassette's status (final once the context closes).

    The ablation has cassettes of its own: once an action the gate would stop goes ahead, the model
    sees a different world and is asked different questions."""
    if name == "runbook":
        yield make_planner("runbook", settings), None
        return
    from evals.cassette import cassette_path, llm_planner

    cassette = cassette_path(path, name if gate else f"{name}-nogate")
    with llm_planner(name, settings, cassette, record, incident_id) as (planner, status):
        yield planner, status


# The fleet goes on to the horizon in steps no longer than this: its time-driven controllers (taint
# eviction, checkpoints) act at their own moments, not at the end of one long jump.
HORIZON_STEP_S = 60.0


def _losses_at_horizon(admin: AdminClient, incident: Incident, replay: Replay, truth: dict[str, Any]) -> None:
    """Read the JobSets' and LeaderWorkerSets' losses into ``truth`` at the incident's horizon (``t0`` +
    ``limits.sim_minutes``): a job left slowed or stalled when the agent stops goes on losing work, and
    that counts against the agent as it would against a human; nothing runs the agent meanwhile, and
    the rest of the truth is as the replay ended."""
    if not truth.get("workloads"):
        return
    end = replay.t0 + timedelta(minutes=incident.expect.limits.sim_minutes)
    left = (end - replay.clock()).total_seconds()
    if left <= 0:
        return
    while left > 0:
        step = min(HORIZON_STEP_S, left)
        admin.advance(step)
        left -= step
    truth["workloads"] = admin.truth().get("workloads") or []


def run_incident(
    path: Path,
    planner: str = "runbook",
    *,
    gate: bool = True,
    record: bool = False,
    verify_cap_s: float = 2.0,
    settings_overrides: dict[str, Any] | None = None,
    node_only: bool = False,
) -> EvalResult:
    """Replay one incident file on a fresh fleet; always returns a result (an error is a result).
    ``node_only``: with the gate's workload rules off (the ablation ``--node-only``)."""
    t0 = time.perf_counter()
    incident: Incident | None = None
    try:
        incident = load_incident(path)
        result = _run(
            incident, path, planner, gate, record, verify_cap_s, settings_overrides or {}, t0, node_only
        )
        result.node_only = node_only
        return result
    except Exception as exc:  # one broken incident must not end the run: it is a row with its error
        missing = type(exc).__name__ == "CassetteMissing"  # no import: the runbook needs no cassettes
        return EvalResult(
            id=incident.id if incident else path.stem,
            title=incident.title if incident else "",
            incident_class=incident.incident_class if incident else "",
            planner=planner,
            gate=gate,
            node_only=node_only,
            outcome="error",
            expected_outcome=incident.expect.outcome if incident else "",
            outcome_correct=False,
            expected_root_cause=incident.expect.root_cause if incident else "",
            wall_s=round(time.perf_counter() - t0, 3),
            cassette="missing" if missing else None,
            error=f"{type(exc).__name__}: {exc}",
        )


def _run(
    incident: Incident,
    path: Path,
    planner: str,
    gate: bool,
    record: bool,
    verify_cap_s: float,
    overrides: dict[str, Any],
    t0: float,
    node_only: bool = False,
) -> EvalResult:
    fleet = build_fleet(incident, path)
    names = resolve(incident, fleet)
    add_pdbs(incident, fleet, names)
    approvers = sorted({r.by for r in incident.approvals} | {DEFAULT_APPROVER})
    with tempfile.TemporaryDirectory(prefix=f"eval-{incident.id}-") as tmp, FleetServer(fleet) as server:
        kubeconfig = Path(tmp) / "kubeconfig"
        server.write_kubeconfig(kubeconfig)
        admin = AdminClient.from_kubeconfig(kubeconfig)
        settings = Settings(
            data_dir=Path(tmp) / "var",
            approvers=approvers,
            verify_cap_s=verify_cap_s,
            planner=planner,
            **overrides,
        )
        with (
            _planner(planner, settings, path, incident.id, record, gate) as (plan, cassette),
            open_agent(
                settings, kubeconfig, planner=plan, enforce_gate=gate, playbooks=_books(settings, node_only)
            ) as (agent, env),
        ):
            env.runtime.verify_poll_s = 0.02
            waits_on_the_sim_clock(env, admin)
            replay = Replay(incident, names, admin, agent, env, timedelta(seconds=settings.grouping_window_s))
            replay.run()
            evidence = replay.evidence(admin.truth())
            _losses_at_horizon(admin, incident, replay, evidence.truth)
            limits = env.runtime.playbooks.limits
            result = score(incident, evidence, limits, planner, gate, fleet.spec.gpus_per_node)
        result.wall_s = round(time.perf_counter() - t0, 3)
        if cassette is not None:
            result.cassette = cassette.state
            if cassette.problems:
                result.error = "cassette: " + "; ".join(cassette.problems)
        return result
