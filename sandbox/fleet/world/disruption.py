"""Pod disruption: PodDisruptionBudget status, the eviction API that honours it, and pod deletion with
graceful termination (which a dead or cut-off kubelet never confirms). Every tenant pod taken down is
recorded, for the truth the evals score.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sandbox.fleet.clock import ts
from sandbox.fleet.faults import FaultKind
from sandbox.fleet.selectors import labels_match, selector_from_match_labels
from sandbox.fleet.store import Obj, thaw
from sandbox.fleet.world.spec import (
    AGENT_NAMESPACE,
    CUSTOMER_LABEL,
    FleetError,
    is_ready,
    is_terminating,
    not_found,
)
from sandbox.fleet.world.state import FleetState


class DisruptionMixin(FleetState):
    """Deletes and evicts pods, keeping disruption budgets and the disruption record current."""

    def pdbs_for(self, pod: Obj) -> list[Obj]:
        labels = pod["metadata"].get("labels") or {}
        return [
            pdb
            for pdb in self.store.items("poddisruptionbudgets", pod["metadata"]["namespace"])
            if labels_match(selector_from_match_labels(pdb["spec"].get("selector")), labels)
        ]

    def _refresh_pdbs(self, ns: str) -> None:
        pdbs = list(self.store.items("poddisruptionbudgets", ns))
        if not pdbs:
            return
        pods = [p for p in self.store.items("pods", ns) if not is_terminating(p)]
        for pdb in pdbs:
            reqs = selector_from_match_labels(pdb["spec"].get("selector"))
            matched = [p for p in pods if labels_match(reqs, p["metadata"].get("labels"))]
            expected = len(matched)
            healthy = sum(1 for p in matched if is_ready(p))
            desired = self._desired_healthy(pdb["spec"], expected)
            allowed = max(healthy - desired, 0)
            status = {
                "observedGeneration": pdb["metadata"].get("generation", 1),
                "currentHealthy": healthy,
                "desiredHealthy": desired,
                "expectedPods": expected,
                "disruptionsAllowed": allowed,
                "conditions": [
                    {
                        "type": "DisruptionAllowed",
                        "status": "True" if allowed else "False",
                        "reason": "SufficientPods" if allowed else "InsufficientPods",
                        "message": "",
                        "observedGeneration": pdb["metadata"].get("generation", 1),
                        "lastTransitionTime": self.stamp(),
                    }
                ],
            }
            old = {k: v for k, v in pdb["status"].items() if k != "conditions"}
            if old != {k: v for k, v in status.items() if k != "conditions"}:
                new = thaw(pdb)
                new["status"] = status
                self.store.put("poddisruptionbudgets", new)

    @staticmethod
    def _scaled(value: Any, total: int, round_up: bool) -> int:
        if isinstance(value, str) and value.endswith("%"):
            frac = int(value[:-1]) * total / 100
            return int(-(-frac // 1)) if round_up else int(frac)
        return int(value)

    def _desired_healthy(self, spec: dict[str, Any], expected: int) -> int:
        if spec.get("minAvailable") is not None:
            return self._scaled(spec["minAvailable"], expected, True)
        if spec.get("maxUnavailable") is not None:
            return max(expected - self._scaled(spec["maxUnavailable"], expected, True), 0)
        return 0

    def evict(self, ns: str, name: str, dry_run: bool = False, uid: str | None = None) -> None:
        """Evict a pod through its budget; ``uid`` (the eviction's ``deleteOptions.preconditions.uid``):
        only that pod, not another made since under its name (409, as the API server says)."""
        pod = self.store.get("pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        if uid and pod["metadata"].get("uid") != uid:
            raise FleetError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on pods "{name}": the UID in the precondition ({uid}) does '
                f"not match the UID in record ({pod['metadata'].get('uid')}). The object might have been "
                "deleted and then recreated",
                {"name": name, "kind": "pods"},
            )
        if is_terminating(pod):
            return
        pdbs = self.pdbs_for(pod)
        if len(pdbs) > 1:
            raise FleetError(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            )
        if pdbs and pod["status"].get("phase") == "Running":
            pdb = pdbs[0]
            st = pdb["status"]
            healthy_pod = is_ready(pod)
            policy = pdb["spec"].get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
            unhealthy_ok = not healthy_pod and (
                policy == "AlwaysAllow" or st.get("currentHealthy", 0) >= st.get("desiredHealthy", 0)
            )
            if not unhealthy_ok and st.get("disruptionsAllowed", 0) <= 0:
                msg = (
                    f"The disruption budget {pdb['metadata']['name']} needs {st.get('desiredHealthy', 0)} healthy pods "
                    f"and has {st.get('currentHealthy', 0)} currently"
                )
                raise FleetError(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    {"causes": [{"reason": "DisruptionBudget", "message": msg}]},
                )
        if dry_run:
            return
        self.event(pod, "Normal", "Evicted", "Evicted by the eviction API", "eviction-api")
        self.delete_pod(ns, name, grace=None, reason="Evicted")

    def _kubelet_confirms(self, pod: Obj) -> bool:
        """Whether the node's kubelet can finish a graceful deletion (not when dead, cut off or stuck)."""
        node = pod["spec"].get("nodeName")
        if node and self._node_down(node):
            return False
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        return not any(
            f.kind == FaultKind.STUCK_TERMINATING and (f.namespace, f.pod) == key
            for f in self.faults.values()
        )

    def delete_pod(
        self, ns: str, name: str, grace: int | None, reason: str = "Deleted", dry_run: bool = False
    ) -> Obj:
        pod = self.store.get("pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        marked = thaw(pod)
        if not marked["metadata"].get("deletionTimestamp"):
            grace_s = (
                grace if grace is not None else int(pod["spec"].get("terminationGracePeriodSeconds", 30))
            )
            marked["metadata"]["deletionTimestamp"] = ts(self.now() + timedelta(seconds=grace_s))
            marked["metadata"]["deletionGracePeriodSeconds"] = grace_s
        if dry_run:
            return marked
        if grace != 0 and not self._kubelet_confirms(pod):
            if not pod["metadata"].get("deletionTimestamp"):
                stored = self.store.put("pods", marked)
                self._stop_meters(stored)
                self._record_disruption(stored, reason)
                self.event(
                    stored,
                    "Normal",
                    "Killing",
                    f"Stopping container {pod['spec']['containers'][0]['name']}",
                    "kubelet",
                )
                self._after_pod_change(stored)
            return self.store.get("pods", ns, name) or marked
        self._release(pod)
        gone = self.store.delete("pods", ns, name)
        assert gone is not None
        self._pending.pop((ns, name), None)
        self._stop_meters(pod)
        if not pod["metadata"].get("deletionTimestamp"):
            self._record_disruption(pod, reason)
        self._after_pod_change(pod)
        marked["metadata"]["resourceVersion"] = gone["metadata"]["resourceVersion"]
        return marked

    def _after_pod_change(self, pod: Obj) -> None:
        ns = pod["metadata"]["namespace"]
        self._reconcile_owner(pod)
        self._refresh_owner(pod)
        self._refresh_pdbs(ns)
        if ns == AGENT_NAMESPACE:
            self._refresh_daemonset_status()
        self.schedule_pending()

    def _record_disruption(self, pod: Obj, reason: str) -> None:
        if pod["metadata"]["namespace"] == AGENT_NAMESPACE:
            return
        self.disruptions.append(
            {
                "at": self.stamp(),
                "namespace": pod["metadata"]["namespace"],
                "pod": pod["metadata"]["name"],
                "customer": (pod["metadata"].get("labels") or {}).get(CUSTOMER_LABEL, ""),
                "node": pod["spec"].get("nodeName") or "",
                "reason": reason,
            }
        )
