"""The kubelet pod-resources client against a real gRPC server on a unix socket, and the node-agent's
report that fills each GPU's pods from it (NVML simulated)."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from sandbox.fleet.nvml_sim import SimNvml
from supply_agent.models import GpuHealth, GpuHealthReport
from supply_agent.node_agent import make_app, make_collector
from tools.nvml import NvmlCollector
from tools.podresources import (
    DEFAULT_SOCKET,
    PodResourcesClient,
    PodResourcesError,
    gpu_of_device_id,
    is_gpu_resource,
    map_gpu_pods,
)
from tools.podresources import api_pb2 as pb
from tools.podresources import api_pb2_grpc as pb_grpc

H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture
def sim() -> SimNvml:
    return SimNvml.healthy("node-a", 4, H100, seed=42)


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[Path]:
    """Where the fake kubelet listens: in tmp_path, unless that is too long for a unix socket's path."""
    path = tmp_path / "kubelet.sock"
    if len(str(path)) < 100:
        yield path
        return
    short = Path(tempfile.mkdtemp(prefix="podres-"))
    try:
        yield short / "kubelet.sock"
    finally:
        with contextlib.suppress(OSError):
            (short / "kubelet.sock").unlink()
        short.rmdir()


def fixture_pods(sim: SimNvml) -> list[pb.PodResources]:
    """Two GPUs by UUID to one pod, GPU 2 time-sliced between two pods, GPU 3 free, and a pod holding
    only a NIC (whose device id "3" would name GPU 3 if non-GPU resources were not skipped)."""
    uuid = [gpu.uuid for gpu in sim.gpus]
    numa0 = pb.TopologyInfo(nodes=[pb.NUMANode(ID=0)])
    return [
        pb.PodResources(
            name="trainer-0",
            namespace="team-a",
            containers=[
                pb.ContainerResources(
                    name="main",
                    devices=[
                        pb.ContainerDevices(
                            resource_name="nvidia.com/gpu", device_ids=[uuid[0], uuid[1]], topology=numa0
                        )
                    ],
                    cpu_ids=[2, 3],
                ),
                pb.ContainerResources(name="sidecar"),
            ],
        ),
        pb.PodResources(
            name="server-0",
            namespace="team-b",
            containers=[
                pb.ContainerResources(
                    name="infer",
                    devices=[
                        pb.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=[f"{uuid[2]}::1"])
                    ],
                )
            ],
        ),
        pb.PodResources(
            name="server-1",
            namespace="team-c",
            containers=[
                pb.ContainerResources(
                    name="infer",
                    devices=[
                        pb.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=[f"{uuid[2]}::3"])
                    ],
                )
            ],
        ),
        pb.PodResources(
            name="router-0",
            namespace="net",
            containers=[
                pb.ContainerResources(
                    name="router",
                    devices=[
                        pb.ContainerDevices(
                            resource_name="example.com/sriov-nic", device_ids=["3", "0000:3b:00.1"]
                        )
                    ],
                )
            ],
        ),
        pb.PodResources(name="plain", namespace="default", containers=[pb.ContainerResources(name="c")]),
    ]


class FakeKubelet(pb_grpc.PodResourcesListerServicer):
    """The kubelet's PodResourcesLister over fixture pods; `hang` makes List wait until released."""

    def __init__(self, pods: list[pb.PodResources]) -> None:
        self.pods = pods
        self.hang = threading.Event()
        self.release = threading.Event()
        self.fail: grpc.StatusCode | None = None
        self.calls = 0

    def List(self, request: pb.ListPodResourcesRequest, context: Any) -> pb.ListPodResourcesResponse:
        self.calls += 1
        if self.hang.is_set():
            self.release.wait(10)
        if self.fail is not None:
            context.abort(self.fail, "the kubelet broke")
        return pb.ListPodResourcesResponse(pod_resources=self.pods)

    def Get(self, request: pb.GetPodResourcesRequest, context: Any) -> pb.GetPodResourcesResponse:
        for pod in self.pods:
            if (pod.namespace, pod.name) == (request.pod_namespace, request.pod_name):
                return pb.GetPodResourcesResponse(pod_resources=pod)
        context.abort(
            grpc.StatusCode.NOT_FOUND,
            f"pod {request.pod_name} in namespace {request.pod_namespace} not found",
        )
        raise AssertionError("unreachable")


@contextlib.contextmanager
def serving(servicer: pb_grpc.PodResourcesListerServicer, path: Path) -> Iterator[None]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_PodResourcesListerServicer_to_server(servicer, server)
    assert server.add_insecure_port(f"unix://{path}") == 1
    server.start()
    try:
        yield
    finally:
        server.stop(grace=None).wait(5)


@pytest.fixture
def kubelet(sim: SimNvml, sock: Path) -> Iterator[FakeKubelet]:
    fake = FakeKubelet(fixture_pods(sim))
    with serving(fake, sock):
        yield fake
        fake.release.set()


def report_with(sim: SimNvml, client: PodResourcesClient | None) -> GpuHealthReport:
    collector = NvmlCollector("node-a", nvml=sim, pod_resources=client)
    try:
        return collector.report()
    finally:
        collector.close()


EXPECTED = {
    0: ["team-a/trainer-0"],
    1: ["team-a/trainer-0"],
    2: ["team-b/server-0", "team-c/server-1"],
    3: [],
}


# the wire ----------------------------------------------------------------------------------------------


def test_field_numbers_are_the_kubelets() -> None:
    """The wire format of k8s.io/kubelet/pkg/apis/podresources/v1 (api.proto): names and numbers."""

    def numbers(message: Any) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    assert pb.DESCRIPTOR.package == "v1"
    assert numbers(pb.ListPodResourcesResponse) == {"pod_resources": 1}
    assert numbers(pb.PodResources) == {"name": 1, "namespace": 2, "containers": 3}
    assert numbers(pb.ContainerResources) == {
        "name": 1,
        "devices": 2,
        "cpu_ids": 3,
        "memory": 4,
        "dynamic_resources": 5,
    }
    assert numbers(pb.ContainerDevices) == {"resource_name": 1, "device_ids": 2, "topology": 3}
    assert numbers(pb.TopologyInfo) == {"nodes": 1} and numbers(pb.NUMANode) == {"ID": 1}
    assert numbers(pb.ContainerMemory) == {"memory_type": 1, "size": 2, "topology": 3}
    assert numbers(pb.DynamicResource) == {"claim_name": 2, "claim_namespace": 3, "claim_resources": 4}
    assert numbers(pb.ClaimResource) == {"cdi_devices": 1, "driver_name": 2, "pool_name": 3, "device_name": 4}
    assert numbers(pb.GetPodResourcesRequest) == {"pod_name": 1, "pod_namespace": 2}
    assert numbers(pb.GetPodResourcesResponse) == {"pod_resources": 1}
    service = pb.DESCRIPTOR.services_by_name["PodResourcesLister"]
    assert service.full_name == "v1.PodResourcesLister"
    assert {m.name: (m.input_type.name, m.output_type.name) for m in service.methods} == {
        "List": ("ListPodResourcesRequest", "ListPodResourcesResponse"),
        "GetAllocatableResources": ("AllocatableResourcesRequest", "AllocatableResourcesResponse"),
        "Get": ("GetPodResourcesRequest", "GetPodResourcesResponse"),
    }


def test_device_ids() -> None:
    assert gpu_of_device_id("GPU-abc") == "GPU-abc"
    assert gpu_of_device_id("GPU-abc::7") == "GPU-abc"
    assert gpu_of_device_id("1::0") == "1"
    assert is_gpu_resource("nvidia.com/gpu") and is_gpu_resource("nvidia.com/gpu.shared")
    assert is_gpu_resource("nvidia.com/mig-1g.10gb")
    assert not is_gpu_resource("example.com/sriov-nic") and not is_gpu_resource("cpu")
    assert DEFAULT_SOCKET == "/var/lib/kubelet/pod-resources/kubelet.sock"


# the client over a real gRPC server ---------------------------------------------------------------------


def test_list_over_the_socket(kubelet: FakeKubelet, sock: Path, sim: SimNvml) -> None:
    pods = PodResourcesClient(str(sock)).list()
    assert [(p.namespace, p.name) for p in pods] == [
        ("team-a", "trainer-0"),
        ("team-b", "server-0"),
        ("team-c", "server-1"),
        ("net", "router-0"),
        ("default", "plain"),
    ]
    main = pods[0].containers[0]
    assert main.name == "main" and list(main.cpu_ids) == [2, 3]
    assert main.devices[0].resource_name == "nvidia.com/gpu"
    assert list(main.devices[0].device_ids) == [sim.gpus[0].uuid, sim.gpus[1].uuid]
    assert main.devices[0].topology.nodes[0].ID == 0


def test_get_one_pod(kubelet: FakeKubelet, sock: Path) -> None:
    client = PodResourcesClient(str(sock))
    pod = client.get("team-b", "server-0")
    assert (pod.namespace, pod.name) == ("team-b", "server-0")
    with pytest.raises(PodResourcesError, match="NOT_FOUND: pod nope in namespace team-b not found"):
        client.get("team-b", "nope")


def test_maps_device_ids_to_gpus_by_uuid(kubelet: FakeKubelet, sock: Path, sim: SimNvml) -> None:
    gpus = report_with(sim, None).gpus
    placed = PodResourcesClient(str(sock)).gpu_pods(gpus)
    assert placed.pods == EXPECTED and placed.unmatched == {} and placed.reason() is None


def test_collector_fills_pods_from_the_kubelet(kubelet: FakeKubelet, sock: Path, sim: SimNvml) -> None:
    report = report_with(sim, PodResourcesClient(str(sock)))
    assert {g.index: g.pods for g in report.gpus} == EXPECTED
    assert all(g.errors == {} for g in report.gpus)
    assert kubelet.calls == 1  # one List per report, not one per GPU


def test_index_device_ids_map_by_nvml_index(sim: SimNvml) -> None:
    gpus = [GpuHealth(index=0, uuid="GPU-a"), GpuHealth(index=1, uuid=None)]
    listing = [
        pb.PodResources(
            name="p",
            namespace="ns",
            containers=[
                pb.ContainerResources(
                    name="c",
                    devices=[pb.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=["1::2"])],
                )
            ],
        )
    ]
    assert map_gpu_pods(listing, gpus).pods == {0: [], 1: ["ns/p"]}


def test_a_device_on_no_known_gpu_leaves_every_gpu_unknown(sock: Path, sim: SimNvml) -> None:
    """A MIG device (or a GPU NVML does not list) holds a pod somewhere on the node: no GPU's list is
    complete, so none is given ([] would tell the agent that no pod is there)."""
    pods = fixture_pods(sim)
    pods.append(
        pb.PodResources(
            name="mig-job",
            namespace="team-d",
            containers=[
                pb.ContainerResources(
                    name="c",
                    devices=[
                        pb.ContainerDevices(
                            resource_name="nvidia.com/mig-1g.10gb",
                            device_ids=["MIG-4d6f4c4c-8f0e-5b5e-9d0e-000000000001"],
                        )
                    ],
                )
            ],
        )
    )
    with serving(FakeKubelet(pods), sock):
        report = report_with(sim, PodResourcesClient(str(sock)))
    for gpu in report.gpus:
        assert gpu.pods is None
        assert "match no GPU on this node" in gpu.errors["pods"]
        assert (
            "nvidia.com/mig-1g.10gb MIG-4d6f4c4c-8f0e-5b5e-9d0e-000000000001 by team-d/mig-job"
            in (gpu.errors["pods"])
        )


def test_a_gpu_claimed_through_dra_is_not_placed(sim: SimNvml) -> None:
    claim = pb.DynamicResource(
        claim_name="gpu-claim",
        claim_namespace="team-e",
        claim_resources=[
            pb.ClaimResource(driver_name="gpu.nvidia.com", pool_name="node-a", device_name="gpu-0")
        ],
    )
    listing = [
        pb.PodResources(
            name="dra",
            namespace="team-e",
            containers=[pb.ContainerResources(name="c", dynamic_resources=[claim])],
        )
    ]
    placed = map_gpu_pods(listing, [GpuHealth(index=0, uuid=sim.gpus[0].uuid)])
    assert placed.unmatched == {"DRA claim team-e/gpu-claim gpu-0": ["team-e/dra"]}
    assert placed.reason() is not None


# when the kubelet cannot be read -----------------------------------------------------------------------


def test_no_socket_leaves_pods_unknown_with_a_reason(tmp_path: Path, sim: SimNvml) -> None:
    missing = tmp_path / "kubelet.sock"
    report = report_with(sim, PodResourcesClient(str(missing)))
    assert report.nvml_available and len(report.gpus) == 4
    for gpu in report.gpus:
        assert gpu.pods is None
        assert gpu.errors["pods"] == (
            f"the kubelet's pod-resources socket {missing} does not exist "
            "(is /var/lib/kubelet/pod-resources mounted into the node-agent?)"
        )
        assert gpu.temperature_c is not None  # NVML's fields are still read


def test_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "kubelet.sock"
    path.write_text("")
    with pytest.raises(PodResourcesError, match="is not a unix socket"):
        PodResourcesClient(str(path)).list()


def test_a_socket_nobody_listens_on_is_unavailable(sock: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    listener.close()  # the socket file stays, as after a kubelet that died
    started = time.monotonic()
    with pytest.raises(PodResourcesError, match="is unavailable") as caught:
        PodResourcesClient(str(sock), timeout_s=2).list()
    assert time.monotonic() - started < 2.5, caught.value


def test_a_hanging_kubelet_times_out(kubelet: FakeKubelet, sock: Path, sim: SimNvml) -> None:
    kubelet.hang.set()
    started = time.monotonic()
    report = report_with(sim, PodResourcesClient(str(sock), timeout_s=0.3))
    elapsed = time.monotonic() - started
    assert elapsed < 2, elapsed
    for gpu in report.gpus:
        assert gpu.pods is None
        assert (
            gpu.errors["pods"]
            == f"the kubelet's pod-resources API at {sock} did not answer List within 0.3 s"
        )


def test_a_socket_that_never_answers_times_out(sock: Path) -> None:
    """Accepts the connection and says nothing (no HTTP/2): the deadline still ends the call."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    listener.listen(8)
    try:
        started = time.monotonic()
        with pytest.raises(PodResourcesError, match=r"did not answer List within 0\.3 s"):
            PodResourcesClient(str(sock), timeout_s=0.3).list()
        assert time.monotonic() - started < 2
    finally:
        listener.close()


def test_a_kubelet_error_is_a_sentence(kubelet: FakeKubelet, sock: Path, sim: SimNvml) -> None:
    kubelet.fail = grpc.StatusCode.INTERNAL
    report = report_with(sim, PodResourcesClient(str(sock)))
    assert report.gpus[0].pods is None
    assert (
        report.gpus[0].errors["pods"]
        == f"List on the kubelet's pod-resources API at {sock} failed: INTERNAL: the kubelet broke"
    )


def test_a_kubelet_without_get(sock: Path) -> None:
    with (
        serving(pb_grpc.PodResourcesListerServicer(), sock),
        pytest.raises(PodResourcesError, match="does not implement Get"),
    ):
        PodResourcesClient(str(sock)).get("ns", "p")


def test_pods_return_when_the_kubelet_comes_back(sock: Path, sim: SimNvml) -> None:
    """A channel per call: a kubelet that starts (or restarts) after the node-agent is read at once."""
    collector = NvmlCollector("node-a", nvml=sim, pod_resources=PodResourcesClient(str(sock)))
    try:
        assert all(g.pods is None and "does not exist" in g.errors["pods"] for g in collector.report().gpus)
        with serving(FakeKubelet(fixture_pods(sim)), sock):
            report = collector.report()
        assert {g.index: g.pods for g in report.gpus} == EXPECTED
        assert all("pods" not in g.errors for g in report.gpus)
    finally:
        collector.close()


def test_the_sandbox_collector_reads_no_pods(sim: SimNvml) -> None:
    """Without a client (the sandbox fleet's collector) pods are not read, and nothing is said."""
    report = report_with(sim, None)
    assert all(g.pods is None and g.errors == {} for g in report.gpus)


# the node-agent ------------------------------------------------------------------------------------------


def test_node_agent_serves_pods_from_the_kubelet(kubelet: FakeKubelet, sock: Path, sim: SimNvml) -> None:
    pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")
    from starlette.testclient import TestClient

    collector = make_collector("node-a", nvml=sim, pod_resources_socket=str(sock))
    with TestClient(make_app(collector)) as client:
        response = client.get("/health")
        assert response.status_code == 200
        report = GpuHealthReport.model_validate(response.json())
    collector.close()
    assert {g.index: g.pods for g in report.gpus} == EXPECTED
    assert response.json()["gpus"][3]["pods"] == []


def test_node_agent_without_the_socket_still_serves(tmp_path: Path, sim: SimNvml) -> None:
    pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")
    from starlette.testclient import TestClient

    collector = make_collector("node-a", nvml=sim, pod_resources_socket=str(tmp_path / "absent.sock"))
    with TestClient(make_app(collector)) as client:
        response = client.get("/health")
    collector.close()
    assert response.status_code == 200
    gpus = response.json()["gpus"]
    assert len(gpus) == 4 and all(g["pods"] is None and "does not exist" in g["errors"]["pods"] for g in gpus)


def test_node_agent_defaults_to_the_kubelets_socket(sim: SimNvml) -> None:
    collector = make_collector("node-a", nvml=sim)
    client = collector._pod_resources
    assert client is not None and client.socket_path == DEFAULT_SOCKET and client.timeout_s == 2.0
    assert make_collector("node-a", nvml=sim, pod_resources_socket=None)._pod_resources is None
    if not os.path.exists(DEFAULT_SOCKET):  # this machine is not a kubelet's node
        with pytest.raises(PodResourcesError, match="does not exist"):
            client.list()
