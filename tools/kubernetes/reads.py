"""The Kubernetes reads: typed results for investigation, each retrying transient failures.

It exists apart from the writes because reads are safe to repeat: the investigation reads retry
connection errors, timeouts, 429 and 5xx with jittered back-off, within the client's read budget
(``_read_retry``; ``ping``, ``proxy_get`` and ``get_path`` answer at once, for readiness and for callers
with their own fallbacks), and return typed models from :mod:`.models`, not the raw objects (pod logs
come back marked untrusted).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from kubernetes.client.rest import ApiException

from tools.kubernetes.api import (
    CUSTOMER_LABEL,
    LOG_BYTES_MAX,
    LOG_TAIL_MAX,
    POOL_LABEL,
    KubeApi,
    ToolError,
    _message,
    _read_retry,
    _transient,
)
from tools.kubernetes.models import (
    Condition,
    DeploymentInfo,
    EventInfo,
    NodeInfo,
    PdbInfo,
    PodInfo,
    Taint,
    UntrustedText,
    workload_of,
)


# -- the tools ------------------------------------------------------------------------------------
def _node_info(raw: dict[str, Any]) -> NodeInfo:
    meta, spec, status = raw["metadata"], raw.get("spec") or {}, raw.get("status") or {}
    return NodeInfo(
        name=meta["name"],
        pool=(meta.get("labels") or {}).get(POOL_LABEL),
        labels=meta.get("labels") or {},
        unschedulable=bool(spec.get("unschedulable")),
        taints=[
            Taint(key=t["key"], value=t.get("value"), effect=t["effect"]) for t in spec.get("taints") or []
        ],
        conditions=[
            Condition(
                type=c["type"],
                status=c["status"],
                reason=c.get("reason") or "",
                message=c.get("message") or "",
            )
            for c in status.get("conditions") or []
        ],
        gpu_capacity=int((status.get("capacity") or {}).get("nvidia.com/gpu", 0)),
        gpu_allocatable=int((status.get("allocatable") or {}).get("nvidia.com/gpu", 0)),
        resource_version=meta.get("resourceVersion", ""),
    )


def _pod_info(raw: dict[str, Any]) -> PodInfo:
    meta, spec, status = raw["metadata"], raw.get("spec") or {}, raw.get("status") or {}
    cs = (status.get("containerStatuses") or [{}])[0]
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    last = (cs.get("lastState") or {}).get("terminated") or {}
    gpus = sum(
        int((c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", 0))
        for c in spec.get("containers") or []
    )
    return PodInfo(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta.get("uid", ""),
        node=spec.get("nodeName"),
        phase=status.get("phase", "Unknown"),
        ready=ready,
        terminating=bool(meta.get("deletionTimestamp")),
        restarts=int(cs.get("restartCount", 0)),
        waiting_reason=((cs.get("state") or {}).get("waiting") or {}).get("reason"),
        last_termination_reason=last.get("reason"),
        last_exit_code=last.get("exitCode"),
        customer=(meta.get("labels") or {}).get(CUSTOMER_LABEL),
        owner_kind=owner["kind"] if owner else None,
        owner_name=owner["name"] if owner else None,
        gpus=gpus,
        daemonset=bool(owner and owner["kind"] == "DaemonSet"),
        workload=workload_of(meta["namespace"], meta.get("labels") or {}),
    )


class KubeReads(KubeApi):
    """The reads of :class:`~tools.kubernetes.client.KubeTools`."""

    # -- reads ----------------------------------------------------------------------------------
    @_read_retry
    def get_node(self, name: str) -> NodeInfo:
        return _node_info(self._call(self.core.read_node, name))

    def ping(self) -> None:
        """One cheap authorised read (readiness): raises ToolError or the client's error when unreachable."""
        self._call(self.core.list_node, limit=1, _request_timeout=5)

    @_read_retry
    def list_raw(self, kind: Literal["nodes", "pods"]) -> list[dict[str, Any]]:
        """Every node or every pod as raw JSON: what the world model slims for the gate."""
        fn = self.core.list_node if kind == "nodes" else self.core.list_pod_for_all_namespaces
        return list(self._call(fn)["items"])

    @_read_retry
    def find_pods(
        self, namespace: str, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[PodInfo]:
        """The pods of one namespace that match the selectors."""
        raw = self._call(
            self.core.list_namespaced_pod,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
        )
        return [_pod_info(p) for p in raw["items"]]

    def proxy_get(self, namespace: str, pod: str, port: int, path: str) -> bytes:
        """GET ``path`` from a pod's port through the API server (``pods/proxy``); ToolError on failure."""
        try:
            resp = self.core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod}:{port}", namespace, path, _preload_content=False, _request_timeout=self.timeout
            )
        except ApiException as exc:
            raise ToolError(_message(exc), exc.status, exc.reason) from exc
        return bytes(resp.data)  # type: ignore[attr-defined]

    def get_path(self, path: str, timeout_s: float = 10.0) -> Any:
        """A GET of a non-Kubernetes path on the same API server, with these credentials, as JSON (the
        sandbox fleet's ``/sandbox/v1`` endpoints)."""
        method, url, headers, body, post = self.api.param_serialize(
            method="GET", resource_path=path, auth_settings=["BearerToken"]
        )
        resp = self.api.call_api(
            method,
            url,
            header_params=headers,
            body=body,
            post_params=post,
            _request_timeout=(self.timeout[0], timeout_s),
        )
        resp.read()
        if resp.status != 200:
            raise ToolError(f"{path}: HTTP {resp.status}", resp.status)
        return json.loads(resp.data or b"null")

    @_read_retry
    def read_config_map(self, namespace: str, name: str) -> dict[str, str]:
        """A ConfigMap's data; ToolError with status 404 when there is none."""
        cm = self._call(self.core.read_namespaced_config_map, name, namespace)
        return {str(k): str(v) for k, v in (cm.get("data") or {}).items()}

    @_read_retry
    def list_nodes(self, label_selector: str | None = None) -> list[NodeInfo]:
        """All nodes (raw JSON then typed results: the fast path on a 10,000-node fleet)."""
        raw = self._call(self.core.list_node, label_selector=label_selector)
        return [_node_info(n) for n in raw["items"]]

    @_read_retry
    def list_pods_on_node(self, node: str) -> list[PodInfo]:
        raw = self._call(self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}")
        return [_pod_info(p) for p in raw["items"]]

    @_read_retry
    def get_pod(self, namespace: str, name: str) -> PodInfo:
        return _pod_info(self._call(self.core.read_namespaced_pod, name, namespace))

    @_read_retry
    def pod_logs(self, namespace: str, name: str, tail: int = 200, previous: bool = False) -> UntrustedText:
        """A bounded tail of a pod's log, marked untrusted."""
        tail = max(1, min(tail, LOG_TAIL_MAX))
        try:
            resp = self.core.read_namespaced_pod_log(
                name,
                namespace,
                tail_lines=tail,
                previous=previous,
                limit_bytes=LOG_BYTES_MAX,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if _transient(exc):
                raise
            raise ToolError(_message(exc), exc.status, exc.reason) from exc
        data: bytes = resp.data  # type: ignore[attr-defined]  # _preload_content=False: the raw response
        return UntrustedText(
            source=f"pods/{namespace}/{name}/log",
            text=data.decode("utf-8", errors="replace"),
            truncated=len(data) >= LOG_BYTES_MAX,
        )

    @_read_retry
    def events_for(
        self, kind: str, name: str, namespace: str = "default", limit: int = 50
    ) -> list[EventInfo]:
        raw = self._call(
            self.core.list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.kind={kind},involvedObject.name={name}",
        )
        items = sorted(raw["items"], key=lambda e: e.get("lastTimestamp") or "")[-limit:]
        return [
            EventInfo(
                type=e.get("type", ""),
                reason=e.get("reason", ""),
                message=e.get("message", ""),
                component=(e.get("source") or {}).get("component", ""),
                count=e.get("count") or 1,
                last_seen=e.get("lastTimestamp"),
            )
            for e in items
        ]

    @_read_retry
    def pdbs_for_pod(self, namespace: str, name: str) -> list[PdbInfo]:
        pod = self._call(self.core.read_namespaced_pod, name, namespace)
        labels = pod["metadata"].get("labels") or {}
        out = []
        for pdb in self._call(self.policy.list_namespaced_pod_disruption_budget, namespace)["items"]:
            match = (pdb["spec"].get("selector") or {}).get("matchLabels") or {}
            if match and all(labels.get(k) == v for k, v in match.items()):
                st = pdb.get("status") or {}
                out.append(
                    PdbInfo(
                        namespace=namespace,
                        name=pdb["metadata"]["name"],
                        disruptions_allowed=st.get("disruptionsAllowed", 0),
                        current_healthy=st.get("currentHealthy", 0),
                        desired_healthy=st.get("desiredHealthy", 0),
                        expected_pods=st.get("expectedPods", 0),
                    )
                )
        return out

    @_read_retry
    def deployment_status(self, namespace: str, name: str) -> DeploymentInfo:
        d = self._call(self.apps.read_namespaced_deployment, name, namespace)
        st = d.get("status") or {}
        return DeploymentInfo(
            namespace=namespace,
            name=name,
            replicas=d["spec"].get("replicas", 1),
            ready=st.get("readyReplicas", 0),
            updated=st.get("updatedReplicas", 0),
            available=st.get("availableReplicas", 0),
            generation=d["metadata"].get("generation", 1),
            observed_generation=st.get("observedGeneration", 0),
            revision=(d["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision"),
        )
