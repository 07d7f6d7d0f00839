"""Pod objects: a pod as its controller stamps it out of a template, and the statuses the kubelet reports for
it (running, pending, crash-looping). Shared by the workload and DaemonSet controllers, the scheduler and
fault injection.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sandbox.fleet.store import Obj, thaw
from sandbox.fleet.world.spec import TOLERATION_SECONDS
from sandbox.fleet.world.state import FleetState


class PodsMixin(FleetState):
    """Builds Pod objects and their kubelet-reported statuses."""

    def _new_pod(
        self,
        owner_kind: str,
        owner: Obj,
        template: dict[str, Any],
        name: str,
        extra_labels: dict[str, str],
        owner_api: str = "apps/v1",
    ) -> Obj:
        meta = owner["metadata"]
        pod_template = thaw(template)
        labels = {**(pod_template.get("metadata", {}).get("labels") or {}), **extra_labels}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "uid": self._uid(),
                "creationTimestamp": self.stamp(),
                "labels": labels,
                "annotations": dict(pod_template.get("metadata", {}).get("annotations") or {}),
                "generateName": name.rsplit("-", 1)[0] + "-",
                "ownerReferences": [
                    {
                        "apiVersion": owner_api,
                        "kind": owner_kind,
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                **pod_template["spec"],
                "schedulerName": "default-scheduler",
                "enableServiceLinks": True,
                "tolerations": [
                    *(pod_template["spec"].get("tolerations") or []),
                    {
                        "key": "node.kubernetes.io/not-ready",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": TOLERATION_SECONDS,
                    },
                    {
                        "key": "node.kubernetes.io/unreachable",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": TOLERATION_SECONDS,
                    },
                ]
                if owner_kind != "DaemonSet"
                else list(pod_template["spec"].get("tolerations") or []),
            },
            "status": {},
        }

    def _running_status(self, pod: Obj, host_ip: str, at: str, restarts: int = 0) -> dict[str, Any]:
        c = pod["spec"]["containers"][0]
        h = hashlib.sha256(pod["metadata"]["uid"].encode()).digest()
        return {
            "phase": "Running",
            "conditions": [
                {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": at}
                for t in (
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                )
            ],
            "hostIP": host_ip,
            "podIP": f"172.{16 + h[0] % 16}.{h[1]}.{h[2] % 254 + 1}",
            "startTime": at,
            "qosClass": "Burstable",
            "containerStatuses": [
                {
                    "name": c["name"],
                    "ready": True,
                    "started": True,
                    "restartCount": restarts,
                    "image": c["image"],
                    "imageID": f"{c['image']}@sha256:{h.hex()}",
                    "containerID": f"containerd://{h.hex()}",
                    "state": {"running": {"startedAt": at}},
                    "lastState": {},
                }
            ],
        }

    def _pending_status(self, message: str) -> dict[str, Any]:
        return {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": self.stamp(),
                }
            ],
            "qosClass": "Burstable",
        }

    def _set_crashloop_status(self, pod: Obj, reason: str, exit_code: int, restarts: int) -> None:
        at = self.stamp()
        for cond in pod["status"].get("conditions") or []:
            if cond["type"] in ("Ready", "ContainersReady"):
                cond["status"], cond["lastTransitionTime"] = "False", at
        for cs in pod["status"].get("containerStatuses") or []:
            cs.update(
                ready=False,
                started=False,
                restartCount=cs.get("restartCount", 0) + restarts,
                state={
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off 10s restarting failed container={cs['name']} pod={pod['metadata']['name']}",
                    }
                },
                lastState={
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": reason,
                        "startedAt": at,
                        "finishedAt": at,
                        "containerID": cs.get("containerID", ""),
                    }
                },
            )
