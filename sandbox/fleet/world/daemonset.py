"""The node-agent DaemonSet: its object, one agent pod on every node (replaced when deleted, crash-looping
when the agent or the node is down) and the DaemonSet's status.
"""

from __future__ import annotations

from typing import Any

from sandbox.fleet.store import thaw
from sandbox.fleet.world.spec import AGENT_NAME, AGENT_NAMESPACE, AGENT_PORT, is_ready, is_terminating
from sandbox.fleet.world.state import FleetState


class DaemonSetMixin(FleetState):
    """Keeps one node-agent pod per node and the DaemonSet status current."""

    def _create_daemonset(self) -> None:
        labels = {"app.kubernetes.io/name": AGENT_NAME}
        self.store.put(
            "daemonsets",
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {
                    "name": AGENT_NAME,
                    "namespace": AGENT_NAMESPACE,
                    "uid": self._uid(),
                    "creationTimestamp": self.stamp(),
                    "generation": 1,
                    "labels": labels,
                },
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": self._agent_pod_spec()},
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

    def _ensure_agent_pod(self, node_name: str, refresh: bool = True) -> None:
        ds = self.store.get("daemonsets", AGENT_NAMESPACE, AGENT_NAME)
        if ds is None or self.store.get("nodes", "", node_name) is None:
            return
        for pod in self.store.pods_on_node(node_name):
            if pod["metadata"]["namespace"] == AGENT_NAMESPACE and not is_terminating(pod):
                return
        pod = self._new_pod("DaemonSet", ds, ds["spec"]["template"], f"{AGENT_NAME}-{self._suffix()}", {})
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
        if self._agent_down(node_name) or self._node_down(node_name):
            self._set_crashloop_status(pod, "Error", 1, 1)
        self.store.put("pods", pod)
        if refresh:
            self._refresh_daemonset_status()

    def _refresh_daemonset_status(self) -> None:
        ds = self.store.get("daemonsets", AGENT_NAMESPACE, AGENT_NAME)
        if ds is None:
            return
        pods = [p for p in self.store.items("pods", AGENT_NAMESPACE) if not is_terminating(p)]
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
