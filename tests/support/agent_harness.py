"""A sandbox fleet on loopback plus an agent wired to it the way `supply-agent handle` wires one.

The kubeconfig is the fleet's own: the admin context (current; the harness's AdminClient uses it) and
the contexts sandbox-reader and sandbox-writer, which ``build_environment`` picks for the agent's reads
and the guarded executor's writes, so the fleet's RBAC (deploy/base/rbac.yaml) applies to the agent."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.clock import SimClock
from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import POOL_LABEL, Fleet, FleetSpec
from supply_agent.hands.wiring import Environment
from supply_agent.incidents.agent import Agent, ApprovalAnswer, RunResult, open_agent
from supply_agent.mind.planners.base import Planner
from supply_agent.mind.planners.runbook import RunbookPlanner
from supply_agent.models.incident import AlertIn, parse_alerts
from supply_agent.service.terminal import TerminalApprover
from supply_agent.settings import Settings

APPROVER = "oncall-alice"


@dataclass
class Harness:
    fleet: Fleet
    server: FleetServer
    kubeconfig: Path
    admin: AdminClient
    settings: Settings
    agent: Agent
    env: Environment

    def nodes(self, pool: int = 0) -> list[str]:
        pools: dict[str, list[str]] = {}
        for n in self.fleet.store.items("nodes"):
            pools.setdefault(n["metadata"]["labels"][POOL_LABEL], []).append(n["metadata"]["name"])
        return sorted(pools[sorted(pools)[pool]])

    def tenant_pod(self, node: str | None = None) -> tuple[str, str, str]:
        """(namespace, pod, node) of a running tenant pod."""
        for p in sorted(self.fleet.store.items("pods"), key=lambda o: o["metadata"]["name"]):
            ns = p["metadata"]["namespace"]
            if (
                ns.startswith("tenant-")
                and p["spec"].get("nodeName")
                and (node is None or p["spec"]["nodeName"] == node)
            ):
                return ns, p["metadata"]["name"], p["spec"]["nodeName"]
        raise LookupError("no tenant pod")

    def inject(self, fault: str, **kw: Any) -> dict[str, Any]:
        return self.admin.inject(fault, **kw)

    def alerts(self, advance_s: float = 900) -> list[AlertIn]:
        if advance_s:
            self.admin.advance(advance_s)
        out: list[AlertIn] = []
        for body in self.admin.alerts("alertmanager"):
            out += parse_alerts(body)[0]
        return out

    def handle(
        self, mode: Literal["auto", "never"] | None = "auto", advance_s: float = 900, who: str = APPROVER
    ) -> list[RunResult]:
        approver = TerminalApprover(mode, who, self.env.runtime.clock) if mode else None
        return self.agent.handle(self.alerts(advance_s), approver)

    def answer(self, result: RunResult, approved: bool, who: str = APPROVER, late_s: float = 0) -> RunResult:
        assert result.pending is not None
        at = self.env.runtime.clock()
        if late_s:
            self.admin.advance(late_s)
            at = self.env.runtime.clock()
        return self.agent.run(
            result.incident_id, resume=ApprovalAnswer(approved=approved, approver=who, decided_at=at)
        )

    def truth(self) -> dict[str, Any]:
        return self.admin.truth()

    def requests(self) -> dict[str, Any]:
        """The fleet's count of requests by identity (admin, reader, writer): verbs, resources, paths, 403s."""
        return dict(self.admin.request("GET", "requests"))


@contextlib.contextmanager
def harness(
    tmp: Path, nodes: int = 24, planner: Planner | None = None, seed: int = 7, **settings: Any
) -> Iterator[Harness]:
    fleet = Fleet(FleetSpec(nodes=nodes, pools=2, seed=seed), SimClock("manual"))
    fleet.generate()
    with FleetServer(fleet) as server:
        kubeconfig = tmp / "kubeconfig"
        server.write_kubeconfig(kubeconfig)
        s = Settings(data_dir=tmp / "var", approvers=[APPROVER], verify_cap_s=5.0, **settings)
        with open_agent(s, kubeconfig, planner=planner or RunbookPlanner()) as (agent, env):
            env.runtime.verify_poll_s = 0.05
            yield Harness(fleet, server, kubeconfig, AdminClient.from_kubeconfig(kubeconfig), s, agent, env)
