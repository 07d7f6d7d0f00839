"""The read/write credential split, enforced by the sandbox fleet with deploy/base/rbac.yaml.

The fleet issues three tokens (admin, reader, writer); its kubeconfig keeps the admin current and adds
the contexts sandbox-reader and sandbox-writer, which the agent picks for its reads and for the guarded
executor's writes. Everything here goes over HTTP with the official client, kubectl or the agent.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from sandbox.fleet.admin import AdminClient, AdminError
from sandbox.fleet.server import FleetServer, write_kubeconfig
from sandbox.fleet.world import AGENT_NAMESPACE, Fleet
from supply_agent.hands.wiring import credentials
from supply_agent.settings import Settings
from tests.conftest import kubectl_binary
from tests.support.agent_harness import harness
from tools.kubernetes import KubeTools, ToolError

READER_USER = "system:serviceaccount:supply-agent-system:supply-agent-reader"
WRITER_USER = "system:serviceaccount:supply-agent-system:supply-agent-writer"
FREEZE, BREAKER = "supply-agent-freeze", "supply-agent-circuit-breaker"
READ_VERBS = {"get", "list", "watch"}
# What the write tools read before they write (cordon: is it cordoned already; drain: the pods on the
# node; restart and scale: the current deployment and scale; the latches: nothing), with the writer's
# own credentials: deploy/base/rbac.yaml grants the writer exactly these reads.
# The writer's reads: what write tools read before they write, and the start-up check that the write
# credentials answer (`list nodes`, limit 1).
WRITE_TOOL_READS = {"get nodes", "list pods", "get deployments", "get deployments/scale", "list nodes"}


# -- clients ------------------------------------------------------------------------------------------
def api_for(kubeconfig: Path, context: str | None) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig), context=context)


@pytest.fixture
def reader(kubeconfig: Path) -> Iterator[Any]:
    api = api_for(kubeconfig, "sandbox-reader")
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()


@pytest.fixture
def writer(kubeconfig: Path) -> Iterator[Any]:
    api = api_for(kubeconfig, "sandbox-writer")
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()


def sandbox_as(server: FleetServer, identity: str) -> AdminClient:
    """The fleet's /sandbox/v1 endpoints with one identity's token."""
    return AdminClient(server.url, server.tokens[identity], server.cert.ca_pem)


def requests_of(server: FleetServer) -> dict[str, Any]:
    return dict(sandbox_as(server, "admin").request("GET", "requests"))


def tenant_pod(fleet: Fleet) -> tuple[str, str, str]:
    """(namespace, name, node) of a running tenant pod."""
    for p in sorted(fleet.store.items("pods"), key=lambda o: o["metadata"]["name"]):
        if p["metadata"]["namespace"].startswith("tenant-") and p["spec"].get("nodeName"):
            return p["metadata"]["namespace"], p["metadata"]["name"], p["spec"]["nodeName"]
    raise LookupError("no tenant pod")


def tenant_deployment(fleet: Fleet) -> tuple[str, str]:
    d = min(fleet.store.items("deployments"), key=lambda o: o["metadata"]["name"])
    return d["metadata"]["namespace"], d["metadata"]["name"]


def agent_pod(fleet: Fleet) -> str:
    return str(min(p["metadata"]["name"] for p in fleet.store.items("pods", AGENT_NAMESPACE)))


def forbidden(call: Callable[[], Any]) -> dict[str, Any]:
    """The Status body of a call that must be refused with 403."""
    with pytest.raises(ApiException) as exc:
        call()
    assert exc.value.status == 403, exc.value.body
    body: dict[str, Any] = json.loads(exc.value.body or "{}")
    assert (body["kind"], body["apiVersion"], body["status"]) == ("Status", "v1", "Failure")
    assert (body["reason"], body["code"]) == ("Forbidden", 403)
    return body


def configmap(name: str, data: dict[str, str]) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=data)


def node_obj(fleet: Fleet, name: str) -> dict[str, Any]:
    obj = fleet.store.get("nodes", "", name)
    assert obj is not None, name
    return dict(obj)


def latches(core: client.CoreV1Api) -> None:
    for name, data in ((FREEZE, {"frozen": "false"}), (BREAKER, {"status": "CLOSED"})):
        core.create_namespaced_config_map(AGENT_NAMESPACE, configmap(name, data))


# -- the kubeconfig -----------------------------------------------------------------------------------
def test_the_kubeconfig_keeps_the_admin_current_and_adds_the_agents_three_contexts(
    kubeconfig: Path, fleet_server: FleetServer
) -> None:
    cfg = yaml.safe_load(kubeconfig.read_text())
    assert cfg["current-context"] == "sandbox"
    contexts = {c["name"]: c["context"] for c in cfg["contexts"]}
    users = {u["name"]: u["user"]["token"] for u in cfg["users"]}
    assert {n: c["user"] for n, c in contexts.items()} == {
        "sandbox": "sandbox-admin",
        "sandbox-reader": "supply-agent-reader",
        "sandbox-writer": "supply-agent-writer",
        "sandbox-agent": "supply-agent",  # its pods' own: the singletons' Leases
    }
    tokens = fleet_server.tokens
    assert users == {
        "sandbox-admin": tokens["admin"],
        "supply-agent-reader": tokens["reader"],
        "supply-agent-writer": tokens["writer"],
        "supply-agent": tokens["agent"],
    }
    assert len(set(tokens.values())) == 4 and fleet_server.token == tokens["admin"]
    assert stat.S_IMODE(os.stat(kubeconfig).st_mode) == 0o600
    assert AdminClient.from_kubeconfig(kubeconfig).token == tokens["admin"]  # the sandbox CLI: unchanged


def test_build_environment_picks_the_sandbox_contexts_unless_told_otherwise(
    kubeconfig: Path, fleet_server: FleetServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("SUPPLY_AGENT_KUBE_CONTEXT", "SUPPLY_AGENT_WRITE_CONTEXT", "SUPPLY_AGENT_WRITE_KUBECONFIG"):
        monkeypatch.delenv(var, raising=False)
    assert credentials(Settings(), kubeconfig) == ("sandbox-reader", kubeconfig, "sandbox-writer")
    # Configured credentials win, as on a real cluster.
    assert credentials(Settings(kube_context="sandbox"), kubeconfig) is None
    assert credentials(Settings(write_context="sandbox-writer"), kubeconfig) == (
        None,
        kubeconfig,
        "sandbox-writer",
    )
    other = tmp_path / "write.kubeconfig"
    assert credentials(Settings(kube_context="a", write_kubeconfig=other), kubeconfig) == ("a", other, "a")
    # A kubeconfig without the two contexts (a real cluster's): one credential for both, as before.
    single = tmp_path / "single.kubeconfig"
    write_kubeconfig(single, fleet_server.url, fleet_server.token, fleet_server.cert.ca_pem)
    assert {c["name"] for c in yaml.safe_load(single.read_text())["contexts"]} == {"sandbox"}
    assert credentials(Settings(), single) is None
    assert credentials(Settings(), tmp_path / "missing") is None


# -- (a) the reader ---------------------------------------------------------------------------------
def test_the_reader_reads_what_an_investigation_needs(
    reader: Any, core: client.CoreV1Api, kubeconfig: Path, fleet_server: FleetServer
) -> None:
    fleet = fleet_server.fleet
    latches(core)  # the admin creates the kill switch and the breaker
    ns, pod, node = tenant_pod(fleet)
    assert len(reader.list_node().items) == 12
    assert reader.read_node(node).metadata.name == node
    assert any(p.metadata.name == pod for p in reader.list_pod_for_all_namespaces().items)
    on_node = reader.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    assert pod in {p.metadata.name for p in on_node}
    assert reader.read_namespaced_pod(pod, ns).spec.node_name == node
    assert isinstance(reader.read_namespaced_pod_log(pod, ns, tail_lines=5), str)
    assert reader.read_namespaced_config_map(FREEZE, AGENT_NAMESPACE).data == {"frozen": "false"}
    assert reader.read_namespaced_config_map(BREAKER, AGENT_NAMESPACE).data == {"status": "CLOSED"}
    reader.list_namespaced_event(ns)
    health = reader.connect_get_namespaced_pod_proxy_with_path(
        f"{agent_pod(fleet)}:9400", AGENT_NAMESPACE, "health"
    )
    assert health  # the node-agent's NVML report
    dns, dep = tenant_deployment(fleet)
    api = api_for(kubeconfig, "sandbox-reader")
    try:
        apps: Any = client.AppsV1Api(api)
        assert apps.read_namespaced_deployment(dep, dns).metadata.name == dep
        client.PolicyV1Api(api).list_pod_disruption_budget_for_all_namespaces()
    finally:
        api.close()
    # The sandbox's own endpoints the agent reads: yes; the rest of /sandbox/v1: admin only.
    as_reader = sandbox_as(fleet_server, "reader")
    assert "now" in as_reader.request("GET", "clock") and "meters" in as_reader.meters()
    for method, path in (
        ("GET", "truth"),
        ("GET", "requests"),
        ("GET", "snapshot"),
        ("POST", "clock/advance"),
    ):
        with pytest.raises(AdminError) as err:
            as_reader.request(method, path, {"seconds": 60} if method == "POST" else None)
        assert err.value.code == 403
        assert (
            str(err.value)
            == f'forbidden: User "{READER_USER}" cannot {method.lower()} path "/sandbox/v1/{path}"'
        )
    counts = requests_of(fleet_server)["reader"]
    assert counts["user"] == READER_USER
    assert set(counts["verbs"]) <= READ_VERBS and counts["verbs"]["get"] >= 5
    assert counts["resources"]["get pods/log"] == 1 and counts["resources"]["get pods/proxy"] == 1
    assert counts["paths"] == {"get /sandbox/v1/clock": 1, "get /sandbox/v1/meters": 1}
    assert set(counts["forbidden"]) == {
        "get /sandbox/v1/truth", "get /sandbox/v1/requests", "get /sandbox/v1/snapshot", "post /sandbox/v1/clock/advance"
    }  # fmt: skip


def test_the_reader_reads_the_latches_only(reader: client.CoreV1Api, core: client.CoreV1Api) -> None:
    latches(core)
    core.create_namespaced_config_map(AGENT_NAMESPACE, configmap("other", {}))
    body = forbidden(lambda: reader.read_namespaced_config_map("other", AGENT_NAMESPACE))
    assert body["message"] == (
        f'configmaps "other" is forbidden: User "{READER_USER}" cannot get resource "configmaps" '
        f'in API group "" in the namespace "{AGENT_NAMESPACE}"'
    )
    forbidden(lambda: reader.list_namespaced_config_map(AGENT_NAMESPACE))
    forbidden(lambda: reader.list_namespaced_secret("default"))


def _writes(fleet: Fleet, identity: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(description, expected 403 message, expected details) for each refused write of the reader."""
    ns, pod, node = tenant_pod(fleet)
    dns, dep = tenant_deployment(fleet)
    user = READER_USER if identity == "reader" else WRITER_USER
    return [
        (
            "patch node",
            f'nodes "{node}" is forbidden: User "{user}" cannot patch resource "nodes" in API group "" '
            "at the cluster scope",
            {"name": node, "kind": "nodes"},
        ),
        (
            "evict pod",
            f'pods "{pod}" is forbidden: User "{user}" cannot create resource "pods/eviction" in API group "" '
            f'in the namespace "{ns}"',
            {"name": pod, "kind": "pods"},
        ),
        (
            "delete pod",
            f'pods "{pod}" is forbidden: User "{user}" cannot delete resource "pods" in API group "" '
            f'in the namespace "{ns}"',
            {"name": pod, "kind": "pods"},
        ),
        (
            "patch deployment",
            f'deployments.apps "{dep}" is forbidden: User "{user}" cannot patch resource "deployments" '
            f'in API group "apps" in the namespace "{dns}"',
            {"name": dep, "group": "apps", "kind": "deployments"},
        ),
    ]


def _attempt(what: str, api: client.ApiClient, fleet: Fleet) -> Any:
    ns, pod, node = tenant_pod(fleet)
    dns, dep = tenant_deployment(fleet)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    if what == "patch node":
        return core.patch_node(node, {"spec": {"unschedulable": True}})
    if what == "evict pod":
        return core.create_namespaced_pod_eviction(
            pod, ns, client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=ns))
        )
    if what == "delete pod":
        return core.delete_namespaced_pod(pod, ns)
    if what == "patch deployment":
        return apps.patch_namespaced_deployment(dep, dns, {"spec": {"replicas": 0}})
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["patch node", "evict pod", "delete pod", "patch deployment"])
def test_the_reader_is_refused_every_write_and_the_fleet_is_unchanged(
    what: str, kubeconfig: Path, fleet_server: FleetServer
) -> None:
    fleet = fleet_server.fleet
    message, details = next((m, d) for w, m, d in _writes(fleet, "reader") if w == what)
    before = (fleet.store.rv, fleet.store.dump(), list(fleet.writes))
    api = api_for(kubeconfig, "sandbox-reader")
    try:
        body = forbidden(lambda: _attempt(what, api, fleet))
    finally:
        api.close()
    assert body["message"] == message
    assert body["details"] == details
    assert (fleet.store.rv, fleet.store.dump(), list(fleet.writes)) == before
    counts = requests_of(fleet_server)["reader"]
    assert sum(counts["forbidden"].values()) == 1 and counts["verbs"] == {}


# -- (d) a write with the reader, through the agent's own tools ------------------------------------------
def test_a_write_with_the_readers_credentials_is_refused_and_changes_nothing(
    kubeconfig: Path, fleet_server: FleetServer
) -> None:
    fleet = fleet_server.fleet
    _, _, node = tenant_pod(fleet)
    before = (fleet.store.rv, fleet.store.dump(), list(fleet.writes))
    tools = KubeTools.from_kubeconfig(kubeconfig, "sandbox-reader")
    try:
        for write in (lambda: tools.cordon_node(node), lambda: tools.drain_node(node, timeout_s=1)):
            with pytest.raises(ToolError) as exc:
                write()
            assert exc.value.status == 403
            assert f'User "{READER_USER}" cannot patch resource "nodes"' in str(exc.value)
        assert tools.get_node(node).unschedulable is False  # reads still work
    finally:
        tools.close()
    assert (fleet.store.rv, fleet.store.dump(), list(fleet.writes)) == before
    assert fleet.truth()["writes"] == []
    counts = requests_of(fleet_server)
    assert counts["reader"]["forbidden"] == {"patch nodes": 2}
    assert counts["writer"]["verbs"] == {} and counts["admin"]["verbs"] == {}


# -- (b) the writer -------------------------------------------------------------------------------------
def test_the_writer_cordons_through_the_api(writer: client.CoreV1Api, fleet_server: FleetServer) -> None:
    fleet = fleet_server.fleet
    _, _, node = tenant_pod(fleet)
    writer.patch_node(node, {"spec": {"unschedulable": True}})
    assert node_obj(fleet, node)["spec"]["unschedulable"] is True
    assert [(w["verb"], w["resource"], w["name"]) for w in fleet.truth()["writes"]] == [
        ("patch", "nodes", node)
    ]
    assert requests_of(fleet_server)["writer"]["resources"] == {"patch nodes": 1}


def test_the_writer_reads_no_secrets_deletes_no_nodes_and_does_not_investigate(
    writer: client.CoreV1Api, fleet_server: FleetServer
) -> None:
    fleet = fleet_server.fleet
    ns, pod, node = tenant_pod(fleet)
    body = forbidden(lambda: writer.list_namespaced_secret("default"))
    assert body["message"] == (
        f'secrets is forbidden: User "{WRITER_USER}" cannot list resource "secrets" in API group "" '
        'in the namespace "default"'
    )
    body = forbidden(lambda: writer.read_namespaced_secret("token", AGENT_NAMESPACE))
    assert body["details"] == {"name": "token", "kind": "secrets"}
    body = forbidden(lambda: writer.delete_node(node))
    assert body["message"] == (
        f'nodes "{node}" is forbidden: User "{WRITER_USER}" cannot delete resource "nodes" in API group "" '
        "at the cluster scope"
    )
    assert node_obj(fleet, node)
    forbidden(lambda: writer.read_namespaced_pod_log(pod, ns))
    forbidden(lambda: writer.list_namespaced_event(ns))
    forbidden(
        lambda: writer.connect_get_namespaced_pod_proxy_with_path(
            f"{agent_pod(fleet)}:9400", AGENT_NAMESPACE, "health"
        )
    )
    node_body = client.V1Node(metadata=client.V1ObjectMeta(name=node))
    forbidden(lambda: writer.replace_node(node, node_body))  # update: not granted
    with pytest.raises(AdminError) as err:
        sandbox_as(fleet_server, "writer").truth()
    assert err.value.code == 403
    assert fleet.writes == []


def test_the_writer_latches_the_breaker_and_touches_no_other_configmap(
    writer: client.CoreV1Api, reader: client.CoreV1Api, fleet_server: FleetServer
) -> None:
    """What the breaker latch and `supply-agent freeze` do: patch, or create when absent, in supply-agent-system."""
    cm = configmap(BREAKER, {"status": "CLOSED"})
    writer.create_namespaced_config_map(AGENT_NAMESPACE, cm)
    writer.patch_namespaced_config_map(
        BREAKER, AGENT_NAMESPACE, {"data": {"status": "TRIPPED", "reason": "r"}}
    )
    assert reader.read_namespaced_config_map(BREAKER, AGENT_NAMESPACE).data == {
        "status": "TRIPPED",
        "reason": "r",
    }
    writer.create_namespaced_config_map(
        AGENT_NAMESPACE, configmap("other", {})
    )  # create cannot be limited by name
    forbidden(lambda: writer.patch_namespaced_config_map("other", AGENT_NAMESPACE, {"data": {"a": "b"}}))
    forbidden(lambda: writer.delete_namespaced_config_map(BREAKER, AGENT_NAMESPACE))
    forbidden(lambda: writer.create_namespaced_config_map("default", cm))
    forbidden(lambda: writer.patch_namespaced_config_map(BREAKER, "default", {"data": {}}))


# -- kubectl ---------------------------------------------------------------------------------------------
def test_kubectl_with_each_context(kubeconfig: Path, fleet_server: FleetServer) -> None:
    _, _, node = tenant_pod(fleet_server.fleet)

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(kubectl_binary()), "--kubeconfig", str(kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    got = kubectl("--context", "sandbox-reader", "get", "nodes", "-o", "name")
    assert got.returncode == 0 and f"node/{node}" in got.stdout, got.stderr
    refused = kubectl("--context", "sandbox-reader", "cordon", node)  # kubectl reports it, exits 0
    assert (
        f'nodes "{node}" is forbidden: User "{READER_USER}" cannot patch resource "nodes"' in refused.stderr
    )
    refused = kubectl("--context", "sandbox-reader", "label", "node", node, "a=b")
    assert refused.returncode != 0 and "is forbidden" in refused.stderr
    assert not node_obj(fleet_server.fleet, node)["spec"].get("unschedulable")
    assert kubectl("--context", "sandbox-writer", "get", "secrets", "-A").returncode != 0
    done = kubectl("cordon", node)  # the current context: the admin, as in the README
    assert done.returncode == 0, done.stderr
    assert node_obj(fleet_server.fleet, node)["spec"]["unschedulable"] is True


# -- (c) one incident, end to end -------------------------------------------------------------------------
def _token(kube: KubeTools) -> str:
    return str(kube.api.configuration.api_key["BearerToken"]).removeprefix("Bearer ").strip()


def test_an_incident_reads_as_the_reader_and_writes_as_the_writer(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        tokens = h.server.tokens
        assert _token(h.env.runtime.kube) == tokens["reader"]
        assert _token(h.env.writer) == tokens["writer"]
        node = h.nodes()[0]
        h.inject("xid", node=node, gpu=1, code=79)
        [result] = h.handle("auto", advance_s=1800)
        state = result.state
        assert (state.playbook_id, state.outcome) == ("xid-fallen-off-bus", "mitigated"), (
            state.escalation_reason
        )
        done = {s.action.tool for s in state.steps if s.outcome == "executed" and s.verified}
        assert {"k8s.cordon_node", "k8s.drain_node"} <= done
        truth = h.truth()
        assert node_obj(h.fleet, node)["spec"]["unschedulable"] is True
        seen = h.requests()
    reader, writer, admin = seen["reader"], seen["writer"], seen["admin"]
    # Nothing was refused: the agent stays within deploy/base/rbac.yaml.
    assert reader["forbidden"] == writer["forbidden"] == admin["forbidden"] == {}
    # Every read of the investigation and of the gate's inputs: the reader.
    assert set(reader["verbs"]) <= READ_VERBS
    for r in ("list nodes", "list pods", "list events", "get pods/proxy", "get configmaps"):
        assert reader["resources"].get(r, 0) >= 1, (r, reader["resources"])
    assert reader["paths"].get("get /sandbox/v1/clock", 0) >= 1
    # Every write: the writer; it reads only what its write tools check before writing, nothing else.
    writes = {k: n for k, n in writer["resources"].items() if k.split()[0] not in READ_VERBS}
    assert writes.get("patch nodes", 0) >= 1 and writes.get("create pods/eviction", 0) >= 1
    assert {k for k in writer["resources"] if k.split()[0] in READ_VERBS} <= WRITE_TOOL_READS
    assert writer["paths"] == {}
    # The admin (the harness: faults, clock, alerts, truth) made no Kubernetes request at all.
    assert admin["verbs"] == {} and admin["resources"] == {}
    # The fleet's own write record agrees: each recorded write is one of the writer's.
    assert len(truth["writes"]) == sum(writes.values())
    assert {
        (w["verb"], w["resource"] + (f"/{w['subresource']}" if w["subresource"] else ""))
        for w in truth["writes"]
    } == {tuple(k.split()) for k in writes}


def test_an_agent_writing_with_the_readers_credentials_is_stopped_by_the_fleet(tmp_path: Path) -> None:
    """Had the writer defaulted to the reader, the fleet would refuse every write: nothing changes."""
    with harness(tmp_path, kube_context="sandbox-reader") as h:
        assert h.env.writer is h.env.runtime.kube
        node = h.nodes()[0]
        h.inject("xid", node=node, gpu=1, code=79)
        [result] = h.handle("auto", advance_s=1800)
        assert result.state.outcome != "mitigated"
        assert not any(
            s.outcome == "executed" and s.action.tool.startswith("k8s.") for s in result.state.steps
        )
        assert not node_obj(h.fleet, node)["spec"].get("unschedulable")
        assert h.truth()["writes"] == []
        seen = h.requests()
    assert seen["reader"]["forbidden"].get("patch nodes", 0) >= 1
    assert seen["writer"]["verbs"] == {}
