"""A long-running process's heap, settled once it has started: what start-up made is moved out of the
garbage collector's full passes, and every pass is timed in the process's metrics.

Why: CPython's full (generation 2) collection walks every tracked object, and a process of the agent
holds about 130,000 of them once its imports are done (pydantic models, SQLAlchemy, the Kubernetes
client). One full pass takes 52 ms on an idle core; in an alert storm, on two busy cores, 89 and 144 ms.
The interpreter lock is held throughout, so the event loop and the intake's writer thread both stop,
and every webhook in flight on that replica waits: those pauses were the storm's p99 (237-287 ms with
two replicas). ``gc.freeze()`` (Python 3.7+) moves every object alive now into a permanent generation
that no collection walks. What start-up made lives as long as the process anyway; a full pass then
walks only what requests made since, and the same storm's p99 was 35-46 ms
(``benchmarks/intake_storm.py --replicas 2``).
"""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supply_agent.metrics import Metrics

__all__ = ["settle_heap"]

_watched: list[Metrics] = []  # the process's metrics, once: gc callbacks are per process, not per registry
_children: dict[int, Any] = {}  # the histogram's child per generation, made before any callback runs
_started: dict[int, float] = {}


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    # A collection can start inside any allocation, including one made while prometheus_client holds
    # the histogram's label lock (``labels()`` copies a dict under it): the callback must take no lock
    # that code takes. The children are made up front; observing one only adds floats.
    gen = int(info.get("generation", 0))
    if phase == "start":
        _started[gen] = time.perf_counter()
        return
    began = _started.pop(gen, None)
    child = _children.get(gen)
    if began is None or child is None:
        return
    child.observe(time.perf_counter() - began)


def settle_heap(metrics: Metrics | None = None) -> int:
    """Collect what start-up left as garbage, then freeze the rest (see the module's docstring); with
    ``metrics``, time every collection from now on (``supply_agent_gc_pause_seconds``, by generation)
    and report the frozen objects (``supply_agent_gc_frozen_objects``). Call it once the process has
    imported and built what it serves with, just before it serves. Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    if metrics is not None:
        metrics.gc_frozen.set(frozen)
        _children.clear()
        _children.update({gen: metrics.gc_pause.labels(str(gen)) for gen in range(3)})
        if not _watched:
            gc.callbacks.append(_on_gc)
            _watched.append(metrics)
        else:
            _watched[0] = metrics
    return frozen
