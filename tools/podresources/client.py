"""A client of the kubelet's PodResources API v1 and the mapping of its GPU devices to NVML's GPUs.

See the package docstring (`tools/podresources/__init__.py`) for what the kubelet serves and how device
ids name GPUs. Every failure is a `PodResourcesError` whose text is a sentence for the report.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from supply_agent.logging import get_logger
from supply_agent.models import GpuHealth
from tools.podresources import api_pb2, api_pb2_grpc

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
DEFAULT_TIMEOUT_S = 2.0
# The kubelet's own pod-resources client allows 16 MiB; gRPC's default (4 MiB) is short of a busy node.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# The extended resources NVIDIA's device plugin advertises GPUs under: whole or time-sliced GPUs
# (`nvidia.com/gpu`, or `nvidia.com/gpu.shared` when replicas are renamed) and MIG devices
# (`nvidia.com/mig-1g.10gb` ... under the mixed strategy; under the single strategy they are `nvidia.com/gpu`).
GPU_RESOURCE_PREFIXES = ("nvidia.com/gpu", "nvidia.com/mig-")
# The DRA driver NVIDIA's GPUs are claimed through when a cluster uses Dynamic Resource Allocation.
GPU_DRA_DRIVERS = frozenset({"gpu.nvidia.com"})
# The device plugin's suffix for the replicas of one GPU under time-slicing or MPS: "<id>::<n>".
REPLICA_SEPARATOR = "::"


_T = TypeVar("_T")


class PodResourcesError(Exception):
    """The pod-resources API could not be read; `str()` is a sentence saying why."""


def is_gpu_resource(resource_name: str) -> bool:
    return resource_name.startswith(GPU_RESOURCE_PREFIXES)


def gpu_of_device_id(device_id: str) -> str:
    """The GPU a device plugin's device id names: the id less any time-slicing replica suffix."""
    return device_id.split(REPLICA_SEPARATOR, 1)[0]


class PodResourcesClient:
    """Reads the kubelet's PodResourcesLister over its unix socket; one short-lived channel per call.

    A channel per call keeps a kubelet restart (a new socket) from leaving a channel in gRPC's reconnect
    back-off; on a unix socket a connection costs well under a millisecond.
    """

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.last_error: str | None = None  # the last report's reason the pods were not placed

    def note(self, reason: str | None) -> None:
        """Log a change of whether the pods could be placed (once per change, not once per report)."""
        if reason == self.last_error:
            return
        if reason is None:
            get_logger(component="podresources").info("podresources.ok", socket=self.socket_path)
        else:
            get_logger(component="podresources").warning("podresources.unavailable", error=reason)
        self.last_error = reason

    @property
    def target(self) -> str:
        return f"unix://{os.path.abspath(self.socket_path)}"

    def list(self) -> list[api_pb2.PodResources]:
        """Every pod the kubelet has assigned resources to, with its containers' devices."""
        response = self._call(
            "List", lambda stub: stub.List(api_pb2.ListPodResourcesRequest(), timeout=self.timeout_s)
        )
        return list(response.pod_resources)

    def get(self, namespace: str, name: str) -> api_pb2.PodResources:
        """One pod's resources (the kubelet's `Get`, behind its KubeletPodResourcesGet gate before 1.34)."""
        request = api_pb2.GetPodResourcesRequest(pod_name=name, pod_namespace=namespace)
        response = self._call("Get", lambda stub: stub.Get(request, timeout=self.timeout_s))
        return response.pod_resources

    def gpu_pods(self, gpus: Sequence[GpuHealth]) -> GpuPods:
        """The pods bound to each of `gpus`, from one `List`; raises PodResourcesError when it fails."""
        return map_gpu_pods(self.list(), gpus)

    def _call(self, method: str, call: Callable[[api_pb2_grpc.PodResourcesListerStub], _T]) -> _T:
        self._check_socket()
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # One try only: a dead kubelet must not cost more than the timeout.
            ("grpc.enable_retries", 0),
        ]
        try:
            with grpc.insecure_channel(self.target, options=options) as channel:
                return call(api_pb2_grpc.PodResourcesListerStub(channel))
        except grpc.RpcError as exc:
            raise PodResourcesError(self._sentence(method, exc)) from exc
        except Exception as exc:  # a broken response or channel: still a sentence, never a crash
            raise PodResourcesError(
                f"reading the kubelet's pod-resources API ({method}) at {self.socket_path} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _check_socket(self) -> None:
        try:
            mode = os.stat(self.socket_path).st_mode
        except FileNotFoundError:
            raise PodResourcesError(
                f"the kubelet's pod-resources socket {self.socket_path} does not exist "
                "(is /var/lib/kubelet/pod-resources mounted into the node-agent?)"
            ) from None
        except OSError as exc:
            raise PodResourcesError(
                f"the kubelet's pod-resources socket {self.socket_path} cannot be read: {exc}"
            ) from exc
        if not stat.S_ISSOCK(mode):
            raise PodResourcesError(f"{self.socket_path} is not a unix socket (the kubelet's pod-resources)")

    def _sentence(self, method: str, exc: grpc.RpcError) -> str:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
        where = f"the kubelet's pod-resources API at {self.socket_path}"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"{where} did not answer {method} within {self.timeout_s:g} s"
        if code == grpc.StatusCode.UNAVAILABLE:
            return f"{where} is unavailable ({method}): {details}"
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return f"{where} does not implement {method} (an older kubelet, or its feature gate is off)"
        name = code.name if code is not None else type(exc).__name__
        return f"{method} on {where} failed: {name}: {details}"


@dataclass
class GpuPods:
    """Which pods hold which GPU, by GPU index, from one listing.

    `unmatched` names the GPU devices pods hold that match no GPU in the report (MIG devices, a GPU NVML
    no longer lists, a GPU whose UUID could not be read, or claims through DRA): while any is left, which
    GPU those pods are on is not known, so no GPU's list can be said to be complete.
    """

    pods: dict[int, list[str]] = field(default_factory=dict)
    unmatched: dict[str, list[str]] = field(default_factory=dict)

    def reason(self) -> str | None:
        """Why the lists are not complete, as a sentence; None when every GPU device was placed."""
        if not self.unmatched:
            return None
        held = "; ".join(f"{device} by {', '.join(pods)}" for device, pods in sorted(self.unmatched.items()))
        return (
            "pods hold GPU devices that match no GPU on this node by UUID or index, so which GPU each "
            f"pod is on is not known: {held}"
        )

    def apply(self, gpus: Iterable[GpuHealth]) -> None:
        """Fill each GPU's `pods`; when some device was not placed, leave them None and say why."""
        reason = self.reason()
        for gpu in gpus:
            if reason is None:
                gpu.pods = list(self.pods.get(gpu.index, []))
                gpu.errors.pop("pods", None)
            else:
                gpu.pods = None
                gpu.errors["pods"] = reason


def map_gpu_pods(listing: Iterable[api_pb2.PodResources], gpus: Sequence[GpuHealth]) -> GpuPods:
    """Place every GPU device of every pod on one of `gpus`: by UUID (the device plugin's default device
    ids, "GPU-..." or "GPU-...::n" with replicas), else by NVML index (its `index` id strategy)."""
    by_uuid = {gpu.uuid: gpu.index for gpu in gpus if gpu.uuid}
    by_index = {str(gpu.index): gpu.index for gpu in gpus}
    held: dict[int, set[str]] = {gpu.index: set() for gpu in gpus}
    unmatched: dict[str, set[str]] = {}
    for pod in listing:
        key = f"{pod.namespace}/{pod.name}"
        for container in pod.containers:
            for devices in container.devices:
                if not is_gpu_resource(devices.resource_name):
                    continue
                for device_id in devices.device_ids:
                    gpu_id = gpu_of_device_id(device_id)
                    index = by_uuid.get(gpu_id)
                    if index is None:
                        index = by_index.get(gpu_id)
                    if index is None:
                        unmatched.setdefault(f"{devices.resource_name} {device_id}", set()).add(key)
                    else:
                        held[index].add(key)
            for claim in container.dynamic_resources:
                for resource in claim.claim_resources:
                    if resource.driver_name in GPU_DRA_DRIVERS:
                        device = (
                            f"DRA claim {claim.claim_namespace}/{claim.claim_name} {resource.device_name}"
                        )
                        unmatched.setdefault(device, set()).add(key)
    return GpuPods(
        pods={index: sorted(pods) for index, pods in held.items()},
        unmatched={device: sorted(pods) for device, pods in unmatched.items()},
    )


def fill_gpu_pods(gpus: Sequence[GpuHealth], client: PodResourcesClient) -> None:
    """Set `pods` on each GPU from the kubelet; on any failure leave them None and name why in `errors`.

    Never raises: the node-agent's report must be served whatever the kubelet does.
    """
    if not gpus:
        return
    try:
        placed = client.gpu_pods(gpus)
    except PodResourcesError as exc:
        reason: str | None = str(exc)
    except Exception as exc:  # a bug here must not take the GPU health report down with it
        reason = f"mapping the kubelet's pod resources to GPUs failed: {type(exc).__name__}: {exc}"
    else:
        placed.apply(gpus)
        reason = placed.reason()
    client.note(reason)
    if reason is not None:
        for gpu in gpus:
            gpu.pods = None
            gpu.errors["pods"] = reason
