"""The deployment and ReplicaSet controllers: a deployment's ReplicaSet per pod-template hash, the pods it
keeps at the desired count, rollouts that scale old ReplicaSets down, and the status the owners report.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from sandbox.fleet.store import Obj, thaw
from sandbox.fleet.world.jobsets import JOBSET_NAME
from sandbox.fleet.world.spec import _SUFFIX_ALPHABET, is_ready, is_terminating
from sandbox.fleet.world.state import FleetState


def _template_hash(template: Any) -> str:
    digest = hashlib.sha256(orjson.dumps(template, option=orjson.OPT_SORT_KEYS)).digest()
    return "".join(_SUFFIX_ALPHABET[b % len(_SUFFIX_ALPHABET)] for b in digest[:10])


class WorkloadsMixin(FleetState):
    """Reconciles Deployments and ReplicaSets, and replaces pods that go away."""

    def _owned_pods(self, ns: str, owner_uid: str) -> list[Obj]:
        return [
            p
            for p in self.store.items("pods", ns)
            if any(r.get("uid") == owner_uid for r in p["metadata"].get("ownerReferences") or [])
        ]

    def reconcile_deployment(self, ns: str, name: str) -> None:
        # Deleting a pod re-enters the owner's reconcile; one pass at a time per deployment.
        if (ns, name) in self._reconciling:
            return
        self._reconciling.add((ns, name))
        try:
            self._reconcile_deployment(ns, name)
        finally:
            self._reconciling.discard((ns, name))

    def _reconcile_deployment(self, ns: str, name: str) -> None:
        dep = self.store.get("deployments", ns, name)
        if dep is None:
            return
        template = dep["spec"]["template"]
        pth = _template_hash(template)
        rs_name = f"{name}-{pth}"
        rs = self.store.get("replicasets", ns, rs_name)
        desired = int(dep["spec"].get("replicas", 1))
        if rs is None:
            revision = 1 + sum(
                1
                for r in self.store.items("replicasets", ns)
                if any(
                    o.get("uid") == dep["metadata"]["uid"] for o in r["metadata"].get("ownerReferences") or []
                )
            )
            rs = self.store.put(
                "replicasets",
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": rs_name,
                        "namespace": ns,
                        "uid": self._uid(),
                        "creationTimestamp": self.stamp(),
                        "generation": 1,
                        "labels": {**template["metadata"].get("labels", {}), "pod-template-hash": pth},
                        "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "Deployment",
                                "name": name,
                                "uid": dep["metadata"]["uid"],
                                "controller": True,
                                "blockOwnerDeletion": True,
                            }
                        ],
                    },
                    "spec": {
                        "replicas": desired,
                        "selector": {
                            "matchLabels": {
                                **dep["spec"]["selector"]["matchLabels"],
                                "pod-template-hash": pth,
                            }
                        },
                        "template": thaw(template),
                    },
                    "status": {},
                },
            )
            if revision > 1:
                self.event(
                    dep,
                    "Normal",
                    "ScalingReplicaSet",
                    f"Scaled up replica set {rs_name} to {desired}",
                    "deployment-controller",
                )
        rs_revision = rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        if (dep["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision") != rs_revision:
            annotated = thaw(dep)
            annotated["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = (
                rs_revision
            )
            dep = self.store.put("deployments", annotated)
        current = [p for p in self._owned_pods(ns, rs["metadata"]["uid"]) if not is_terminating(p)]
        for _ in range(desired - len(current)):
            pod = self._new_pod(
                "ReplicaSet", rs, template, f"{rs_name}-{self._suffix()}", {"pod-template-hash": pth}
            )
            self._place(pod)
        if len(current) > desired:
            surplus = sorted(
                current,
                key=lambda p: (p["status"].get("phase") == "Running", p["metadata"]["creationTimestamp"]),
            )
            for pod in surplus[: len(current) - desired]:
                if self.store.get("pods", ns, pod["metadata"]["name"]) is not None:
                    self.delete_pod(ns, pod["metadata"]["name"], grace=None, reason="ScaledDown")
        # Old replica sets of the deployment are scaled to zero once the new one is created.
        for other in list(self.store.items("replicasets", ns)):
            if other["metadata"]["name"] == rs_name:
                continue
            if not any(
                o.get("uid") == dep["metadata"]["uid"] for o in other["metadata"].get("ownerReferences") or []
            ):
                continue
            for pod in self._owned_pods(ns, other["metadata"]["uid"]):
                if (
                    not is_terminating(pod)
                    and self.store.get("pods", ns, pod["metadata"]["name"]) is not None
                ):
                    self.delete_pod(ns, pod["metadata"]["name"], grace=None, reason="RolloutReplaced")
            if other["spec"].get("replicas"):
                old = thaw(other)
                old["spec"]["replicas"] = 0
                self.store.put("replicasets", old)
        self._refresh_owner_status(ns, name)
        self._refresh_pdbs(ns)

    def _refresh_owner_status(self, ns: str, dep_name: str) -> None:
        dep = self.store.get("deployments", ns, dep_name)
        if dep is None:
            return
        pth = _template_hash(dep["spec"]["template"])
        total = updated = ready = 0
        for rs in list(self.store.items("replicasets", ns)):
            if not any(
                o.get("uid") == dep["metadata"]["uid"] for o in rs["metadata"].get("ownerReferences") or []
            ):
                continue
            pods = [p for p in self._owned_pods(ns, rs["metadata"]["uid"]) if not is_terminating(p)]
            rs_ready = sum(1 for p in pods if is_ready(p))
            status = {
                "replicas": len(pods),
                "fullyLabeledReplicas": len(pods),
                "readyReplicas": rs_ready,
                "availableReplicas": rs_ready,
                "observedGeneration": rs["metadata"].get("generation", 1),
            }
            if rs["status"] != status:
                new = thaw(rs)
                new["status"] = status
                self.store.put("replicasets", new)
            total += len(pods)
            ready += rs_ready
            if rs["metadata"]["labels"].get("pod-template-hash") == pth:
                updated = len(pods)
        desired = int(dep["spec"].get("replicas", 1))
        at = self.stamp()
        available = ready >= desired
        status = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(desired - ready, 0),
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if available else "False",
                    "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                    "message": "Deployment has minimum availability."
                    if available
                    else "Deployment does not have minimum availability.",
                    "lastUpdateTime": at,
                    "lastTransitionTime": at,
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": f'ReplicaSet "{dep_name}-{pth}" has successfully progressed.',
                    "lastUpdateTime": at,
                    "lastTransitionTime": at,
                },
            ],
        }
        old = {k: v for k, v in dep["status"].items() if k != "conditions"}
        if old != {k: v for k, v in status.items() if k != "conditions"}:
            new = thaw(dep)
            new["status"] = status
            self.store.put("deployments", new)

    def _refresh_owner(self, pod: Obj) -> None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job":
                name = (pod["metadata"].get("labels") or {}).get(JOBSET_NAME)
                if name and ("jobsets", f"{pod['metadata']['namespace']}/{name}") not in self._reconciling:
                    self._refresh_jobset_status(pod["metadata"]["namespace"], name)
            if ref.get("kind") == "LeaderWorkerSet":
                key = ("leaderworkersets", f"{pod['metadata']['namespace']}/{ref['name']}")
                if key not in self._reconciling:
                    self._refresh_lws_status(pod["metadata"]["namespace"], ref["name"])
            if ref.get("kind") == "ReplicaSet":
                rs = self.store.get("replicasets", pod["metadata"]["namespace"], ref["name"])
                for dref in (rs or {}).get("metadata", {}).get("ownerReferences") or []:
                    if dref.get("kind") == "Deployment":
                        self._refresh_owner_status(pod["metadata"]["namespace"], dref["name"])

    def _reconcile_owner(self, pod: Obj) -> None:
        """After a pod goes away: its ReplicaSet's deployment, or its DaemonSet, replaces it."""
        ns = pod["metadata"]["namespace"]
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "ReplicaSet":
                rs = self.store.get("replicasets", ns, ref["name"])
                for dref in (rs or {}).get("metadata", {}).get("ownerReferences") or []:
                    if dref.get("kind") == "Deployment":
                        self.reconcile_deployment(ns, dref["name"])
            elif ref.get("kind") == "DaemonSet" and pod["spec"].get("nodeName"):
                self._ensure_daemon_pod(pod["spec"]["nodeName"], ns, ref["name"])
            elif ref.get("kind") == "Job":
                self._jobset_pod_gone(pod)
            elif ref.get("kind") == "LeaderWorkerSet":
                self._lws_pod_gone(pod)
