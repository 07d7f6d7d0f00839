"""Kubernetes tools over the official client: typed reads for investigation, dry-runnable writes.

The same code runs against a real cluster and the sandbox fleet. Reads retry transient failures
(connection errors, 429, 5xx) with jittered back-off; writes never retry on their own: the guarded
executor decides, and every write here is convergent (doing it twice leaves the same world).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from tools.kubernetes.models import (
    BlockedPod,
    Condition,
    DeploymentInfo,
    DrainResult,
    EventInfo,
    NodeInfo,
    PdbInfo,
    PodInfo,
    Taint,
    UntrustedText,
    WriteResult,
)

TAINT_PREFIX = "supply-agent.io/"
POOL_LABEL = "supply-agent.io/pool"
CUSTOMER_LABEL = "supply-agent.io/customer"
LOG_TAIL_MAX = 500
LOG_BYTES_MAX = 64 * 1024

T = TypeVar("T")


class ToolError(Exception):
    """A tool call that failed; ``status`` is the API's HTTP status where there was one."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (429, 500, 502, 503, 504)
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


_read_retry = retry(
    retry=retry_if_exception(_transient),
    wait=wait_random_exponential(multiplier=0.2, max=5),
    stop=stop_after_attempt(4),
    reraise=True,
)


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "").get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


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
    )


class KubeTools:
    """Typed tools over one Kubernetes API client (read-only or read-write credentials)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        # How a wait passes (a drain retrying evictions a budget blocks): real time here; a replay against
        # a simulated cluster passes it on the cluster's clock instead.
        self._sleep = sleep
        self._monotonic = monotonic

    @classmethod
    def from_kubeconfig(cls, path: Path | None = None, context: str | None = None) -> KubeTools:
        """A kubeconfig file (and context), or the in-cluster service account when no path is given."""
        if path is None:
            config.load_incluster_config()
            return cls(client.ApiClient())
        return cls(config.new_client_from_config(config_file=str(path), context=context))

    def close(self) -> None:
        self.api.close()

    @staticmethod
    def _json(resp: Any) -> Any:
        return json.loads(resp.data)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call, raw JSON; ApiException becomes ToolError with the server's own message."""
        try:
            return self._json(fn(*args, _preload_content=False, **kwargs))
        except ApiException as exc:
            if _transient(exc):
                raise
            raise ToolError(_message(exc), exc.status, exc.reason) from exc

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
                f"{pod}:{port}", namespace, path, _preload_content=False
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
            method, url, header_params=headers, body=body, post_params=post, _request_timeout=timeout_s
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

    def upsert_config_map(
        self, namespace: str, name: str, data: dict[str, str], dry_run: bool = False
    ) -> WriteResult:
        """Merge ``data`` into a ConfigMap, creating it when absent (the control latches)."""
        try:
            self._call(
                self.core.patch_namespaced_config_map,
                name,
                namespace,
                {"data": data},
                _content_type="application/merge-patch+json",
                **self._dry(dry_run),
            )
        except ToolError as exc:
            if exc.status != 404:
                raise
            self._call(
                self.core.create_namespaced_config_map,
                namespace,
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data},
                **self._dry(dry_run),
            )
        return WriteResult(
            tool="configmap", target=f"{namespace}/{name}", dry_run=dry_run, changed=True, detail=str(data)
        )

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

    # -- writes (never retried here; every one converges) ---------------------------------------
    @staticmethod
    def _dry(dry_run: bool) -> dict[str, str]:
        return {"dry_run": "All"} if dry_run else {}

    def _set_unschedulable(self, tool: str, name: str, want: bool, dry_run: bool) -> WriteResult:
        if self.get_node(name).unschedulable == want:
            return WriteResult(
                tool=tool,
                target=name,
                dry_run=dry_run,
                changed=False,
                detail="already cordoned" if want else "not cordoned",
            )
        self._call(
            self.core.patch_node,
            name,
            {"spec": {"unschedulable": True if want else None}},
            _content_type="application/merge-patch+json",
            **self._dry(dry_run),
        )
        return WriteResult(tool=tool, target=name, dry_run=dry_run, changed=True)

    def cordon_node(self, name: str, dry_run: bool = False) -> WriteResult:
        return self._set_unschedulable("k8s.cordon_node", name, True, dry_run)

    def uncordon_node(self, name: str, dry_run: bool = False) -> WriteResult:
        return self._set_unschedulable("k8s.uncordon_node", name, False, dry_run)

    def _put_taints(self, node: NodeInfo, taints: list[dict[str, Any]], dry_run: bool) -> None:
        """Replace the node's taints, guarded by its resourceVersion (a concurrent change fails, not clobbers)."""
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": node.resource_version},
            {"op": "add", "path": "/spec/taints", "value": taints},
        ]
        self._call(
            self.core.patch_node,
            node.name,
            patch,
            _content_type="application/json-patch+json",
            **self._dry(dry_run),
        )

    @staticmethod
    def _taint_key(key: str) -> str:
        if not key or "/" in key:
            raise ToolError(f"taint key {key!r}: give the name only; the agent taints under {TAINT_PREFIX!r}")
        return TAINT_PREFIX + key

    def taint_node(
        self, name: str, key: str, value: str = "", effect: str = "NoSchedule", dry_run: bool = False
    ) -> WriteResult:
        """Add (or update) a taint under the project's own key prefix; other owners' taints are kept."""
        full = self._taint_key(key)
        node = self.get_node(name)
        want = Taint(key=full, value=value or None, effect=effect)
        if any(t == want for t in node.taints):
            return WriteResult(
                tool="k8s.taint_node", target=name, dry_run=dry_run, changed=False, detail="already tainted"
            )
        taints = [
            t.model_dump(exclude_none=True) for t in node.taints if not (t.key == full and t.effect == effect)
        ]
        taints.append(want.model_dump(exclude_none=True))
        self._put_taints(node, taints, dry_run)
        return WriteResult(
            tool="k8s.taint_node",
            target=name,
            dry_run=dry_run,
            changed=True,
            detail=f"{full}={value}:{effect}",
        )

    def untaint_node(self, name: str, key: str, dry_run: bool = False) -> WriteResult:
        full = self._taint_key(key)
        node = self.get_node(name)
        kept = [t.model_dump(exclude_none=True) for t in node.taints if t.key != full]
        if len(kept) == len(node.taints):
            return WriteResult(
                tool="k8s.untaint_node", target=name, dry_run=dry_run, changed=False, detail="no such taint"
            )
        self._put_taints(node, kept, dry_run)
        return WriteResult(tool="k8s.untaint_node", target=name, dry_run=dry_run, changed=True)

    def drain_node(
        self, name: str, timeout_s: float = 60.0, dry_run: bool = False, poll_s: float = 1.0
    ) -> DrainResult:
        """Cordon, then evict every non-DaemonSet pod through the eviction API, honouring PDBs.

        Stops at ``timeout_s``; the result lists what was evicted, what a budget blocked, what remains.
        """
        started = self._monotonic()
        self.cordon_node(name, dry_run=dry_run)
        evicted: list[str] = []
        blocked: dict[str, BlockedPod] = {}
        while True:
            pods = [p for p in self.list_pods_on_node(name) if p.phase not in ("Succeeded", "Failed")]
            skipped = [f"{p.namespace}/{p.name}" for p in pods if p.daemonset]
            todo = [p for p in pods if not p.daemonset and not p.terminating]
            for pod in todo:
                key = f"{pod.namespace}/{pod.name}"
                body = client.V1Eviction(
                    metadata=client.V1ObjectMeta(name=pod.name, namespace=pod.namespace),
                    delete_options=client.V1DeleteOptions(dry_run=["All"]) if dry_run else None,
                )
                try:
                    self.core.create_namespaced_pod_eviction(
                        pod.name,
                        pod.namespace,
                        body,
                        dry_run="All" if dry_run else None,
                        _preload_content=False,
                    )
                    evicted.append(key)
                    blocked.pop(key, None)
                except ApiException as exc:
                    if exc.status == 429:
                        blocked[key] = BlockedPod(
                            namespace=pod.namespace, name=pod.name, reason=_message(exc)
                        )
                    elif exc.status == 404:
                        continue
                    else:
                        raise ToolError(f"evicting {key}: {_message(exc)}", exc.status, exc.reason) from exc
            remaining = [f"{p.namespace}/{p.name}" for p in todo if f"{p.namespace}/{p.name}" not in evicted]
            elapsed = self._monotonic() - started
            if dry_run or not remaining or elapsed >= timeout_s:
                if not dry_run:
                    left = [
                        p
                        for p in self.list_pods_on_node(name)
                        if not p.daemonset and p.phase not in ("Succeeded", "Failed")
                    ]
                    remaining = [f"{p.namespace}/{p.name}" for p in left]
                return DrainResult(
                    node=name,
                    dry_run=dry_run,
                    evicted=sorted(set(evicted)),
                    blocked=[b for k, b in sorted(blocked.items()) if k in remaining or dry_run],
                    remaining=remaining,
                    skipped_daemonset=skipped,
                    completed=not remaining and not dry_run,
                    elapsed_s=round(elapsed, 3),
                )
            self._sleep(min(poll_s, max(timeout_s - elapsed, 0)))

    def delete_pod(
        self, namespace: str, name: str, grace_period_s: int | None = None, dry_run: bool = False
    ) -> WriteResult:
        try:
            self._call(
                self.core.delete_namespaced_pod,
                name,
                namespace,
                grace_period_seconds=grace_period_s,
                **self._dry(dry_run),
            )
        except ToolError as exc:
            if exc.status == 404:
                return WriteResult(
                    tool="k8s.delete_pod",
                    target=f"{namespace}/{name}",
                    dry_run=dry_run,
                    changed=False,
                    detail="already gone",
                )
            raise
        return WriteResult(tool="k8s.delete_pod", target=f"{namespace}/{name}", dry_run=dry_run, changed=True)

    def rollout_restart(
        self, namespace: str, name: str, idempotency_key: str, dry_run: bool = False
    ) -> WriteResult:
        """``kubectl rollout restart``, keyed: the same key patches the same value and restarts once."""
        stamp = datetime.fromtimestamp(int(hashlib.sha256(idempotency_key.encode()).hexdigest()[:8], 16), UTC)
        value = f"{stamp:%Y-%m-%dT%H:%M:%SZ}/{idempotency_key[:12]}"
        dep = self._call(self.apps.read_namespaced_deployment, name, namespace)
        current = ((dep["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(
            "kubectl.kubernetes.io/restartedAt"
        )
        if current == value:
            return WriteResult(
                tool="k8s.rollout_restart",
                target=f"{namespace}/{name}",
                dry_run=dry_run,
                changed=False,
                detail="already restarted for this key",
            )
        patch = {
            "spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": value}}}}
        }
        self._call(
            self.apps.patch_namespaced_deployment,
            name,
            namespace,
            patch,
            _content_type="application/strategic-merge-patch+json",
            **self._dry(dry_run),
        )
        return WriteResult(
            tool="k8s.rollout_restart", target=f"{namespace}/{name}", dry_run=dry_run, changed=True
        )

    def scale_deployment(
        self, namespace: str, name: str, replicas: int, dry_run: bool = False
    ) -> WriteResult:
        if replicas < 0:
            raise ToolError(f"replicas must be >= 0, not {replicas}")
        scale = self._call(self.apps.read_namespaced_deployment_scale, name, namespace)
        if scale["spec"].get("replicas") == replicas:
            return WriteResult(
                tool="k8s.scale_deployment",
                target=f"{namespace}/{name}",
                dry_run=dry_run,
                changed=False,
                detail=f"already {replicas}",
            )
        self._call(
            self.apps.patch_namespaced_deployment_scale,
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            _content_type="application/merge-patch+json",
            **self._dry(dry_run),
        )
        return WriteResult(
            tool="k8s.scale_deployment",
            target=f"{namespace}/{name}",
            dry_run=dry_run,
            changed=True,
            detail=f"{scale['spec'].get('replicas')} -> {replicas}",
        )
