"""The node-agent on each node: a simulated NVML with the real `NvmlCollector` over it, and what a request
through `pods/{name}/proxy` to the agent's pod returns (its GPU health report, or the dial error a dead
node or agent gives). NVML reports the driver the node's ``nvidia.com/cuda.driver-version.full`` label
names, and follows it through a driver rollout and its rollback.
"""

from __future__ import annotations

import orjson

from sandbox.fleet.faults import FaultKind
from sandbox.fleet.nvml_sim import SimNvml
from sandbox.fleet.store import Obj
from sandbox.fleet.world.spec import (
    AGENT_NAMESPACE,
    AGENT_PORT,
    DRIVER_LABEL,
    PRODUCT_LABEL,
    FleetError,
    is_terminating,
    not_found,
)
from sandbox.fleet.world.state import FleetState
from tools.nvml import NvmlCollector


class NodeAgentMixin(FleetState):
    """Serves each node's GPU health report, as the node-agent would."""

    def agent(self, node_name: str) -> tuple[SimNvml, NvmlCollector]:
        """The node's simulated NVML and the real collector over it, created on first use."""
        if node_name not in self._agents:
            labels = self.node(node_name)["metadata"]["labels"]
            sim = SimNvml.healthy(
                node_name,
                self.spec.gpus_per_node,
                labels[PRODUCT_LABEL],
                self.spec.seed,
                driver=labels.get(DRIVER_LABEL),
            )
            collector = NvmlCollector(node_name, nvml=sim, clock=self.now)
            collector.start()
            self._agents[node_name] = (sim, collector)
        return self._agents[node_name]

    def driver_changed(self, node_name: str, version: str) -> None:
        """A new (or the old) driver is loaded on the node: NVML reports it, and the node-agent, which must
        let go of the old kernel module for it to load, starts over on the new one."""
        if node_name not in self._agents:
            return  # created on first use, from the label
        sim, collector = self._agents[node_name]
        sim.set_driver_version(version)
        collector.close()
        collector.start()

    def _agent_down(self, node_name: str) -> bool:
        return any(f.kind == FaultKind.AGENT_DOWN for f in self.node_faults(node_name))

    def agent_pod(self, node_name: str) -> Obj | None:
        for pod in self.store.pods_on_node(node_name):
            if pod["metadata"]["namespace"] == AGENT_NAMESPACE:
                return pod
        return None

    def proxy(self, ns: str, name: str, port: str | None, path: str) -> tuple[int, str, bytes]:
        """What a request through ``pods/{name}/proxy`` gets: the node-agent's health report."""
        pod = self.store.get("pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        node_name = pod["spec"].get("nodeName")
        ip = pod.get("status", {}).get("podIP", "")
        target = f"{ip}:{port or AGENT_PORT}"
        if not node_name or self._node_down(node_name):
            raise FleetError(
                503, "ServiceUnavailable", f"error trying to reach service: dial tcp {target}: i/o timeout"
            )
        is_agent = ns == AGENT_NAMESPACE and (port in (None, "", str(AGENT_PORT), "health"))
        if not is_agent or self._agent_down(node_name) or is_terminating(pod):
            raise FleetError(
                503,
                "ServiceUnavailable",
                f"error trying to reach service: dial tcp {target}: connect: connection refused",
            )
        path = path.strip("/")
        if path == "healthz":
            return 200, "text/plain", b"ok"
        if path in ("", "health"):
            _, collector = self.agent(node_name)
            report = collector.report()
            # What the node-agent reads from the kubelet's pod-resources API on a real node: the pods the
            # device plugin bound to each GPU (here, the sandbox scheduler's assignment).
            owners = self._gpu_owner.get(node_name) or []
            for gpu in report.gpus:
                owner = owners[gpu.index] if gpu.index < len(owners) else None
                gpu.pods = [owner] if owner else []
            return 200, "application/json", orjson.dumps(report.model_dump(mode="json"))
        return 404, "text/plain", b"404 page not found\n"
