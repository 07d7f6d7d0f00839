"""Kubernetes Events: what every controller, the kubelet and the monitors report about an object."""

from __future__ import annotations

from sandbox.fleet.store import Obj
from sandbox.fleet.world.state import FleetState


class EventsMixin(FleetState):
    """Records Events."""

    def event(self, obj: Obj, etype: str, reason: str, message: str, component: str) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        self._event_seq += 1
        at = self.stamp()
        name = f"{meta['name']}.{self._event_seq:016x}"
        self.store.put(
            "events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": ns, "uid": self._uid(), "creationTimestamp": at},
                "involvedObject": {
                    "kind": obj["kind"],
                    "name": meta["name"],
                    "namespace": meta.get("namespace", ""),
                    "uid": meta.get("uid", ""),
                    "apiVersion": obj["apiVersion"],
                },
                "reason": reason,
                "message": message,
                "type": etype,
                "count": 1,
                "firstTimestamp": at,
                "lastTimestamp": at,
                "source": {
                    "component": component,
                    **(
                        {"host": obj["spec"]["nodeName"]}
                        if obj["kind"] == "Pod" and obj["spec"].get("nodeName")
                        else {}
                    ),
                },
                "reportingComponent": component,
                "reportingInstance": "",
            },
        )
