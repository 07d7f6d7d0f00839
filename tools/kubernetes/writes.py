"""The Kubernetes writes: dry-runnable, convergent, and never retried here.

It exists apart from the reads because a write has other rules: it never retries on its own (the
guarded executor decides), every one converges (doing it twice leaves the same world: it reads the
object first and reports ``changed=False`` when there is nothing to do), and every one takes
``dry_run``, which the API server honours (``dryRun=All``). The drain, the one write that waits on the
cluster, also takes the executor's deadline: it returns what it did by then instead of running on in a
thread nobody waits for.
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tools.kubernetes.api import TAINT_PREFIX, KubeApi, ToolError, _message
from tools.kubernetes.models import BlockedPod, DrainResult, NodeInfo, PodInfo, Taint, WriteResult

# At most this much of an executor's allowance is kept for a drain's last read of what is left.
_FINAL_READ_S = 5.0


class KubeWrites(KubeApi):
    """The writes of :class:`~tools.kubernetes.client.KubeTools`; the reads they check first come from
    :class:`~tools.kubernetes.reads.KubeReads`, composed beside them."""

    if TYPE_CHECKING:

        def get_node(self, name: str) -> NodeInfo: ...

        def list_pods_on_node(self, node: str) -> list[PodInfo]: ...

    # -- writes (never retried here; every one converges) ---------------------------------------
    @staticmethod
    def _dry(dry_run: bool) -> dict[str, str]:
        return {"dry_run": "All"} if dry_run else {}

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
        self,
        name: str,
        timeout_s: float = 60.0,
        dry_run: bool = False,
        poll_s: float = 1.0,
        *,
        deadline: float | None = None,
        stop: threading.Event | None = None,
    ) -> DrainResult:
        """Cordon, then evict every non-DaemonSet pod through the eviction API, honouring PDBs.

        Stops at ``timeout_s`` (on this client's clock), a little before ``deadline``
        (``time.monotonic()`` seconds: when the guarded executor stops waiting) and once ``stop`` is set,
        evicting nothing after either; the result lists what was evicted, what a budget blocked, what
        remains, and why it stopped short.
        """
        started = self._monotonic()
        notes: list[str] = []
        last_poll: float | None = None
        if deadline is not None:
            allowed = max(deadline - time.monotonic(), 0.0)
            # The last read of what is left has to come back before the executor stops waiting too.
            last_poll = deadline - min(_FINAL_READ_S, allowed / 4)
            if allowed < timeout_s:
                notes.append(
                    f"asked for {timeout_s:g} s; the executor allows {allowed:.0f} s: "
                    "the drain stops at the executor's deadline"
                )

        def out_of_time() -> bool:
            return (stop is not None and stop.is_set()) or (
                last_poll is not None and time.monotonic() >= last_poll
            )

        self.cordon_node(name, dry_run=dry_run)
        evicted: list[str] = []
        blocked: dict[str, BlockedPod] = {}
        while True:
            pods = [p for p in self.list_pods_on_node(name) if p.phase not in ("Succeeded", "Failed")]
            skipped = [f"{p.namespace}/{p.name}" for p in pods if p.daemonset]
            todo = [p for p in pods if not p.daemonset and not p.terminating]
            for pod in todo:
                if out_of_time():
                    break
                key = f"{pod.namespace}/{pod.name}"
                if self._evict(pod, dry_run, blocked):
                    evicted.append(key)
                    blocked.pop(key, None)
            remaining = [f"{p.namespace}/{p.name}" for p in todo if f"{p.namespace}/{p.name}" not in evicted]
            elapsed = self._monotonic() - started
            cut_short = out_of_time()
            if dry_run or not remaining or elapsed >= timeout_s or cut_short:
                # Once the executor has stopped waiting nobody reads the result: no last read either.
                if not dry_run and not (stop is not None and stop.is_set()):
                    left = [
                        p
                        for p in self.list_pods_on_node(name)
                        if not p.daemonset and p.phase not in ("Succeeded", "Failed")
                    ]
                    remaining = [f"{p.namespace}/{p.name}" for p in left]
                stopped_at_deadline = cut_short and bool(remaining)
                if stopped_at_deadline:
                    notes.append(f"stopped at the executor's deadline with {len(remaining)} pod(s) left")
                return DrainResult(
                    node=name,
                    dry_run=dry_run,
                    evicted=sorted(set(evicted)),
                    blocked=[b for k, b in sorted(blocked.items()) if k in remaining or dry_run],
                    remaining=remaining,
                    skipped_daemonset=skipped,
                    completed=not remaining and not dry_run,
                    elapsed_s=round(elapsed, 3),
                    stopped_at_deadline=stopped_at_deadline,
                    notes=notes,
                )
            wait = min(poll_s, max(timeout_s - elapsed, 0))
            if last_poll is not None:
                wait = min(wait, max(last_poll - time.monotonic(), 0.0))
            self._sleep(wait)

    def _evict(self, pod: PodInfo, dry_run: bool, blocked: dict[str, BlockedPod]) -> bool:
        """One eviction: True when it was accepted; a budget's refusal is noted in ``blocked``."""
        key = f"{pod.namespace}/{pod.name}"
        # Only the pod listed: a controller that keeps names (a StatefulSet, a LeaderWorkerSet) may have
        # made another under its name, elsewhere, since.
        body = client.V1Eviction(
            metadata=client.V1ObjectMeta(name=pod.name, namespace=pod.namespace),
            delete_options=client.V1DeleteOptions(
                dry_run=["All"] if dry_run else None,
                preconditions=client.V1Preconditions(uid=pod.uid) if pod.uid else None,
            ),
        )
        try:
            self.core.create_namespaced_pod_eviction(
                pod.name,
                pod.namespace,
                body,
                dry_run="All" if dry_run else None,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status == 429:
                blocked[key] = BlockedPod(namespace=pod.namespace, name=pod.name, reason=_message(exc))
                return False
            if exc.status == 404:
                return False
            if exc.status == 409 and "precondition" in _message(exc).lower():
                return False  # the pod listed is gone; one made since under its name is not ours to evict
            raise ToolError(f"evicting {key}: {_message(exc)}", exc.status, exc.reason) from exc
        return True

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
