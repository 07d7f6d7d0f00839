"""Which pods hold which GPU on this node, from the kubelet's PodResources API (v1).

The kubelet serves the gRPC service `v1.PodResourcesLister` (k8s.io/kubelet/pkg/apis/podresources/v1)
on the unix socket `/var/lib/kubelet/pod-resources/kubelet.sock`, which the node-agent's DaemonSet mounts
read-only (deploy/base/node-agent.yaml). `List` returns every pod with resources assigned on the node: per
container, the devices of each extended resource (`ContainerDevices{resource_name, device_ids}`), and the
devices of its DRA claims. `Get` returns one pod (behind the kubelet's KubeletPodResourcesGet feature
gate before 1.34). `PodResourcesClient` calls them with a deadline (2 s by default) over a fresh channel
each time, and turns every failure (no socket, no kubelet, a kubelet that hangs, a gRPC error) into a
`PodResourcesError` whose text is a sentence.

NVIDIA's device plugin names GPUs by device id: by default the GPU's UUID (`GPU-...`, the UUID NVML
reports), `GPU-...::<n>` for the n-th replica of a time-sliced or MPS-shared GPU, the NVML index (`0`,
`1`, ...) under its `index` strategy, and a MIG device's own UUID (`MIG-...`) under a MIG strategy.
`map_gpu_pods` places each device of a resource `nvidia.com/gpu*` or `nvidia.com/mig-*` on the GPU of
the same UUID, else the same index; other resources are ignored. A GPU no pod holds gets `pods: []`.

A device that matches no GPU (a MIG device, a GPU NVML no longer lists, a GPU whose UUID NVML did not
read, a GPU claimed through DRA) means some pod's GPU is not known, so no GPU's list would be complete:
then every GPU's `pods` stays None and `errors["pods"]` names the devices and their pods. The agent reads
None as "not known" (and tells every customer on the node), and `[]` as "no pod here", so a list is only
given when it is the whole truth. `fill_gpu_pods` does this for the NVML collector's report and never
raises: when the kubelet cannot be read, `pods` stays None and `errors["pods"]` says why.

`api.proto` is the kubelet's v1 API, and `api_pb2*.py*` are generated from it (see its header).
"""

from tools.podresources.client import (
    DEFAULT_SOCKET,
    DEFAULT_TIMEOUT_S,
    GpuPods,
    PodResourcesClient,
    PodResourcesError,
    fill_gpu_pods,
    gpu_of_device_id,
    is_gpu_resource,
    map_gpu_pods,
)

__all__ = [
    "DEFAULT_SOCKET",
    "DEFAULT_TIMEOUT_S",
    "GpuPods",
    "PodResourcesClient",
    "PodResourcesError",
    "fill_gpu_pods",
    "gpu_of_device_id",
    "is_gpu_resource",
    "map_gpu_pods",
]
