"""An alert no playbook knows by name and labels (a stock rule's, with the XID only in its value): what
its node shows becomes the incident's alert, and the node is named by whatever label names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supply_agent.mind.triage import as_known, match_playbook, node_fault, pod_fault
from supply_agent.models.incident import AlertIn, Evidence
from supply_agent.models.labels import load_node_labels, node_from_labels
from supply_agent.policy import load_playbooks

PLAYBOOKS = load_playbooks(Path(__file__).resolve().parents[3] / "playbooks")
STOCK = {"gpu": "7", "device": "nvidia7", "modelName": "NVIDIA H100 80GB HBM3", "severity": "critical"}


def _health(node: str, *gpus: dict[str, Any]) -> Evidence:
    full = [{"index": 0, "uuid": "GPU-0", "lost": False, "xid_events": [], "pods": []}]
    full += [{"index": 7, "uuid": "GPU-7", "lost": False, "xid_events": [], "pods": [], **g} for g in gpus]
    return Evidence(
        tool="nvml.gpu_health",
        params={"node": node},
        ok=True,
        summary="",
        result={"node": node, "available": True, "report": {"node": node, "gpus": full}},
    )


def _node(node: str, **conditions: str) -> Evidence:
    conds = [{"type": k, "status": v} for k, v in {"Ready": "True", **conditions}.items()]
    return Evidence(
        tool="k8s.get_node",
        params={"node": node},
        ok=True,
        summary="",
        result={"name": node, "labels": {}, "conditions": conds, "unschedulable": False},
    )


XID = "xid_events"


@pytest.mark.parametrize(
    ("gpu", "alertname", "xid", "playbook"),
    [
        ({"lost": True}, "GPUXidError", "79", "xid-fallen-off-bus"),
        ({"ecc_uncorrected_volatile": 3}, "GPUEccUncorrectable", "48", "ecc-uncorrectable"),
        ({"ecc_uncorrected_volatile": 3, XID: [{"xid": 95, "gpu_index": 7, "observed_at": "2026-01-01T00:00:00Z"}]},
         "GPUXidError", "95", "xid-ecc"),
        ({"ecc_uncorrected_volatile": 1, XID: [{"xid": 94, "gpu_index": 7, "observed_at": "2026-01-01T00:00:00Z"}]},
         "GPUXidError", "94", "xid-ecc-contained"),
        ({"remapped_rows": {"pending": True}}, "GPURowRemapPending", "63", "xid-row-remap"),
        ({"remapped_rows": {"failure": True}}, "GPURowRemapFailure", "64", "xid-row-remap-failure"),
        ({XID: [{"xid": 13, "gpu_index": 7, "observed_at": "2026-01-01T00:00:00Z"}]}, "GPUXidError", "13",
         "xid-application"),
        ({"clock_event_reasons": ["HwThermalSlowdown"]}, "GPUThermalThrottling", None, "thermal-throttling"),
    ],
)  # fmt: skip
def test_a_stock_rules_page_is_handled_as_what_its_gpu_shows(
    gpu: dict[str, Any], alertname: str, xid: str | None, playbook: str
) -> None:
    page = AlertIn(alertname="GPUXIDError", labels={"kubernetes_node": "gpu-a-3", **STOCK})
    assert page.node == "gpu-a-3"
    assert match_playbook(PLAYBOOKS, [page]) is None  # by name and labels alone, nothing knows it
    found = node_fault([_node("gpu-a-3"), _health("gpu-a-3", gpu)], page)
    assert found is not None and found.source == "agent" and found.alertname == alertname
    assert found.labels["node"] == "gpu-a-3" and found.labels["gpu"] == "7"
    assert found.labels.get("xid") == xid
    assert "gpu-a-3" in found.annotations["summary"] and found.annotations["derived_from"]
    chosen = match_playbook(PLAYBOOKS, [found, page])
    assert chosen is not None and chosen.id == playbook


def test_the_alerts_own_gpu_comes_first_and_a_quiet_node_says_nothing() -> None:
    page = AlertIn(alertname="GPUXIDError", labels={"Hostname": "gpu-a-3", **STOCK})
    lost_other = _health("gpu-a-3", {XID: [{"xid": 13, "gpu_index": 7, "observed_at": "x"}]})
    lost_other.result["report"]["gpus"][0]["lost"] = True  # GPU 0 is lost; the page is about GPU 7
    found = node_fault([lost_other], page)
    assert found is not None and (found.labels["gpu"], found.labels["xid"]) == ("7", "13")
    assert node_fault([_node("gpu-a-3"), _health("gpu-a-3")], page) is None
    by_uuid = AlertIn(alertname="GPUXIDError", labels={"Hostname": "gpu-a-3", "UUID": "GPU-7"})
    found = node_fault([lost_other], by_uuid)  # no index, dcgm-exporter's UUID: still GPU 7 first
    assert found is not None and found.labels["gpu"] == "7"
    assert node_fault([_health("gpu-b-1", {"lost": True})], page) is None  # another node's report
    unavailable = Evidence(
        tool="nvml.gpu_health", params={"node": "gpu-a-3"}, ok=True, summary="", result={"available": False}
    )
    assert node_fault([unavailable], page) is None


def test_a_node_alert_is_answered_by_the_nodes_conditions_not_its_gpus() -> None:
    page = AlertIn(alertname="NodeHighLoad", labels={"instance": "gpu-a-3:9100", "severity": "warning"})
    assert page.node == "gpu-a-3"
    assert node_fault([_node("gpu-a-3"), _health("gpu-a-3", {"lost": True})], page) is None
    down = node_fault([_node("gpu-a-3", Ready="Unknown")], page)
    assert down is not None and down.alertname == "KubeNodeNotReady"
    assert match_playbook(PLAYBOOKS, [down, page]) is not None
    disk = node_fault([_node("gpu-a-3", DiskPressure="True")], page)
    assert disk is not None and disk.alertname == "KubeNodeDiskPressure"


@pytest.mark.parametrize(
    ("labels", "node"),
    [
        ({"node": "a", "kubernetes_node": "b", "Hostname": "c"}, "a"),
        ({"kubernetes_node": "b", "Hostname": "c"}, "b"),
        ({"Hostname": "c", "instance": "d:9400"}, "c"),
        ({"exported_node": "e"}, "e"),
        ({"node": "exporter-host", "exported_node": "gpu-e"}, "gpu-e"),  # honor_labels false: the series'
        (
            {"pod": "p", "namespace": "n", "kubernetes_node": "ksm-host"},
            None,
        ),  # a pod's series: the cluster says
        ({"pod": "p", "namespace": "n", "gpu": "1", "Hostname": "gpu-h"}, "gpu-h"),  # a GPU's series names it
        ({"instance": "gpu-node-3.dc1:9100"}, "gpu-node-3.dc1"),
        ({"instance": "10.0.4.7:9100"}, None),  # an address is not a node's name
        ({"instance": "[fd00::1]:9100"}, None),
        ({"Hostname": "Not_A_Node"}, None),
        ({"Hostname": "GPU-Node-3"}, "gpu-node-3"),  # the kubelet lowercases the host's name
        ({"node": "GPU-Node-3"}, "GPU-Node-3"),  # a node label is the node's name as it is
        ({"pod": "p", "namespace": "n"}, None),
        ({"pod": "p", "namespace": "n", "instance": "kube-state-metrics.monitoring.svc:8080"}, None),
    ],
)
def test_the_node_is_named_by_the_first_label_that_names_one(
    labels: dict[str, str], node: str | None
) -> None:
    assert AlertIn(alertname="X", labels=labels).node == node


@given(
    st.dictionaries(st.sampled_from(["kubernetes_node", "Hostname", "instance", "nodename", "x"]), st.text())
)
def test_a_derived_node_is_always_one_labels_value_and_never_an_address(labels: dict[str, str]) -> None:
    found = node_from_labels(labels)
    if found is None:
        return
    node, label = found
    value = labels[label].strip().lower() if label != "node" else labels[label].strip()
    assert value == node or value.startswith(node + ":")
    assert ":" not in node and not node.replace(".", "").isdigit()


def test_a_bad_vocabulary_file_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "node_labels.yaml"
    bad.write_text("node_labels:\n  - label: node\n")
    with pytest.raises(ValueError, match=r"node_labels\.yaml: node_labels\.0\.source"):
        load_node_labels(bad)
    bad.write_text(
        "node_labels:\n  - {label: node, source: kube-state-metrics}\n  - {label: node, source: twice over}\n"
    )
    with pytest.raises(ValueError, match="listed twice"):
        load_node_labels(bad)
    assert [n.label for n in load_node_labels()][:2] == ["exported_node", "node"]


def _pod(namespace: str, name: str, **status: Any) -> Evidence:
    result = {"namespace": namespace, "name": name, "node": "gpu-a-3", "phase": "Running", "ready": False}
    return Evidence(
        tool="k8s.get_pod",
        params={"namespace": namespace, "pod": name},
        ok=True,
        summary="",
        result={**result, "restarts": 4, **status},
    )


@pytest.mark.parametrize(
    ("status", "alertname", "playbook"),
    [
        ({"waiting_reason": "CrashLoopBackOff", "last_termination_reason": "Error"}, "KubePodCrashLooping",
         "tenant-crashloop"),
        ({"waiting_reason": "CrashLoopBackOff", "last_termination_reason": "OOMKilled"}, "KubePodOOMKilled",
         "tenant-oomkilled"),
    ],
)  # fmt: skip
def test_a_community_rules_pod_page_is_handled_as_what_the_pod_shows(
    status: dict[str, Any], alertname: str, playbook: str
) -> None:
    page = AlertIn(
        alertname="KubernetesPodCrashLooping",
        labels={
            "namespace": "acme",
            "pod": "train-0",
            "job": "kube-state-metrics",
            "instance": "10.2.0.9:8080",
        },
    )
    assert page.node is None and page.pod == ("acme", "train-0")  # the exporter's address names no node
    assert match_playbook(PLAYBOOKS, [page]) is None
    found = pod_fault([_pod("acme", "train-0", **status)], page)
    assert found is not None and found.alertname == alertname and found.source == "agent"
    assert (found.labels["namespace"], found.labels["pod"], found.labels["node"]) == (
        "acme",
        "train-0",
        "gpu-a-3",
    )
    assert "instance" not in found.labels and "job" not in found.labels
    chosen = match_playbook(PLAYBOOKS, [found, page])
    assert chosen is not None and chosen.id == playbook


def test_a_healthy_or_unread_or_other_pod_says_nothing() -> None:
    page = AlertIn(alertname="KubernetesPodNotHealthy", labels={"namespace": "acme", "pod": "train-0"})
    assert pod_fault([_pod("acme", "train-0", ready=True, restarts=0)], page) is None
    assert pod_fault([_pod("acme", "other", waiting_reason="CrashLoopBackOff")], page) is None
    assert pod_fault([], page) is None
    # OOMKilled once long ago and never restarted since is not a loop
    assert pod_fault([_pod("acme", "train-0", last_termination_reason="OOMKilled", restarts=0)], page) is None
    # nor is one OOMKilled last week that has been Running and ready since
    ready = _pod("acme", "train-0", last_termination_reason="OOMKilled", restarts=1, ready=True)
    assert pod_fault([ready], page) is None


def test_a_shared_component_reads_an_unknown_gpu_alert_as_a_gpu_error_of_unknown_code() -> None:
    stock = AlertIn(alertname="GPUXIDError", labels={"Hostname": "gpu-a-3", "xid": "x", **STOCK})
    read = as_known(stock, PLAYBOOKS)  # unread: either GPU alert of unknown detail
    assert [name for name, _ in read] == ["GPUXidError", "GPUThermalThrottling"]
    assert all("xid" not in labels and labels["node"] == "gpu-a-3" for _, labels in read)
    hot = AlertIn(alertname="GPUThermalThrottling", labels={"node": "gpu-a-3", "gpu": "7"}, source="agent")
    assert as_known(stock, PLAYBOOKS, lambda a: (True, hot)) == [("GPUThermalThrottling", hot.labels)]
    assert as_known(stock, PLAYBOOKS, lambda a: (True, None)) == []  # read, healthy: no component's
    known = AlertIn(alertname="GPUXidError", labels={"node": "gpu-a-3", "xid": "79", **STOCK})
    assert as_known(known, PLAYBOOKS) == [("GPUXidError", known.labels)]  # a known alert is read as it is
    node_alert = AlertIn(alertname="NodeHighLoad", labels={"node": "gpu-a-3"})
    assert as_known(node_alert, PLAYBOOKS) == [("NodeHighLoad", node_alert.labels)]  # not a GPU's series
    assert match_playbook(PLAYBOOKS, [stock]) is None  # one node's incident reads the GPU instead
    pooled = match_playbook(PLAYBOOKS, [stock], component="pool")
    assert pooled is not None and pooled.id == "pool-wide"
