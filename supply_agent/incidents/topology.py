"""Alerts from several nodes that share one component fold into one incident about that component.

A rack whose cooling failed throttles every GPU in it; a PDU that lost its input takes half a rack down;
a leaf switch that died cuts off the nodes behind it; a bad driver makes every node that took it raise
the same XID. Each node's alert looks like that node's fault, and acting node by node moves work around a
problem only the facility, the network team or the rollout's owner can fix. So before alerts are grouped
one node at a time, this module asks the cluster which component each alerting node is in (its labels,
never the alert's, which are untrusted text) and how many nodes each component has, and gives the
alerts of a component that enough of its nodes report at once to one incident naming it.

Which (symptom, component) pairs mean a shared cause is policy: a playbook whose ``match`` names
``topology: [rack]`` and the alerts it answers (thermal for a rack's cooling, NotReady for its power).
A component counts when ``min_nodes`` of its nodes alert together and they are ``min_fraction`` of it
(``_global.yaml``'s ``topology``); the component that explains the most alerting nodes wins, and of
those the smallest. The cost is one node read
per alerting node and one label-selected list per candidate component: O(the alerts' nodes and their
components), never O(the cluster).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from supply_agent.mind.triage import Shown, as_known
from supply_agent.models.incident import AlertIn, Component
from supply_agent.policy import PlaybookSet
from supply_agent.policy.playbook import Playbook

# node -> its labels as the cluster has them (None: the cluster has no such node)
LabelsOf = Callable[[str], Mapping[str, str] | None]
# (label, value) -> how many nodes the cluster has with it
SizeOf = Callable[[str, str], int]


@dataclass
class TopologyGroup:
    """Alerts of one component, the component, and the playbook that answers for it."""

    component: Component
    playbook: Playbook
    alerts: list[AlertIn]


def topology_key(kind: str, name: str) -> str:
    return f"topology|{kind}={name}"


def incident_id_of(component: Component) -> str:
    """A stable id: the same component's alerts open (or join) the same incident."""
    return component_incident_base(component.kind, component.name)


def component_incident_base(kind: str, name: str) -> str:
    return "inc-" + hashlib.sha256(topology_key(kind, name).encode()).hexdigest()[:12]


def component_home(
    alert: AlertIn,
    playbooks: PlaybookSet,
    node_labels: Mapping[str, str] | None,
    latest: Callable[[str], tuple[str, str | None] | None],
    shown: Shown | None = None,
) -> str | None:
    """The incident of a component the alert's node is in, that is still open or closed within the
    window, and whose playbook answers this alert there: a node of a rack whose cooling incident is open
    throttles too, later than the others. ``latest(base id)`` gives that incident's id and playbook
    (None when there is none to join)."""
    if node_labels is None or alert.status != "firing" or alert.pod is not None:
        return None
    unc = playbooks.limits.xid_uncatalogued
    for kind, label in sorted(playbooks.limits.topology.components.items()):
        name = node_labels.get(label)
        if not name:
            continue
        found = latest(component_incident_base(kind, name))
        if found is None:
            continue
        iid, pb_id = found
        pb = playbooks.get(pb_id) if pb_id else None
        if (
            pb is not None
            and kind in pb.topology
            and any(pb.match_key(n, ls, None, None, unc, kind) for n, ls in as_known(alert, playbooks, shown))
        ):
            return iid
    return None


def _candidates(alerts: Sequence[AlertIn]) -> list[AlertIn]:
    # A pod's alert is its pod's; a node's or a GPU's alert names the node.
    return [a for a in alerts if a.status == "firing" and a.node]


def fold_by_component(
    alerts: Sequence[AlertIn],
    playbooks: PlaybookSet,
    labels_of: LabelsOf,
    size_of: SizeOf,
    shown: Shown | None = None,
) -> tuple[list[TopologyGroup], list[AlertIn]]:
    """The alerts that fold by a shared component, grouped; and the rest, in arrival order. ``shown``:
    what an alert no playbook knows shows on its GPU (see ``as_known``)."""
    topo = playbooks.limits.topology
    answering = [pb for pb in playbooks if pb.topology]
    alerting = _candidates(alerts)
    if not answering or len({a.node for a in alerting}) < topo.min_nodes:
        return [], list(alerts)
    unc = playbooks.limits.xid_uncatalogued
    labels: dict[str, Mapping[str, str] | None] = {}
    for a in alerting:
        assert a.node is not None
        if a.node not in labels:
            labels[a.node] = labels_of(a.node)
    known = {id(a): as_known(a, playbooks, shown) for a in alerting}
    # (playbook, kind, component name) -> alerts the playbook answers on nodes of that component
    found: dict[tuple[str, str, str], list[AlertIn]] = {}
    by_id = {pb.id: pb for pb in answering}
    for pb in answering:
        for kind in sorted(pb.topology):
            label = topo.components.get(kind)
            if label is None:
                continue
            for a in alerting:
                node_labels = labels.get(a.node or "")
                if node_labels is None or label not in node_labels:
                    continue
                if all(pb.match_key(n, ls, None, None, unc, kind) is None for n, ls in known[id(a)]):
                    continue
                found.setdefault((pb.id, kind, node_labels[label]), []).append(a)
    counted: list[tuple[int, int, str, TopologyGroup]] = []
    sizes: dict[tuple[str, str], int] = {}
    for (pb_id, kind, name), hits in found.items():
        nodes = sorted({a.node for a in hits if a.node})
        if len(nodes) < topo.min_nodes:
            continue
        label = topo.components[kind]
        if (label, name) not in sizes:
            sizes[(label, name)] = size_of(label, name)
        size = max(sizes[(label, name)], len(nodes))
        if len(nodes) * 100 < topo.min_fraction * size:
            continue
        component = Component(kind=kind, label=label, name=name, nodes=nodes, size=size)
        counted.append(
            (len(nodes), size, f"{kind}={name}|{pb_id}", TopologyGroup(component, by_id[pb_id], hits))
        )
    groups: list[TopologyGroup] = []
    taken: set[int] = set()
    # The component that explains the most alerting nodes first; of those, the smallest (a leaf switch
    # whose every node alerts before the rack it sits in, half of which does), then the kind named first
    # in _global.yaml (a rack that is a whole small pool is the rack).
    listed = {kind: i for i, kind in enumerate(topo.components)}

    def rank(c: tuple[int, int, str, TopologyGroup]) -> tuple[int, int, int, str]:
        return (-c[0], c[1], listed.get(c[3].component.kind, len(listed)), c[2])

    for _, _, _, group in sorted(counted, key=rank):
        mine = [a for a in group.alerts if id(a) not in taken]
        if len({a.node for a in mine}) < topo.min_nodes:
            continue
        taken |= {id(a) for a in mine}
        c = group.component
        merged = next((g for g in groups if (g.component.kind, g.component.name) == (c.kind, c.name)), None)
        if merged is None:
            groups.append(TopologyGroup(c, group.playbook, mine))
        else:  # two playbooks of one component (thermal and power, say): one incident, the first's
            merged.alerts.extend(mine)
            nodes = sorted(set(merged.component.nodes) | {a.node for a in mine if a.node})
            merged.component = merged.component.model_copy(update={"nodes": nodes})
    # The component's other alerts on its nodes belong to it too: a rack that lost power also makes
    # its nodes' other alerts fire.
    for g in groups:
        on = set(g.component.nodes)
        extra = [a for a in alerts if id(a) not in taken and a.node in on]
        taken |= {id(a) for a in extra}
        g.alerts.extend(extra)
    order = {id(a): i for i, a in enumerate(alerts)}
    for g in groups:
        g.alerts.sort(key=lambda a: order[id(a)])
    return groups, [a for a in alerts if id(a) not in taken]
