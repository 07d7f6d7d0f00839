"""GPU-seconds meters, as a billing pipeline's exporter keeps them: one per running GPU pod, stopped when the
pod stops or its node dies (double metering is a fault that adds a second one).
"""

from __future__ import annotations

from typing import Any

from sandbox.fleet.store import Obj
from sandbox.fleet.world.spec import CUSTOMER_LABEL, Meter, _resource_count
from sandbox.fleet.world.state import FleetState


class MetersMixin(FleetState):
    """Starts, stops and reads the pods' GPU-seconds meters."""

    def _start_meter(self, pod: Obj) -> None:
        gpus = _resource_count(pod)
        node = pod["spec"].get("nodeName")
        if not gpus or not node or pod["status"].get("phase") != "Running":
            return
        mid = f"m-{pod['metadata']['uid']}"
        meter = self.meters.get(mid)
        if meter is None:
            self.meters[mid] = Meter(
                mid,
                pod["metadata"]["namespace"],
                pod["metadata"]["name"],
                pod["metadata"]["uid"],
                (pod["metadata"].get("labels") or {}).get(CUSTOMER_LABEL, ""),
                node,
                gpus,
                1,
                self.now().isoformat(),
            )
        elif not meter.rate:
            meter.set_rate(1, self.now())

    def _stop_meters(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        for mid in (f"m-{uid}", f"m-{uid}-dup"):
            if mid in self.meters and self.meters[mid].rate:
                self.meters[mid].set_rate(0, self.now())

    def meter_readings(
        self, namespace: str | None = None, pod: str | None = None, customer: str | None = None
    ) -> list[dict[str, Any]]:
        now = self.now()
        out = []
        for m in self.meters.values():
            if (namespace and m.namespace != namespace) or (pod and m.pod != pod):
                continue
            if customer and m.customer != customer:
                continue
            out.append(
                {
                    "meter": m.id,
                    "namespace": m.namespace,
                    "pod": m.pod,
                    "pod_uid": m.pod_uid,
                    "customer": m.customer,
                    "node": m.node,
                    "gpus": m.gpus,
                    "running": bool(m.rate),
                    "gpu_seconds": round(m.reading(now), 3),
                }
            )
        return out
