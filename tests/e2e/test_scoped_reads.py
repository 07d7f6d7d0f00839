"""What one incident reads costs O(what it is about): the meters of its customer, not the fleet's; and on
a watch cache, no LIST of the whole cluster at all (the API calls counted in the official client)."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from rich.console import Console

from supply_agent.hands.world_cache import WorldCache
from supply_agent.service.terminal import TerminalApprover
from tests.support.agent_harness import harness
from tests.support.api_counter import COUNTER


def test_a_customers_usage_read_takes_in_only_that_customers_meters(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        meters = h.admin.meters()["meters"]
        acme = [m for m in meters if m["customer"] == "acme"]
        assert acme and len(acme) < len(meters)
        h.admin.advance(60)
        res = h.env.runtime.ingest_meters("inc-scope", 1, {"customer": "acme"})
        assert res is not None and res.outcome == "executed", res
        assert res.result is not None and res.result["meters"] == len(acme)
        # A scope the catalogue does not know is refused before it reaches the feed.
        bad = h.env.runtime.ingest_meters("inc-scope", 2, {"tenant": "acme"})
        assert bad is not None and bad.outcome != "executed"


def test_on_a_watch_cache_an_incident_lists_nothing_cluster_wide(tmp_path: Path) -> None:
    COUNTER.install()
    with harness(tmp_path) as h:
        cache = WorldCache(h.env.runtime.kube).start()
        h.env.runtime.cache = cache
        try:
            h.inject("xid", node=h.nodes()[0], gpu=1, code=79)
            alerts = h.alerts(300)
            approver = TerminalApprover("auto", "oncall-alice", h.env.runtime.clock, Console(file=StringIO()))
            COUNTER.calls.clear()
            COUNTER.on = True
            try:
                [result] = h.agent.handle(alerts, approver)
            finally:
                COUNTER.on = False
            assert result.state.outcome == "mitigated", result.state.escalation_reason
            assert COUNTER.calls.get("LIST all", 0) == 0, dict(COUNTER.calls)
            assert COUNTER.calls["write"] >= 2 and cache.refreshes >= 1
        finally:
            h.env.runtime.cache = None
            cache.stop()
