"""Merging across deliveries: a component that qualifies only with alerts of earlier deliveries.

Alertmanager sends a group's alerts as they start (``group_interval`` apart), so a rack whose nodes
throttle one after another arrives as several deliveries, each below the threshold (``topology``). The
node alerts of the grouping window that are in node incidents still open (or closed within it) count
with the new ones: when a component qualifies and a new alert is among its alerts, its incident takes
the earlier alerts its playbook answers, and their incidents are merged into it (PagerDuty's "merge
incidents": the merged ones are the component's now; the agent makes no more writes on them). A
component that only earlier alerts make qualify is left as it is: it was decided then. Cost: the
alerts of the window, from the store, and one label read per node among them (O(the alerts)).
"""

from __future__ import annotations

from datetime import datetime

import structlog

from supply_agent.incidents.fold_reads import ClusterUnreadable, FoldReads
from supply_agent.incidents.store import IncidentStore
from supply_agent.incidents.topology import TopologyGroup, fold_by_component
from supply_agent.mind.triage import as_known
from supply_agent.models.incident import AlertIn, Component
from supply_agent.policy import PlaybookSet

log = structlog.get_logger("supply_agent.incidents.merge")

# per component (kind, name): the earlier incidents it takes alerts from, and those alerts
Merges = dict[tuple[str, str], dict[str, list[AlertIn]]]


def fold_with_earlier(
    alerts: list[AlertIn], store: IncidentStore, playbooks: PlaybookSet, reads: FoldReads, now: datetime
) -> tuple[list[TopologyGroup], list[AlertIn], Merges]:
    """The new alerts that fold by a shared component, with the earlier alerts each component takes;
    the rest of the new alerts; and per component, what to merge (see the module doc). If the cluster
    cannot be read now, every alert folds as its own node's."""
    recent: list[tuple[AlertIn, str]] = []
    if any(pb.topology for pb in playbooks):
        window = playbooks.limits.mass_failure.window
        mine = {a.fingerprint for a in alerts}
        recent = [(a, i) for a, i in store.recent_node_alerts(now, window) if a.fingerprint not in mine]
    earlier = {id(a): iid for a, iid in recent}
    try:
        groups, rest = fold_by_component(
            [*alerts, *(a for a, _ in recent)], playbooks, reads.labels_of, reads.size_of, reads.shown
        )
    except ClusterUnreadable:
        return [], alerts, {}
    unc = playbooks.limits.xid_uncatalogued
    kept: list[TopologyGroup] = []
    merges: Merges = {}
    for g in groups:
        if all(id(a) in earlier for a in g.alerts):
            continue
        # An earlier alert moves only when the component's playbook answers it (a rack's cooling takes
        # its nodes' thermal alerts, not an unrelated XID incident on one of them).
        took = [
            a
            for a in g.alerts
            if id(a) in earlier
            and any(
                g.playbook.match_key(n, ls, None, None, unc, g.component.kind) is not None
                for n, ls in as_known(a, playbooks, reads.shown)  # a stock rule's page as what it shows
            )
        ]
        g.alerts = [a for a in g.alerts if id(a) not in earlier or a in took]
        by_incident: dict[str, list[AlertIn]] = {}
        for a in took:
            by_incident.setdefault(earlier[id(a)], []).append(a)
        merges[(g.component.kind, g.component.name)] = by_incident
        kept.append(g)
    return kept, [a for a in rest if id(a) not in earlier], merges


def merge_earlier(
    store: IncidentStore, earlier: dict[str, list[AlertIn]], into: str, component: Component, now: datetime
) -> set[str]:
    """Move earlier incidents' alerts into the component's incident and mark them merged into it (one
    transaction each), with a line in both timelines. The incidents merged (touched: the service
    derives their write-back again)."""
    what = f"{component.kind} {component.name}"
    done: set[str] = set()
    for old, moved in sorted(earlier.items()):
        if old == into:
            continue
        done.add(old)
        store.merge_into(old, into, [a.fingerprint for a in moved])
        store.note(
            old,
            now,
            f"merged into {into}: its alerts are {len(component.nodes)} of the {component.size} "
            f"nodes of {what} (a shared cause); the agent makes no more writes here",
            merged_into=into,
        )
        store.note(into, now, f"merged {old} into this incident ({len(moved)} alert(s))", merged=old)
        log.info("an incident was merged into its component's", incident_id=old, into=into, component=what)
    return done
