"""The node-agent DaemonSet: its object, one agent pod on every node (replaced when deleted, crash-looping
when the agent or the node is down) and the DaemonSet's status. With ``FleetSpec.dcgm_exporter``, also the
GPU Operator's dcgm-exporter DaemonSet (``gpu-operator/nvidia-dcgm-exporter``), one pod on every node and
off the host network, as the operator deploys it: the pod's hostname is its own name, which is what the
exporter writes in every series' ``Hostname`` label (NVIDIA/dcgm-exporter#78, gpu-operator#1545).
"""

from __future__ import annotations

from typing import Any

from sandbox.fleet.store import thaw
from sandbox.fleet.world.spec import (
    AGENT_NAME,
    AGENT_NAMESPACE,
    AGENT_PORT,
    EXPORTER_NAME,
    EXPORTER_NAMESPACE,
    is_ready,
    is_terminating,
)
from sandbox.fleet.world.state import FleetState


class DaemonSetMixin(FleetState):
    """Keeps one pod of each DaemonSet per node (the node-agent's, and the exporter's where the fleet runs
    it) and their status current."""

    def _create_daemonset(self) -> None:
        self._put_daemonset(AGENT_NAMESPACE, AGENT_NAME, self._agent_pod_spec())
        if self.spec.dcgm_exporter:
            self._put_daemonset(EXPORTER_NAMESPACE, EXPORTER_NAME, self._exporter_pod_spec())

    def _daemonsets(self) -> list[tuple[str, str]]:
        """The (namespace, name) of each DaemonSet the fleet runs on every node."""
        return [(AGENT_NAMESPACE, AGENT_NAME)] + (
            [(EXPORTER_NAMESPACE, EXPORTER_NAME)] if self.spec.dcgm_exporter else []
        )

    def _put_daemonset(self, namespace: str, name: str, pod_spec: dict[str, Any]) -> None:
        labels = {"app.kubernetes.io/name": name}
        self.store.put(
            "daemonsets",
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": self._uid(),
                    "creationTimestamp": self.stamp(),
                    "generation": 1,
                    "labels": labels,
                },
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": pod_spec},
                    "updateStrategy": {"type": "RollingUpdate"},
                },
                "status": {},
            },
        )

    def _agent_pod_spec(self) -> dict[str, Any]:
        return {
            "containers": [
                {
                    "name": AGENT_NAME,
                    "image": "ghcr.io/supply-agent/supply-agent:0.1.0",
                    "args": ["node-agent", "serve", "--port", str(AGENT_PORT)],
                    "ports": [{"containerPort": AGENT_PORT, "name": "health", "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                }
            ],
            "tolerations": [{"operator": "Exists"}],
            "priorityClassName": "system-node-critical",
            "serviceAccountName": AGENT_NAME,
        }

    def _exporter_pod_spec(self) -> dict[str, Any]:
        return {
            "containers": [
                {
                    "name": EXPORTER_NAME,
                    "image": "nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3-4.1.3-ubuntu22.04",
                    "ports": [{"containerPort": 9400, "name": "metrics", "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                }
            ],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "system-node-critical",
            "serviceAccountName": EXPORTER_NAME,
        }

    def _ensure_daemon_pods(self, node_name: str, refresh: bool = True) -> None:
        """Each DaemonSet's pod on the node (made where it has none)."""
        for namespace, name in self._daemonsets():
            self._ensure_daemon_pod(node_name, namespace, name, refresh)

    def _ensure_daemon_pod(self, node_name: str, namespace: str, name: str, refresh: bool = True) -> None:
        ds = self.store.get("daemonsets", namespace, name)
        if ds is None or self.store.get("nodes", "", node_name) is None:
            return
        for pod in self.store.pods_on_node(node_name):
            if pod["metadata"]["namespace"] == namespace and not is_terminating(pod):
                return
        pod = self._new_pod("DaemonSet", ds, ds["spec"]["template"], f"{name}-{self._suffix()}", {})
        pod["spec"]["nodeName"] = node_name
        pod["spec"]["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
                    ]
                }
            }
        }
        host_ip = self.node(node_name)["status"]["addresses"][0]["address"]
        pod["status"] = self._running_status(pod, host_ip, self.stamp())
        if (name == AGENT_NAME and self._agent_down(node_name)) or self._node_down(node_name):
            self._set_crashloop_status(pod, "Error", 1, 1)
        self.store.put("pods", pod)
        if refresh:
            self._refresh_daemonset_status(namespace, name)

    def _refresh_daemonset_status(self, namespace: str = AGENT_NAMESPACE, name: str = AGENT_NAME) -> None:
        ds = self.store.get("daemonsets", namespace, name)
        if ds is None:
            return
        pods = [p for p in self.store.items("pods", namespace) if not is_terminating(p)]
        ready = sum(1 for p in pods if is_ready(p))
        n = self.store.count("nodes")
        status = {
            "currentNumberScheduled": len(pods),
            "desiredNumberScheduled": n,
            "numberMisscheduled": 0,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": n - ready,
            "updatedNumberScheduled": len(pods),
            "observedGeneration": 1,
        }
        if ds["status"] != status:
            new = thaw(ds)
            new["status"] = status
            self.store.put("daemonsets", new)
