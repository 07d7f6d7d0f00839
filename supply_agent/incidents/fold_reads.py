"""What one fold of alerts into incidents reads from the cluster, and how it degrades when it cannot.

The fold asks the cluster which rack, switch and driver each alerting node has (its labels), how many
nodes share one, and where a pod's alert's pod runs and whether that node is Ready. Each node is read
once per fold. The fold must never fail for want of these answers: the alerts are already stored, and a
node-by-node fold is always possible (the gate's mass-failure limit still holds the line). So the first
read that fails (the API down, refusing, timing out) marks the cluster unreadable for the rest of this
fold, and every later question gets :class:`ClusterUnreadable` at once instead of another round of
retries: an outage costs one read's retries per fold, not one per alert.

It also finds the node an alert means where the name it carries is not one the cluster has
(:meth:`FoldReads.named`): a host's FQDN for a node registered by its short name, a hostname the node
carries as its ``kubernetes.io/hostname`` label, or the name of the pod that exported the series (the GPU
Operator's dcgm-exporter, off the host network, writes its own pod's name as ``Hostname``). A lookup is at
most five reads of the names the alert gives (cached per fold), never a list of the cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from supply_agent.mind.triage import node_fault
from supply_agent.models.incident import AlertIn, Evidence
from supply_agent.models.labels import is_node_name
from tools.kubernetes import KubeTools, ToolError

# The label the kubelet sets to its host's name (well-known labels: kubernetes.io/hostname).
HOSTNAME_LABEL = "kubernetes.io/hostname"

# What a read of an unreachable or failing API raises once the client's own retries are spent.
_CLUSTER_ERRORS: tuple[type[BaseException], ...] = (ToolError, ApiException, HTTPError, OSError)


class ClusterUnreadable(Exception):
    """The cluster could not be read during this fold (the first failure's text)."""


class FoldReads:
    """The cluster reads of one fold: cached per node; after a failure, none more."""

    def __init__(self, kube: KubeTools, gpu_health: Callable[[str], Any] | None = None) -> None:
        self.kube = kube
        self.down: str | None = None
        self._labels: dict[str, dict[str, str] | None] = {}
        self._sizes: dict[tuple[str, str], int] = {}
        self._gpu_health = gpu_health
        self._health: dict[str, Any] = {}
        self._gpu_down = False
        self._named: dict[tuple[str, str, str], tuple[str, str] | None] = {}

    def named(self, alert: AlertIn) -> tuple[str, str] | None:
        """The cluster's name for the node a firing alert names, and how it was found, where the name it
        carries is not a node of the cluster; None where it is one, where nothing the alert says leads to
        one, or where the cluster cannot be read. Tried in order, each only where the one before found
        nothing: the node whose ``kubernetes.io/hostname`` label is the name (one label-selected list,
        O(its matches)); the node of the pod the alert names, where the name is that pod's own (its
        hostname); the name before its first dot (a host's FQDN, the node registered short)."""
        node = alert.node
        if node is None or alert.status != "firing":
            return None
        pod = alert.labels.get("pod", "") if alert.labels.get("pod") == node else ""
        key = (node, alert.labels.get("namespace", "") if pod else "", pod)
        if key not in self._named:
            try:
                self._named[key] = self._find(node, key[1], pod)
            except ClusterUnreadable:
                return None
        return self._named[key]

    def _find(self, node: str, namespace: str, pod: str) -> tuple[str, str] | None:
        if self.labels_of(node) is not None:
            return None
        self._guard()
        try:
            hosts = self.kube.list_nodes(label_selector=f"{HOSTNAME_LABEL}={node}") if len(node) <= 63 else []
        except _CLUSTER_ERRORS as exc:
            raise self._failed(exc) from exc
        if len(hosts) == 1:
            self._labels.setdefault(hosts[0].name, hosts[0].labels)
            return hosts[0].name, f"the node whose {HOSTNAME_LABEL} label is {node}"
        if pod and namespace:
            try:
                on = self.kube.get_pod(namespace, pod).node
            except ToolError as exc:
                if exc.status != 404:
                    raise self._failed(exc) from exc
                on = None
            except _CLUSTER_ERRORS as exc:
                raise self._failed(exc) from exc
            if on and self.labels_of(on) is not None:
                return (
                    on,
                    f"the node pod {namespace}/{pod} runs on (the alert names the pod that exported it)",
                )
        short = node.split(".", 1)[0]
        if short != node and is_node_name(short) and self.labels_of(short) is not None:
            return short, f"{node} without its domain"
        return None

    def shown(self, alert: AlertIn) -> tuple[bool, AlertIn | None]:
        """What the GPUs of the alert's node show, as the fleet's alert for it (``node_fault``), and
        whether they were read: only for an alert no playbook knows by name (see ``as_known``), once per
        node. A node-agent that does not answer is no answer, and after the first the fold reads none
        (one node-agent's wait per fold): it goes on without them."""
        node = alert.node
        if self._gpu_health is None or node is None:
            return False, None
        if node not in self._health:
            if self._gpu_down or self._labels.get(node, {}) is None:  # down, or not a node of the cluster
                return False, None
            try:
                value = self._gpu_health(node)
            except Exception:  # the fold must not fail for it (see the module's docstring)
                value = None
            if not isinstance(value, dict) or not value.get("available"):
                self._gpu_down = True
                value = None
            self._health[node] = value
        value = self._health[node]
        if value is None:
            return False, None
        read = Evidence(tool="nvml.gpu_health", params={"node": node}, ok=True, summary="", result=value)
        return True, node_fault([read], alert)

    def _guard(self) -> None:
        if self.down is not None:
            raise ClusterUnreadable(self.down)

    def _failed(self, exc: BaseException) -> ClusterUnreadable:
        self.down = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return ClusterUnreadable(self.down)

    def labels_of(self, node: str) -> dict[str, str] | None:
        """A node's labels (None: the cluster has no such node, so its alert counts for nothing)."""
        if node in self._labels:
            return self._labels[node]
        self._guard()
        try:
            self._labels[node] = self.kube.get_node(node).labels
        except ToolError as exc:
            if exc.status != 404:
                raise self._failed(exc) from exc
            self._labels[node] = None
        except _CLUSTER_ERRORS as exc:
            raise self._failed(exc) from exc
        return self._labels[node]

    def size_of(self, label: str, value: str) -> int:
        """How many nodes the cluster has with ``label=value`` (one label-selected list, O(them))."""
        if (label, value) not in self._sizes:
            self._guard()
            try:
                self._sizes[(label, value)] = len(self.kube.list_nodes(label_selector=f"{label}={value}"))
            except _CLUSTER_ERRORS as exc:
                raise self._failed(exc) from exc
        return self._sizes[(label, value)]

    def dead_node_of(self, namespace: str, pod: str) -> str | None:
        """The node the pod runs on, when the cluster shows that node not Ready; else None (the pod is
        gone, unscheduled, or on a Ready node)."""
        self._guard()
        try:
            node = self.kube.get_pod(namespace, pod).node
            if not node:
                return None
            ready = self.kube.get_node(node).condition("Ready")
        except ToolError as exc:
            if exc.status == 404:
                return None
            raise self._failed(exc) from exc
        except _CLUSTER_ERRORS as exc:
            raise self._failed(exc) from exc
        return node if ready is not None and ready.status != "True" else None
