"""Reads of a served sandbox fleet that several tests share, through the official Kubernetes client."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from sandbox.fleet.world import AGENT_NAMESPACE


def node_names(core: client.CoreV1Api) -> list[str]:
    return sorted(n.metadata.name for n in core.list_node().items)


def node_agent_health(core: client.CoreV1Api, node: str) -> dict[str, Any]:
    """The node-agent's GPU health report for ``node``, read through its pod's proxy (as the agent does)."""
    agent = core.list_namespaced_pod(AGENT_NAMESPACE, field_selector=f"spec.nodeName={node}").items[0]
    raw = core.connect_get_namespaced_pod_proxy_with_path(
        agent.metadata.name, AGENT_NAMESPACE, "health", _preload_content=False
    )
    return dict(json.loads(raw.data))
