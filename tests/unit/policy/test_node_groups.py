"""Policy per node group: ``_global.yaml``'s ``node_groups`` give a pool, a GPU model or a tenant tier
limits of their own (deep-merged over the fleet-wide ones), an action is decided on its target node's
group and its reasons say which; fractions of nodes have absolute caps alongside. Each rule with its
nearest allowed case, the file's errors, and as a property: a group that only tightens a limit never
makes a decision more permissive."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supply_agent.models import Verdict
from supply_agent.policy import GlobalLimits, PlaybookSet, PlaybookSetError, load_playbooks
from supply_agent.policy.gate import decide
from supply_agent.policy.world import History, NodeView, PastAction, WorldView
from tests.unit.policy.test_gate import _STRICTNESS, NOW, PLAYBOOKS, act, says


def world(per_pool: int = 40) -> WorldView:
    """Two pools of empty 8-GPU nodes: p0 of H100s on reserved capacity, p1 of A100s on demand."""
    nodes = {}
    for p, (model, tier) in enumerate(
        (("NVIDIA-H100-80GB-HBM3", "reserved"), ("NVIDIA-A100-SXM4-80GB", "on-demand"))
    ):
        for i in range(per_pool):
            name = f"p{p}-{i:03d}"
            labels = {"pool": f"p{p}", "gpu_model": model, "tenant_tier": tier}
            nodes[name] = NodeView(name=name, pool=f"p{p}", gpus=8, group_labels=labels)
    return WorldView(now=NOW, nodes=nodes)


def books(**limits: Any) -> PlaybookSet:
    return PlaybookSet(limits=GlobalLimits.model_validate(limits), playbooks=PLAYBOOKS.playbooks)


def out(w: WorldView, *nodes: str) -> History:
    return History(
        actions=[
            PastAction(tool="k8s.cordon_node", incident_id="inc-0", at=NOW, nodes=(n,), gpus=8) for n in nodes
        ]
    )


RESERVED = {
    "name": "h100-reserved",
    "match": {"gpu_model": ["NVIDIA-H100*"], "tenant_tier": ["reserved"]},
    "source": "reserved capacity: the contract's availability floor",
    "blast_radius": {"gpus_out": {"soft": 0, "hard": 8}},
}
LOOSE = {"gpus_out": {"soft": 64, "hard": 128}, "pool_cordoned": {"soft": 0.5, "hard": 0.9}}


def test_the_target_nodes_group_decides_and_the_reason_names_it() -> None:
    pbs = books(blast_radius=LOOSE, node_groups=[RESERVED])
    w = world()
    reserved = decide(act("k8s.cordon_node", node="p0-001"), w, out(w, "p0-000"), pbs)
    assert reserved.verdict == Verdict.DENY
    assert says(
        reserved, Verdict.DENY, "GPUs the agent took out of service would be 16", "node group h100-reserved"
    )
    assert "node_groups.h100-reserved" in reserved.limits_consulted
    # The same cordon in the on-demand A100 pool: the fleet-wide limits, and no group named.
    other = decide(act("k8s.cordon_node", node="p1-001"), w, out(w, "p1-000"), pbs)
    assert other.verdict == Verdict.ALLOW
    assert not any("node_groups" in c for c in other.limits_consulted)
    # Only what the group says differs: its pool fraction is the fleet-wide one, merged.
    assert pbs.limits.for_group(pbs.limits.node_groups[0]).blast_radius.pool_cordoned.soft == 0.5


def test_every_key_of_a_match_must_hold_and_the_first_group_wins() -> None:
    spot = {
        "name": "any-h100",
        "match": {"gpu_model": ["NVIDIA-H100*"]},
        "workloads": {"require_room": False},
    }
    limits = GlobalLimits.model_validate({"node_groups": [RESERVED, spot]})
    h100_reserved = {"pool": "p0", "gpu_model": "NVIDIA-H100-80GB-HBM3", "tenant_tier": "reserved"}
    h100_spot = {**h100_reserved, "tenant_tier": "spot"}
    assert limits.group_for(h100_reserved).name == "h100-reserved"  # type: ignore[union-attr]
    assert limits.group_for(h100_spot).name == "any-h100"  # type: ignore[union-attr]
    assert limits.group_for({"pool": "p1", "gpu_model": "NVIDIA-A100-SXM4-80GB"}) is None
    assert limits.group_for({}) is None  # a node without the labels is in no group with a selector


def test_an_absolute_cap_holds_beside_the_fraction() -> None:
    # 10% of a 40-node pool is 4 nodes; a hard cap of 2 holds first.
    capped = {**LOOSE, "pool_cordoned": {"soft": 0.1, "hard": 0.5, "hard_max": 2}, "always_allow_nodes": 0}
    pbs = books(blast_radius=capped)
    w = world()
    two = decide(act("k8s.cordon_node", node="p1-001"), w, out(w, "p1-000"), pbs)
    assert two.verdict == Verdict.ALLOW
    three = decide(act("k8s.cordon_node", node="p1-002"), w, out(w, "p1-000", "p1-001"), pbs)
    assert three.verdict == Verdict.DENY
    assert says(
        three, Verdict.DENY, "nodes of pool p1 out would be 3 nodes", "hard cap 2", "pool_cordoned.hard_max"
    )
    assert pbs.limits.blast_radius.pool_cordoned.in_nodes(40) == (4, 2)
    assert pbs.limits.blast_radius.pool_cordoned.in_nodes(288) == (28, 2)


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([{"name": "g", "match": {}}], "at least one"),
        (
            [{"name": "g", "match": {"pool": ["p0"]}, "blast_radius": {"gpus_out": {"soft": 9, "hard": 1}}}],
            "soft (9)",
        ),
        ([{"name": "g", "match": {"pool": ["p0"]}, "blast_radius": {"nodes_out": 3}}], "node group g"),
        ([RESERVED, RESERVED], "node group names repeat: h100-reserved"),
    ],
)
def test_a_bad_node_group_says_what_is_wrong(groups: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        GlobalLimits.model_validate({"node_groups": groups})
    assert message in str(info.value)


def test_a_bad_node_group_in_a_file_names_the_file(tmp_path: Any) -> None:
    import shutil
    from pathlib import Path

    d = tmp_path / "playbooks"
    shutil.copytree(Path(__file__).resolve().parents[3] / "playbooks", d)
    g = d / "_global.yaml"
    g.write_text(
        g.read_text().replace("node_groups: []", "node_groups:\n  - {name: Bad_Name, match: {pool: [p0]}}")
    )
    with pytest.raises(PlaybookSetError) as info:
        load_playbooks(d)
    assert "_global.yaml" in str(info.value) and "node_groups[0].name" in str(info.value)


_limit = st.tuples(st.integers(0, 64), st.integers(0, 64)).map(lambda t: {"soft": min(t), "hard": max(t)})


@settings(max_examples=150, deadline=None)
@given(
    base=_limit,
    tighter_by=st.tuples(st.integers(0, 64), st.integers(0, 64)),
    already=st.integers(0, 8),
    target=st.integers(0, 39),
    cap=st.one_of(st.none(), st.integers(0, 10)),
)
def test_a_group_that_only_tightens_never_loosens_a_decision(
    base: dict[str, int], tighter_by: tuple[int, int], already: int, target: int, cap: int | None
) -> None:
    soft = max(0, base["soft"] - tighter_by[0])
    hard = max(soft, base["hard"] - tighter_by[1])
    group: dict[str, Any] = {"gpus_out": {"soft": soft, "hard": hard}}
    if cap is not None:
        group["pool_cordoned"] = {"hard_max": cap}
    fleet = {"gpus_out": base, "pool_cordoned": {"soft": 0.9, "hard": 1.0}}
    plain = books(blast_radius=fleet)
    grouped = books(
        blast_radius=fleet,
        node_groups=[{"name": "g", "match": {"pool": ["p0"]}, "blast_radius": group}],
    )
    w = world()
    history = out(w, *(f"p0-{i:03d}" for i in range(already) if i != target))
    node = f"p0-{target:03d}"
    a = decide(act("k8s.cordon_node", node=node), w, history, plain)
    b = decide(act("k8s.cordon_node", node=node), w, history, grouped)
    assert _STRICTNESS[b.verdict] >= _STRICTNESS[a.verdict]


def _with_group_rules(**rules: Any) -> PlaybookSet:
    """The shipped playbooks, the reserved-H100 group in the limits, and xid-fallen-off-bus with no
    preconditions (so its own rules are what a verdict shows) and ``rules`` for that group."""
    from supply_agent.policy.playbook import GroupContainment

    limits = GlobalLimits.model_validate({"blast_radius": LOOSE, "node_groups": [RESERVED]})
    out = []
    for pb in PLAYBOOKS.playbooks:
        if pb.id == "xid-fallen-off-bus":
            c = pb.containment.model_copy(
                update={
                    "preconditions": [],
                    "node_groups": {"h100-reserved": GroupContainment.model_validate(rules)},
                }
            )
            pb = pb.model_copy(update={"containment": c})
        out.append(pb)
    return PlaybookSet(limits=limits, playbooks=tuple(out))


def test_a_playbook_chooses_per_node_group_and_says_so() -> None:
    w = world()
    asks = _with_group_rules(ask_for=["k8s.cordon_node"])
    d = decide(act("k8s.cordon_node", node="p0-000", playbook="xid-fallen-off-bus"), w, History(), asks)
    assert d.verdict == Verdict.ASK
    assert says(
        d,
        Verdict.ASK,
        "playbook xid-fallen-off-bus asks a human to approve k8s.cordon_node on node group h100-reserved",
    )
    elsewhere = decide(
        act("k8s.cordon_node", node="p1-000", playbook="xid-fallen-off-bus"), w, History(), asks
    )
    assert elsewhere.verdict == Verdict.ALLOW, elsewhere.reasons
    forbids = _with_group_rules(forbidden_tools=["k8s.drain_node"])
    d = decide(act("k8s.drain_node", node="p0-000", playbook="xid-fallen-off-bus"), w, History(), forbids)
    assert says(d, Verdict.DENY, "does not permit k8s.drain_node on node group h100-reserved")
    tight = _with_group_rules(max_gpus=0)
    d = decide(act("k8s.cordon_node", node="p0-000", playbook="xid-fallen-off-bus"), w, History(), tight)
    assert says(
        d, Verdict.DENY, "incident would take 8 GPUs out; playbook xid-fallen-off-bus allows 0 on node group"
    )


def test_a_playbook_naming_a_group_the_limits_lack_is_an_error_at_its_line(tmp_path: Any) -> None:
    import shutil
    from pathlib import Path

    d = tmp_path / "playbooks"
    shutil.copytree(Path(__file__).resolve().parents[3] / "playbooks", d)
    pb = d / "xid-fallen-off-bus.yaml"
    text = pb.read_text()
    assert "\ncontainment:\n" in text
    pb.write_text(
        text.replace(
            "\ncontainment:\n",
            "\ncontainment:\n  node_groups:\n    h100-reserved: {ask_for: [k8s.drain_node]}\n",
            1,
        )
    )
    with pytest.raises(PlaybookSetError) as info:
        load_playbooks(d)
    assert "xid-fallen-off-bus.yaml" in str(info.value)
    assert "containment.node_groups.h100-reserved" in str(
        info.value
    ) and "has no node group 'h100-reserved'" in str(info.value)
    g = d / "_global.yaml"
    g.write_text(
        g.read_text().replace(
            "node_groups: []", "node_groups:\n  - {name: h100-reserved, match: {tenant_tier: [reserved]}}"
        )
    )
    loaded = load_playbooks(d)
    fob = loaded.get("xid-fallen-off-bus")
    assert fob is not None and fob.containment.node_groups["h100-reserved"].ask_for == ["k8s.drain_node"]


def test_a_node_groups_own_rate_counts_its_nodes_alone() -> None:
    group = {**RESERVED, "rate_limits": {"per_hour": {"k8s.drain_node": 1}}}
    pbs = books(blast_radius=LOOSE, node_groups=[group])
    w = world()

    def drained(*nodes: str) -> History:
        return History(
            actions=[
                PastAction(tool="k8s.drain_node", incident_id="inc-0", at=NOW, nodes=(n,), gpus=8)
                for n in nodes
            ]
        )

    # An A100 drain this hour does not count against the reserved H100s' one; an H100 drain does.
    first = decide(act("k8s.drain_node", node="p0-001"), w, drained("p1-000"), pbs)
    assert not says(first, Verdict.DENY, "on node group h100-reserved"), first.reasons
    second = decide(act("k8s.drain_node", node="p0-002"), w, drained("p0-001"), pbs)
    assert says(
        second, Verdict.DENY, "k8s.drain_node ran 1 times in the last hour on node group h100-reserved"
    )
    # Off the group, only the fleet-wide rate counts.
    other = decide(act("k8s.drain_node", node="p1-002"), w, drained("p0-001"), pbs)
    assert not says(other, Verdict.DENY, "node group"), other.reasons
    with pytest.raises(ValueError, match="per_hour only"):
        GlobalLimits.model_validate(
            {"node_groups": [{**RESERVED, "rate_limits": {"writes_per_incident": 1}}]}
        )
    with pytest.raises(ValueError, match="node group h100-reserved: rate_limits"):
        GlobalLimits.model_validate(
            {"node_groups": [{**RESERVED, "rate_limits": {"per_hour": {"k8s.get_node": 1}}}]}
        )


def test_the_example_in_global_yaml_is_a_valid_node_group() -> None:
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[3] / "playbooks" / "_global.yaml").read_text()
    block = text[text.index("# node_groups:") : text.index("\nnode_groups: []")]
    example = yaml.safe_load("\n".join(line[2:] for line in block.splitlines() if line.startswith("# ")))
    limits = GlobalLimits.model_validate(example)
    (group,) = limits.node_groups
    assert (
        limits.group_for(
            {"pool": "east-h100", "gpu_model": "NVIDIA-H100-80GB-HBM3", "tenant_tier": "reserved"}
        )
        == group
    )
    assert limits.for_group(group).blast_radius.pool_cordoned.in_nodes(288) == (14, 4)
    assert limits.group_rate(group, "k8s.drain_node") == 1


def test_a_pod_action_is_decided_on_its_pods_nodes_group() -> None:
    from supply_agent.policy.world import PodRef

    w = world()
    pod = PodRef(namespace="tenant-a", name="train-0", customer="a", gpus=8)
    nodes = dict(w.nodes)
    nodes["p0-000"] = nodes["p0-000"].model_copy(update={"pods": (pod,)})
    w = WorldView(now=NOW, nodes=nodes)
    group = {**RESERVED, "rate_limits": {"per_hour": {"k8s.delete_pod": 0}}}
    pbs = books(blast_radius=LOOSE, node_groups=[group])
    d = decide(act("k8s.delete_pod", namespace="tenant-a", pod="train-0"), w, History(), pbs)
    assert says(d, Verdict.DENY, "k8s.delete_pod ran 0 times in the last hour on node group h100-reserved")
    assert "node_groups.h100-reserved" in d.limits_consulted


def test_a_group_never_loosens_a_fleet_wide_total_but_may_loosen_its_own() -> None:
    loose = {
        "name": "big-pool",
        "match": {"pool": ["p0"]},
        "blast_radius": {
            "gpus_out": {"soft": 500, "hard": 1000},
            "pool_cordoned": {"soft": 0.5, "hard": 0.9},
        },
        "workloads": {"gpus_disrupted_per_hour": {"soft": 5000, "hard": 9000}, "require_room": False},
    }
    limits = GlobalLimits.model_validate({"node_groups": [loose]})
    here = limits.for_group(limits.node_groups[0])
    assert here.blast_radius.gpus_out == limits.blast_radius.gpus_out  # a fleet total: the fleet's
    assert here.workloads.gpus_disrupted_per_hour == limits.workloads.gpus_disrupted_per_hour
    assert here.workloads.require_room  # either says so
    assert here.blast_radius.pool_cordoned.hard == 0.9  # the pool's own fraction: the group's


def test_an_absolute_cap_of_zero_holds_from_the_first_node() -> None:
    pbs = books(blast_radius={**LOOSE, "pool_cordoned": {"soft": 0.5, "hard": 0.9, "hard_max": 0}})
    d = decide(act("k8s.cordon_node", node="p1-000"), world(), History(), pbs)
    assert says(d, Verdict.DENY, "nodes of pool p1 out would be 1 nodes, over the hard cap 0")


def test_workloads_are_read_when_a_group_turns_the_rules_on() -> None:
    on_here = {"name": "g", "match": {"pool": ["p0"]}, "workloads": {"enabled": True}}
    assert GlobalLimits.model_validate(
        {"workloads": {"enabled": False}, "node_groups": [on_here]}
    ).workloads_read
    assert not GlobalLimits.model_validate({"workloads": {"enabled": False}}).workloads_read


# -- a playbook chosen per node group at triage ------------------------------------------------------------

RESERVED_BOOK = """id: xid-fallen-off-bus-reserved
title: XID 79 on reserved capacity (a human drains it)
severity: critical
root_cause: xid-fallen-off-bus
source: "test: the reserved tier's contract says a human takes its nodes out"
match:
  alertnames: [GPUFallenOffBus, GPUXidError]
  xids: [79]
  node_groups: [h100-reserved]
containment:
  max_nodes: 1
  max_gpus: 8
  forbidden_tools: [k8s.drain_node, k8s.uncordon_node, workload-writes, billing-writes]
runbook:
  - name: cordon
    tool: k8s.cordon_node
    params: {node: "${labels.node}"}
    verify: {check: node_unschedulable, timeout: 1m}
  - name: escalate
    tool: escalate.human
    params: {reason: "XID 79 on reserved ${labels.node}: drain it by hand"}
"""


def _reserved_books(tmp_path: Any, group: str = "h100-reserved") -> Any:
    import shutil
    from pathlib import Path

    d = tmp_path / "playbooks"
    shutil.copytree(Path(__file__).resolve().parents[3] / "playbooks", d)
    (d / "xid-fallen-off-bus-reserved.yaml").write_text(
        RESERVED_BOOK.replace("[h100-reserved]", f"[{group}]")
    )
    g = d / "_global.yaml"
    g.write_text(
        g.read_text().replace(
            "node_groups: []", "node_groups:\n  - {name: h100-reserved, match: {tenant_tier: [reserved]}}"
        )
    )
    return d


def test_a_group_names_its_own_playbook_and_it_wins_only_on_a_node_known_to_be_in_it(tmp_path: Any) -> None:
    from supply_agent.mind.triage import match_playbook
    from supply_agent.models.incident import AlertIn

    pbs = load_playbooks(_reserved_books(tmp_path))
    alert = AlertIn(
        source="alertmanager",
        alertname="GPUXidError",
        status="firing",
        labels={"node": "n1", "xid": "79", "gpu": "3"},
        fingerprint="f",
    )
    chosen = [
        getattr(match_playbook(pbs, [alert], group=g), "id", None)
        for g in (None, "", "h100-reserved", "other")
    ]
    # Not read yet, in no group, in the group, in another group.
    assert chosen == [
        "xid-fallen-off-bus",
        "xid-fallen-off-bus",
        "xid-fallen-off-bus-reserved",
        "xid-fallen-off-bus",
    ]


def test_a_match_naming_a_group_the_limits_lack_is_an_error_at_its_line(tmp_path: Any) -> None:
    d = _reserved_books(tmp_path, group="a100-spot")
    with pytest.raises(PlaybookSetError) as info:
        load_playbooks(d)
    text = str(info.value)
    assert "xid-fallen-off-bus-reserved.yaml:9" in text and "match.node_groups" in text
    assert "has no node group 'a100-spot' (it has: h100-reserved)" in text
