"""Incident files name racks, leaf switches, idle nodes and the pod on a GPU, and the component faults
(rack-cooling, rack-power, switch-down, driver-rollout) by those names; the schema says clearly what is
wrong, and the bindings resolve against a real generated fleet to what the Kubernetes API shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from evals.schema import IncidentFileError, load_incident
from evals.world import ReplayError, build_fleet, clear_requests, fault_requests, resolve
from sandbox.fleet.admin import AdminClient
from sandbox.fleet.clock import SimClock
from sandbox.fleet.world import Fleet, FleetSpec
from sandbox.fleet.world.spec import DRIVER_LABEL, GPU_INDICES_ANNOTATION, RACK_LABEL, SWITCH_LABEL

FLEET = {"nodes": 48, "pools": 2, "seed": 7}


def incident(
    bind: dict[str, Any], timeline: list[dict[str, Any]] | None = None, **fleet: Any
) -> dict[str, Any]:
    return {
        "id": "topology-test",
        "title": "a topology binding test",
        "class": "test",
        "source": {"kind": "on-call-pattern", "ref": "tests", "what_happened": "nothing happened, in a test"},
        "world": {"fleet": {**FLEET, **fleet}, "bind": bind},
        "timeline": [*(timeline or []), {"at": "1m", "alerts": {}}],
        "expect": {"outcome": "no_action", "incidents": 0, "root_cause": "no-fault"},
    }


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / f"{data['id']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_incident(path), path


def error_of(tmp_path: Path, data: dict[str, Any]) -> str:
    with pytest.raises(IncidentFileError) as err:
        load(tmp_path, data)
    return str(err.value)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    f = Fleet(FleetSpec(**FLEET), SimClock("manual"))
    f.generate()
    return f


# -- bindings resolve ---------------------------------------------------------------------------------


def test_rack_and_switch_bindings_resolve_to_their_names(tmp_path: Path, fleet: Fleet) -> None:
    inc, _ = load(
        tmp_path,
        incident(
            {
                "r0": {"rack": {"pool": 0, "index": 0}},
                "r1": {"rack": {"pool": 1, "index": -1}},
                "s1": {"switch": {"pool": 0, "index": 1}},
                "s2": {"switch": {"pool": 0, "index": 2}},
            }
        ),
    )
    names = resolve(inc, fleet)
    assert names == {
        "r0": "east-h100-rack-000",
        "r1": "west-a100-rack-001",
        "s1": "east-h100-leaf-001",
        "s2": "east-h100-leaf-002",
    }
    # Each name is a label value the cluster has.
    for label, value in ((RACK_LABEL, names["r0"]), (SWITCH_LABEL, names["s2"])):
        assert any(n["metadata"]["labels"][label] == value for n in fleet.store.items("nodes"))


def test_a_component_index_out_of_range_says_how_many_there_are(tmp_path: Path, fleet: Fleet) -> None:
    inc, _ = load(tmp_path, incident({"r": {"rack": {"pool": 0, "index": 2}}}))
    with pytest.raises(ReplayError, match=r"world.bind.r: pool 0 has 2 racks, no index 2"):
        resolve(inc, fleet)
    inc, _ = load(tmp_path, incident({"s": {"switch": {"pool": 3}}}))
    with pytest.raises(ReplayError, match="the fleet has 2 pool"):
        resolve(inc, fleet)


def test_an_idle_node_binding_finds_a_node_no_tenant_pod_runs_on(tmp_path: Path) -> None:
    # fill 0.3: tenants fill only part of each pool, so some nodes stay empty.
    inc, path = load(
        tmp_path,
        incident(
            {
                "idle": {"node": {"pool": 0, "idle": True}},
                "last": {"node": {"pool": 0, "idle": True, "index": -1}},
            },
            fill=0.3,
        ),
    )
    fleet = build_fleet(inc, path)
    names = resolve(inc, fleet)
    for name in ("idle", "last"):
        node = names[name]
        assert isinstance(node, str)
        tenants = [
            p for p in fleet.store.pods_on_node(node) if p["metadata"]["namespace"].startswith("tenant-")
        ]
        assert tenants == []
    assert names["idle"] != names["last"]
    # and not every node is idle: the binding chose
    assert any(
        p["metadata"]["namespace"].startswith("tenant-") and p["spec"].get("nodeName")
        for p in fleet.store.items("pods")
    )


def test_an_idle_node_binding_errors_when_every_node_is_busy(tmp_path: Path) -> None:
    inc, path = load(tmp_path, incident({"idle": {"node": {"pool": 0, "idle": True}}}, nodes=4, fill=1.0))
    with pytest.raises(ReplayError, match=r"world.bind.idle: pool 0 has 0 idle nodes \(no tenant pod\)"):
        resolve(inc, build_fleet(inc, path))


def test_the_gpu_pod_binding_is_the_pod_the_scheduler_put_on_that_gpu(tmp_path: Path, fleet: Fleet) -> None:
    node = "east-h100-00002"
    busy = [g for g, owner in enumerate(fleet._gpu_owner[node]) if owner]
    assert busy, "the fixture's node has work on it"
    # YAML 1.1 reads an unquoted `on:` as true: both spellings work.
    text = yaml.safe_dump(incident({"n": {"node": {"pool": 0, "index": 2}}}), sort_keys=False)
    text = text.replace("  bind:\n", f"  bind:\n    p: {{gpu_pod: {{on: $n, gpu: {busy[-1]}}}}}\n")
    text = text.replace("  bind:\n", f'  bind:\n    q: {{gpu_pod: {{"on": $n, gpu: {busy[0]}}}}}\n')
    path = tmp_path / "topology-test.yaml"
    path.write_text(text)
    inc = load_incident(path)
    names = resolve(inc, fleet)
    for key, gpu in (("p", busy[-1]), ("q", busy[0])):
        ns, pod = str(names[key]).split("/")
        obj = fleet.store.get("pods", ns, pod)
        assert obj is not None and obj["spec"]["nodeName"] == node
        assert str(gpu) in obj["metadata"]["annotations"][GPU_INDICES_ANNOTATION].split(",")


def test_a_gpu_pod_on_an_idle_gpu_is_a_clear_error(tmp_path: Path) -> None:
    inc, path = load(
        tmp_path,
        incident(
            {"n": {"node": {"pool": 0, "idle": True}}, "p": {"gpu_pod": {"on": "$n", "gpu": 3}}}, fill=0.3
        ),
    )
    fleet = build_fleet(inc, path)
    with pytest.raises(
        ReplayError, match=r"world.bind.p: no tenant pod runs on GPU 3 of east-h100-\d+ \(the GPU is idle\)"
    ):
        resolve(inc, fleet)
    inc, path = load(
        tmp_path, incident({"n": {"node": {"pool": 0}}, "p": {"gpu_pod": {"on": "$n", "gpu": 8}}})
    )
    with pytest.raises(ReplayError, match=r"has GPUs 0\.\.7, not 8"):
        resolve(inc, fleet)


def test_pods_bind_after_nodes_whatever_the_file_order(tmp_path: Path, fleet: Fleet) -> None:
    inc, _ = load(
        tmp_path, incident({"p": {"gpu_pod": {"on": "$n", "gpu": 0}}, "n": {"node": {"pool": 0, "index": 2}}})
    )
    names = resolve(inc, fleet)
    assert list(names) == ["p", "n"]  # the file's order
    ns, pod = str(names["p"]).split("/")
    assert fleet.store.get("pods", ns, pod)["spec"]["nodeName"] == names["n"]  # type: ignore[index]


def test_a_spread_node_list_takes_every_step_th_node(tmp_path: Path, fleet: Fleet) -> None:
    inc, _ = load(tmp_path, incident({"wave": {"nodes": {"pool": 0, "count": 4, "start": 1, "step": 5}}}))
    assert resolve(inc, fleet)["wave"] == [f"east-h100-{i:05d}" for i in (1, 6, 11, 16)]
    inc, _ = load(tmp_path, incident({"wave": {"nodes": {"pool": 0, "count": 6, "start": 1, "step": 5}}}))
    with pytest.raises(ReplayError, match="too few nodes for 6"):
        resolve(inc, fleet)


# -- the schema: clear errors -------------------------------------------------------------------------

RACK = {"r": {"rack": {"pool": 0}}}
LEAF = {"s": {"switch": {"pool": 0, "index": 2}}}
NODE = {"n": {"node": {"pool": 0}}}
NODES = {"ns": {"nodes": {"pool": 0, "count": 3}}}


@pytest.mark.parametrize(
    ("bind", "fault", "message"),
    [
        (
            RACK,
            {"kind": "rack-cooling"},
            "fault rack-cooling: give exactly one of rack and nodes (none given)",
        ),
        ({**RACK, **NODES}, {"kind": "rack-power", "rack": "$r", "nodes": "$ns"}, "(this one: rack, nodes)"),
        (
            LEAF,
            {"kind": "switch-down", "nodes": "$s"},
            "fault switch-down: give exactly one of switch (this one: nodes)",
        ),
        (RACK, {"kind": "driver-rollout", "rack": "$r"}, "fault driver-rollout: give exactly one of nodes"),
        (
            RACK,
            {"kind": "rack-cooling", "rack": "$r", "gpu": 0},
            "fault rack-cooling covers whole nodes: no gpu",
        ),
        (
            RACK,
            {"kind": "rack-power", "rack": "$r", "driver": "560.35.03"},
            "code and driver belong to driver-rollout",
        ),
        (
            NODE,
            {"kind": "xid", "node": "$n", "gpu": 0, "code": 79, "driver": "560"},
            "fault xid: driver only with",
        ),
        (NODE, {"kind": "rack-cooling", "rack": "$n"}, "timeline[0].fault.rack: $n is a node, expected rack"),
        (
            RACK,
            {"kind": "switch-down", "switch": "$r"},
            "timeline[0].fault.switch: $r is a rack, expected switch",
        ),
        (RACK, {"kind": "rack-cooling", "rack": "$nope"}, "$nope is not bound"),
    ],
)
def test_bad_component_fault_steps_say_what_is_missing(
    tmp_path: Path, bind: dict[str, Any], fault: dict[str, Any], message: str
) -> None:
    assert message in error_of(tmp_path, incident(bind, [{"at": "0s", "fault": fault}]))


def test_bad_bindings_say_what_is_wrong(tmp_path: Path) -> None:
    both = incident({"x": {"rack": {"pool": 0}, "switch": {"pool": 0}}})
    assert (
        "a binding is exactly one of node, nodes, jobset_node, lws_node, tenant_pod, gpu_pod, daemon_pod, rack, switch (this one: rack, switch)"
        in (error_of(tmp_path, both))
    )
    assert "$r is a rack, expected node" in error_of(
        tmp_path, incident({**RACK, "p": {"gpu_pod": {"on": "$r", "gpu": 0}}})
    )
    assert "gpu_pod.gpu" in error_of(tmp_path, incident({**NODE, "p": {"gpu_pod": {"on": "$n"}}}))


# -- steps become the fleet's admin calls ---------------------------------------------------------------


@pytest.fixture
def fleet_spec() -> FleetSpec:
    """The served fleet (conftest's `core` and `admin`) is the incident's: the same shape and seed."""
    return FleetSpec(**FLEET)


def test_fault_and_clear_steps_become_admin_calls_the_fleet_applies(
    tmp_path: Path, core: client.CoreV1Api, admin: AdminClient
) -> None:
    data = incident(
        {**RACK, **LEAF, "wave": {"nodes": {"pool": 1, "count": 3, "step": 4}}, **NODE},
        [
            {"at": "0s", "fault": {"kind": "rack-cooling", "rack": "$r", "detail": "CRAH 2 on $r"}},
            {"at": "0s", "fault": {"kind": "switch-down", "switch": "$s"}},
            {
                "at": "0s",
                "fault": {"kind": "driver-rollout", "nodes": "$wave", "driver": "560.35.03", "code": 119},
            },
            {"at": "0s", "fault": {"kind": "thermal", "nodes": "$wave", "gpu": 1}},
            {"at": "30s", "clear": "$r"},
            {"at": "30s", "clear": "$s"},
            {"at": "30s", "clear": "$wave"},
        ],
    )
    inc, path = load(tmp_path, data)
    names = resolve(inc, build_fleet(inc, path))
    steps = [s for s in inc.timeline if s.fault]
    calls = [fault_requests(s.fault, names) for s in steps]
    assert calls[0] == [
        {
            "kind": "rack-cooling",
            "gpu": None,
            "code": None,
            "detail": "CRAH 2 on east-h100-rack-000",
            "rack": "east-h100-rack-000",
            "driver": None,
        }
    ]
    assert calls[1][0]["switch"] == "east-h100-leaf-002"
    assert calls[2] == [
        {
            "kind": "driver-rollout",
            "gpu": None,
            "code": 119,
            "detail": None,
            "nodes": names["wave"],
            "driver": "560.35.03",
        }
    ]
    assert [c["node"] for c in calls[3]] == names["wave"]  # a node fault on a list: one call per node
    clears = [clear_requests(s.clear, inc, names) for s in inc.timeline if s.clear]
    assert clears == [
        [{"rack": "east-h100-rack-000"}],
        [{"switch": "east-h100-leaf-002"}],
        [{"node": n} for n in names["wave"]],
    ]
    assert clear_requests("all", inc, names) == [{}]
    # The same calls against a served fleet (the same seed): the world shows them.
    for requests in calls:
        for request in requests:
            admin.inject(**request)
    rolled = core.list_node(label_selector=f"{DRIVER_LABEL}=560.35.03").items
    assert sorted(n.metadata.name for n in rolled) == names["wave"]
    kinds = {f["kind"] for f in admin.request("GET", "faults")}
    assert {"rack-cooling", "switch-down", "driver-rollout", "thermal", "partition", "xid"} <= kinds
    for requests in clears:
        for request in requests:
            admin.clear(**request)
    assert admin.request("GET", "faults") == []


def test_the_holdout_topology_incidents_load_and_resolve_to_their_components() -> None:
    root = Path(__file__).resolve().parents[3] / "evals" / "holdout"

    def placed(name: str) -> tuple[Fleet, Any, dict[str, Any]]:
        path = root / f"{name}.yaml"
        inc = load_incident(path)
        fleet = build_fleet(inc, path)
        return fleet, inc, resolve(inc, fleet)

    def labels(fleet: Fleet, nodes: list[str], label: str) -> set[str]:
        return {fleet.node(n)["metadata"]["labels"][label] for n in nodes}

    fleet, inc, names = placed("holdout-leaf-switch-down-two-racks")
    behind = fault_requests(inc.timeline[0].fault, names)
    assert behind[0]["switch"] == names["leaf"] == "east-h100-leaf-002"
    leaf = [
        n["metadata"]["name"]
        for n in fleet.store.items("nodes")
        if n["metadata"]["labels"][SWITCH_LABEL] == names["leaf"]
    ]
    assert len(leaf) == 8 and labels(fleet, leaf, RACK_LABEL) == {"east-h100-rack-000", "east-h100-rack-001"}

    fleet, inc, names = placed("holdout-driver-rollout-same-xid")
    wave = names["wave"]
    assert len(wave) == 6 and len(labels(fleet, wave, RACK_LABEL)) == 2
    for label, most in ((RACK_LABEL, 3), (SWITCH_LABEL, 2)):  # three of a rack's 16, two of a leaf's 8
        counts = [
            sum(fleet.node(n)["metadata"]["labels"][label] == v for n in wave)
            for v in labels(fleet, wave, label)
        ]
        assert max(counts) <= most, label

    fleet, inc, names = placed("holdout-rack-cooling-failure")
    assert labels(fleet, names["hot"], RACK_LABEL) == {"east-h100-rack-000"}
    fleet, inc, names = placed("holdout-rack-power-loss")
    assert labels(fleet, names["pdu"], RACK_LABEL) == {"west-a100-rack-001"}

    fleet, inc, names = placed("holdout-same-rack-unrelated-faults")
    assert labels(fleet, [names["a"], names["b"]], RACK_LABEL) == {"east-h100-rack-000"}
    assert str(names["victim"]).startswith("tenant-acme/")  # the customer the file expects to be told


# -- the GPU Operator's dcgm-exporter ------------------------------------------------------------------


def test_a_daemon_pod_binding_names_the_exporter_pod_on_its_node_and_the_api_shows_it_there(
    tmp_path: Path,
) -> None:
    bind = {
        "n": {"node": {"pool": 1, "index": 2}},
        "e": {"daemon_pod": {"daemonset": "gpu-operator/nvidia-dcgm-exporter", "on": "$n"}},
    }
    inc, path = load(tmp_path, incident(bind, dcgm_exporter=True))
    fleet = build_fleet(inc, path)
    names = resolve(inc, fleet)
    pod = fleet.store.get("pods", "gpu-operator", str(names["e"]))
    assert pod is not None and pod["spec"]["nodeName"] == names["n"]
    assert pod["metadata"]["ownerReferences"][0]["name"] == "nvidia-dcgm-exporter"
    # One exporter pod per node, and its DaemonSet's status counts them.
    ds = fleet.store.get("daemonsets", "gpu-operator", "nvidia-dcgm-exporter")
    assert ds is not None and ds["status"]["numberReady"] == FLEET["nodes"]
    # A deleted exporter pod is replaced on its node by its DaemonSet, under a new name.
    fleet.delete_pod("gpu-operator", str(names["e"]), grace=0)
    again = [
        p for p in fleet.store.pods_on_node(str(names["n"])) if p["metadata"]["namespace"] == "gpu-operator"
    ]
    assert len(again) == 1 and again[0]["metadata"]["name"] != names["e"]


def test_a_daemon_pod_binding_without_the_exporter_says_which_setting_makes_it(tmp_path: Path) -> None:
    bind = {
        "n": {"node": {"pool": 0}},
        "e": {"daemon_pod": {"daemonset": "gpu-operator/nvidia-dcgm-exporter", "on": "$n"}},
    }
    inc, path = load(tmp_path, incident(bind))
    with pytest.raises(
        ReplayError,
        match=r"world.bind.e: DaemonSet gpu-operator/nvidia-dcgm-exporter has no pod on .*dcgm_exporter",
    ):
        resolve(inc, build_fleet(inc, path))
    assert "world.bind.e.daemon_pod.on: $r is a rack, expected node" in error_of(
        tmp_path, incident({**RACK, "e": {"daemon_pod": {"daemonset": "a/b", "on": "$r"}}})
    )
