"""`supply-agent serve`: a rack whose nodes page over two PagerDuty deliveries. The second makes the rack
qualify; the first nodes' PagerDuty incidents are merged into the rack's, and each of their pages is told
where it went (a note), so no page the agent acknowledged goes quiet."""

from __future__ import annotations

from pathlib import Path

from tests.support.service_harness import serve_harness

RACK = "supply-agent.io/rack"


def test_merged_pagerduty_incidents_are_told_where_they_went(tmp_path: Path) -> None:
    with serve_harness(tmp_path) as h:
        kube = h.service.env.runtime.kube
        pool = h.node()[:9]
        nodes = sorted(n.name for n in kube.list_nodes() if n.name.startswith(pool))[:4]
        assert len({kube.get_node(n).labels[RACK] for n in nodes}) == 1
        for n in nodes[:2]:
            h.admin.inject("thermal", node=n, gpu=0)
        first = h.pagerduty_webhooks(420)
        assert first
        for hook in first:
            assert h.post_pagerduty(hook).status_code == 202
        h.drain()
        earlier = {r.id for r in h.service.store.incidents()}
        assert len(earlier) == 2, earlier
        for n in nodes[2:]:
            h.admin.inject("thermal", node=n, gpu=1)
        seen = {hook["event"]["data"]["id"] for hook in first}
        later = [hook for hook in h.pagerduty_webhooks(360) if hook["event"]["data"]["id"] not in seen]
        assert later
        for hook in later:
            assert h.post_pagerduty(hook).status_code == 202
        h.drain()
        rows = h.service.store.incidents()
        [rack] = [r for r in rows if r.component is not None]
        assert rack.component == f"rack={kube.get_node(nodes[0]).labels[RACK]}"
        assert {r.id for r in rows if r.folded_into == rack.id} == earlier
        for iid in earlier:
            pd_id = iid.removeprefix("pd-")
            notes = h.until(
                f"the merge note on {pd_id}",
                lambda pd_id=pd_id: [n for n in h.pd.notes(pd_id) if f"merged into incident {rack.id}" in n],
            )
            assert len(notes) == 1
