"""Saving a fleet to a JSON-able snapshot and restoring it, with its random stream, so a restored fleet
goes on exactly as the saved one would have.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Self

from sandbox.fleet.clock import SimClock
from sandbox.fleet.faults import Fault
from sandbox.fleet.nvml_sim import SimNvml
from sandbox.fleet.world.spec import DRIVER_LABEL, GPU_INDICES_ANNOTATION, FleetSpec, Meter, is_terminating
from sandbox.fleet.world.state import FleetState
from tools.nvml import NvmlCollector


class SnapshotMixin(FleetState):
    """Snapshots and restores the whole world."""

    def snapshot(self) -> dict[str, Any]:
        return {
            "format": "supply-agent-fleet/v1",
            "spec": self.spec.model_dump(),
            "clock": self.clock.to_dict(),
            "rv": self.store.rv,
            "objects": self.store.dump(),
            "faults": [f.model_dump(mode="json") for f in self.faults.values()],
            "meters": [asdict(m) for m in self.meters.values()],
            "nvml": {n: sim.to_dict() for n, (sim, _) in self._agents.items()},
            "unhealthy": {n: sorted(s) for n, s in self._unhealthy.items() if s},
            "disruptions": self.disruptions,
            "writes": self.writes,
            "logs": self.logs,
            "seq": [self._fault_seq, self._event_seq],
            "restart_base": self._restart_base,
            "rng": self.rng.getstate()[1],
        }

    @classmethod
    def restore(cls, data: dict[str, Any], clock_mode: str | None = None) -> Self:
        if data.get("format") != "supply-agent-fleet/v1":
            raise ValueError(
                f"not a fleet snapshot (format {data.get('format')!r}, expected 'supply-agent-fleet/v1')"
            )
        clock = SimClock.from_dict(data["clock"])
        if clock_mode in ("real", "manual"):
            clock.mode = clock_mode  # type: ignore[assignment]
        fleet = cls(FleetSpec(**data["spec"]), clock)
        fleet.rng.setstate((3, tuple(data["rng"]), None))
        for kind, objs in data["objects"].items():
            fleet.store.load(kind, objs)
        fleet.store.rv = max(fleet.store.rv, int(data["rv"]))
        fleet.faults = {f["id"]: Fault(**f) for f in data["faults"]}
        fleet.meters = {m["id"]: Meter(**m) for m in data["meters"]}
        fleet.disruptions, fleet.writes, fleet.logs = data["disruptions"], data["writes"], data["logs"]
        fleet._fault_seq, fleet._event_seq = data["seq"]
        fleet._restart_base = dict(data.get("restart_base", {}))
        fleet._unhealthy = {n: set(v) for n, v in data["unhealthy"].items()}
        for node in fleet.store.items("nodes"):
            fleet._gpu_owner[node["metadata"]["name"]] = [None] * fleet.spec.gpus_per_node
        for pod in fleet.store.items("pods"):
            node_name = pod["spec"].get("nodeName")
            indices = (pod["metadata"].get("annotations") or {}).get(GPU_INDICES_ANNOTATION)
            if node_name and indices and not (is_terminating(pod) and False):
                for i in map(int, indices.split(",")):
                    fleet._gpu_owner[node_name][i] = (
                        f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
                    )
            if pod["status"].get("phase") == "Pending":
                fleet._pending[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = None
        for name in fleet._gpu_owner:
            fleet._rebucket(name)
        for name, state in data["nvml"].items():
            sim = SimNvml.from_dict(state)
            stored = fleet.store.get("nodes", "", name)
            if "driver_version" not in state and stored is not None:  # saved before NVML followed the label
                sim.set_driver_version(stored["metadata"]["labels"].get(DRIVER_LABEL, ""))
            collector = NvmlCollector(name, nvml=sim, clock=fleet.now)
            collector.start()
            fleet._agents[name] = (sim, collector)
        return fleet
