"""The agent side of GPU health: a node's NVML report, read through the Kubernetes API server.

It exists apart from the collector because it runs in the agent, not on the node: it finds the node's
node-agent pod and GETs its report through ``pods/proxy`` (one credential, one RBAC), and it never
touches NVML itself. A node-agent that does not answer is reported as such, never as a GPU verdict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from supply_agent.models import GpuHealthReport

if TYPE_CHECKING:
    from tools.kubernetes import KubeTools

# -- agent side: the node's report, read through the Kubernetes API server -------------------------
AGENT_NAMESPACE = "supply-agent-system"
AGENT_SELECTOR = "app.kubernetes.io/name=node-agent"
AGENT_PORT = 9400


class GpuHealthRead(BaseModel):
    """What the agent learned about a node's GPUs; ``available`` is False when the monitor could not answer."""

    node: str
    available: bool
    reason: str = ""
    agent_pod: str | None = None
    report: GpuHealthReport | None = None


def gpu_health(kube: KubeTools, node: str, namespace: str = AGENT_NAMESPACE) -> GpuHealthRead:
    """The node-agent's NVML report through ``pods/{name}:{port}/proxy/health`` (one credential, one RBAC).

    A node-agent that does not answer is reported as such, never as a healthy or unhealthy GPU: the
    monitor being down says nothing about the GPUs.
    """
    import json as _json

    from tools.kubernetes import ToolError

    try:
        pods = kube.find_pods(
            namespace, label_selector=AGENT_SELECTOR, field_selector=f"spec.nodeName={node}"
        )
    except ToolError as exc:
        return GpuHealthRead(node=node, available=False, reason=f"cannot list node-agent pods: {exc}")
    running = [p for p in pods if not p.terminating]
    if not running:
        return GpuHealthRead(node=node, available=False, reason=f"no node-agent pod on {node} in {namespace}")
    pod = running[0].name
    try:
        report = GpuHealthReport.model_validate(
            _json.loads(kube.proxy_get(namespace, pod, AGENT_PORT, "health"))
        )
    except ToolError as exc:
        return GpuHealthRead(
            node=node,
            available=False,
            agent_pod=pod,
            reason=f"node-agent unreachable ({exc.status}): {exc}",
        )
    except ValueError as exc:
        return GpuHealthRead(
            node=node, available=False, agent_pod=pod, reason=f"node-agent answered with a bad report: {exc}"
        )
    if report.node != node:
        return GpuHealthRead(
            node=node,
            available=False,
            agent_pod=pod,
            reason=f"node-agent on {node} reported for {report.node!r}: not trusted",
        )
    if not report.nvml_available:
        return GpuHealthRead(
            node=node,
            available=False,
            agent_pod=pod,
            reason=report.error or "NVML unavailable",
            report=report,
        )
    return GpuHealthRead(node=node, available=True, agent_pod=pod, report=report)
