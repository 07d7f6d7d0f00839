"""An alert whose node is named otherwise than the cluster registered it is folded under the node the
cluster has: the exporter's own pod (dcgm-exporter off the host network writes its pod's name as
``Hostname``), a host's FQDN for a node registered short, a name the node carries as its
``kubernetes.io/hostname`` label. Against a real sandbox fleet through the official client; what the fold
finds is kept with the stored alert, so every later read of it names the same node."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import FleetSpec
from supply_agent.incidents.fold_reads import FoldReads
from supply_agent.incidents.store import IncidentStore
from supply_agent.models.incident import AlertIn, IncidentState
from tests.support.api_counter import COUNTER
from tools.kubernetes import KubeTools

GPU = {"gpu": "5", "device": "nvidia5", "modelName": "NVIDIA H100 80GB HBM3"}


@pytest.fixture
def fleet_spec() -> FleetSpec:
    return FleetSpec(nodes=12, gpus_per_node=8, pools=2, seed=3, dcgm_exporter=True)


@pytest.fixture
def kube(kubeconfig: Path) -> KubeTools:
    return KubeTools.from_kubeconfig(kubeconfig)


def _exporter_on(server: FleetServer, node: str) -> str:
    pods = [p for p in server.fleet.store.pods_on_node(node) if p["metadata"]["namespace"] == "gpu-operator"]
    assert len(pods) == 1
    return str(pods[0]["metadata"]["name"])


def _page(**labels: str) -> AlertIn:
    return AlertIn(alertname="GPUXIDError", labels={**GPU, **labels}, source="alertmanager")


def test_the_exporters_own_pod_name_leads_to_the_node_it_runs_on(
    fleet_server: FleetServer, kube: KubeTools
) -> None:
    node = "east-h100-00003"
    exporter = _exporter_on(fleet_server, node)
    page = _page(Hostname=exporter, pod=exporter, namespace="gpu-operator", instance="10.42.3.17:9400")
    assert page.node == exporter  # what the labels say; the cluster has no such node
    found = FoldReads(kube).named(page)
    assert found is not None and found[0] == node and f"gpu-operator/{exporter}" in found[1]
    # The same name without the pod label that says it is a pod's: nothing leads to a node.
    assert FoldReads(kube).named(_page(Hostname=exporter)) is None
    # A pod label that is another pod than the name: not taken as the name's pod.
    other = _page(Hostname=exporter, pod="llm-worker-0", namespace="tenant-acme")
    assert FoldReads(kube).named(other) is None


def test_a_hosts_fqdn_is_its_node_registered_by_the_short_name(
    fleet_server: FleetServer, kube: KubeTools
) -> None:
    found = FoldReads(kube).named(_page(Hostname="WEST-A100-00002.gpu.dc1.example.internal"))
    assert found == ("west-a100-00002", "west-a100-00002.gpu.dc1.example.internal without its domain")
    # A domain under a name the cluster does not have either: nothing.
    assert FoldReads(kube).named(_page(Hostname="west-a100-09999.gpu.dc1.example.internal")) is None


def test_a_name_the_node_carries_as_its_hostname_label_is_that_node(
    fleet_server: FleetServer, kube: KubeTools, core: client.CoreV1Api
) -> None:
    # A node registered under another name than its host's (--hostname-override), the kubelet's label
    # keeping the host's.
    core.patch_node("east-h100-00001", {"metadata": {"labels": {"kubernetes.io/hostname": "gpu-rack7-u12"}}})
    found = FoldReads(kube).named(_page(Hostname="gpu-rack7-u12"))
    assert found is not None and found[0] == "east-h100-00001" and "kubernetes.io/hostname" in found[1]


def test_a_name_the_cluster_has_is_kept_and_costs_one_read(
    fleet_server: FleetServer, kube: KubeTools
) -> None:
    counter = COUNTER  # the one the client's request is wrapped with, once per process
    counter.install()
    counter.calls.clear()
    reads = FoldReads(kube)
    counter.on = True
    try:
        for _ in range(3):  # the same node again in the same fold: read once
            assert reads.named(_page(node="east-h100-00000")) is None
    finally:
        counter.on = False
    assert sum(counter.calls.values()) == 1
    # A cluster that cannot be read renames nothing; a resolved alert opens nothing, so it is not read.
    fqdn = "west-a100-00002.example.internal"
    down = FoldReads(kube)
    down.down = "ConnectionRefusedError: refused"
    assert down.named(_page(Hostname=fqdn)) is None
    resolved = AlertIn(alertname="GPUXIDError", status="resolved", labels={**GPU, "Hostname": fqdn})
    assert FoldReads(kube).named(resolved) is None
    assert FoldReads(kube).named(_page(Hostname=fqdn)) is not None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    host=st.one_of(
        st.from_regex(r"\A(east-h100|west-a100)-0000[0-9](\.[a-z]{1,6}){0,2}\Z"),
        st.from_regex(r"\A[a-z][a-z0-9-]{0,20}[a-z0-9](\.[a-z0-9]{1,8}){0,2}\Z"),
    ),
    with_pod=st.booleans(),
)
def test_what_a_name_leads_to_is_always_a_node_of_the_cluster(
    fleet_server: FleetServer, kube: KubeTools, host: str, with_pod: bool
) -> None:
    labels = {"Hostname": host, **({"pod": host, "namespace": "gpu-operator"} if with_pod else {})}
    found = FoldReads(kube).named(_page(**labels))
    if found is not None:
        assert fleet_server.fleet.store.get("nodes", "", found[0]) is not None
        assert found[0] != host


def test_the_name_found_is_kept_with_the_stored_alert(tmp_path: Path) -> None:
    store = IncidentStore.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    page = _page(Hostname="west-a100-00002.gpu.example.internal")
    now = datetime(2026, 12, 7, tzinfo=UTC)
    assert store.record_alert(page, page.model_dump(mode="json"), now)
    store.name_node(page.fingerprint, "west-a100-00002.gpu.example.internal", "west-a100-00002")
    state = IncidentState(incident_id="inc-1", alerts=[page], opened_at=now)
    store.open_incident(state, "t")
    store.link_alerts([page], "inc-1")
    (back,) = store.alerts_for("inc-1")
    assert back.node == "west-a100-00002" and back.labels["Hostname"] == page.labels["Hostname"]
    assert back.fingerprint == page.fingerprint
    assert store.alerting_nodes(now + timedelta(seconds=1), timedelta(minutes=5)) == {"west-a100-00002"}
