"""The console over a running service (``serve``) or over a store alone (``supply-agent console``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from supply_agent.incidents.store import engine_for
from supply_agent.settings import Settings
from supply_agent.web.app import Console
from supply_agent.web.queries import ConsoleReads

if TYPE_CHECKING:
    from supply_agent.service.core import Service

EVALS = Path("evals")


def console_for_service(service: Service, evals_dir: Path | None = EVALS) -> Console:
    """The console of ``serve``: its stores, the playbooks' limits, the world and the latches as the
    service reads them (the world cache when it runs)."""
    from tools.latches import read_breaker, read_freeze

    rt = service.env.runtime
    reads = ConsoleReads(service.store.engine, rt.executor.audit.engine, service.events.engine)

    def latches() -> dict[str, tuple[bool, str]]:
        return {"freeze": read_freeze(rt.kube), "breaker": read_breaker(rt.kube)}

    return Console(
        service.settings,
        reads,
        rt.playbooks.limits,
        world=lambda: rt.world([], frozenset()),
        latches=latches,
        clock=rt.clock,
        evals_dir=evals_dir if evals_dir is not None and evals_dir.is_dir() else None,
    )


def console_for_store(settings: Settings, url: str, evals_dir: Path | None = EVALS) -> Console:
    """A store alone (no cluster): what it recorded; the world's shares shown as unknown."""
    from supply_agent.hands.wiring import playbooks_for

    engine = engine_for(url)
    # One database holds every store on PostgreSQL; the embedded SQLite keeps the intake's events apart.
    reads = ConsoleReads(engine, engine, engine if engine.dialect.name == "postgresql" else None)
    return Console(
        settings,
        reads,
        playbooks_for(settings).limits,
        evals_dir=evals_dir if evals_dir is not None and evals_dir.is_dir() else None,
    )
