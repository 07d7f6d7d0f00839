"""supply_agent.heap: start-up's objects leave the collector's full passes, and every pass is timed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from prometheus_client import generate_latest


def test_settled_heap_leaves_a_full_pass_only_what_came_after() -> None:
    # In a process of its own: freezing is for the life of a process, and pytest's heap is not the
    # agent's.
    code = textwrap.dedent(
        """
        import gc
        import supply_agent.intake.app, supply_agent.service.core  # what serve imports
        from supply_agent.heap import settle_heap
        from supply_agent.metrics import Metrics

        before = len(gc.get_objects())
        m = Metrics()
        frozen = settle_heap(m)
        after = len(gc.get_objects())  # what a full pass walks now
        garbage = [[i] for i in range(50_000)]  # a request's worth and more, made after start-up
        gc.collect(2)
        print(before, frozen, after, m.gc_frozen._value.get())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, frozen, after, gauge = (float(x) for x in out.split())
    assert before > 50_000
    assert frozen >= before * 0.9 and gauge == frozen
    assert after < before / 20


def test_every_collection_is_timed_by_generation() -> None:
    import gc

    from supply_agent import heap
    from supply_agent.metrics import Metrics

    m = Metrics()
    try:
        heap.settle_heap(m)
        gc.collect(0)
        gc.collect(2)
        text = generate_latest(m.registry).decode()
        assert 'supply_agent_gc_pause_seconds_count{generation="2"}' in text
        assert 'supply_agent_gc_pause_seconds_count{generation="0"}' in text
        assert float(m.gc_frozen._value.get()) > 0
    finally:  # this is pytest's process: give it its heap back, and stop timing it
        gc.unfreeze()
        if heap._on_gc in gc.callbacks:
            gc.callbacks.remove(heap._on_gc)
        heap._watched.clear()
        heap._children.clear()
