"""The node controller and kubelet status: a node's conditions, taints and allocatable GPUs, recomputed
from the faults on it, and the side effects of the agent's writes to a node (cordon, uncordon, taints).
"""

from __future__ import annotations

from sandbox.fleet.faults import GPU_FAULTS, FaultKind
from sandbox.fleet.store import Obj, thaw
from sandbox.fleet.world.spec import GPU
from sandbox.fleet.world.state import FleetState


def _condition(ctype: str, status: str, reason: str, message: str, at: str) -> dict[str, str]:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": at,
        "lastTransitionTime": at,
    }


class NodesMixin(FleetState):
    """Keeps each Node's status and taints consistent with the faults on it."""

    def node_changed(self, old: Obj, new: Obj) -> None:
        """Side effects of a write to a node (cordon, uncordon, taints)."""
        name = new["metadata"]["name"]
        was, now = bool(old["spec"].get("unschedulable")), bool(new["spec"].get("unschedulable"))
        if was != now:
            reason = "NodeNotSchedulable" if now else "NodeSchedulable"
            self.event(new, "Normal", reason, f"Node {name} status is now: {reason}", "kubelet")
        self._rebucket(name)
        self.schedule_pending()

    def _refresh_node(self, name: str) -> Obj:
        """Recompute a node's status, taints and allocatable from the faults on it."""
        node = thaw(self.node(name))
        at = self.stamp()
        faults = self.node_faults(name)
        kinds = {f.kind for f in faults}
        conditions = {c["type"]: c for c in node["status"]["conditions"]}

        def setc(ctype: str, status: str, reason: str, message: str) -> None:
            cur = conditions.get(ctype)
            if cur is None or (cur["status"], cur["reason"]) != (status, reason):
                conditions[ctype] = _condition(ctype, status, reason, message, at)
            else:
                cur["lastHeartbeatTime"] = at

        down = kinds & {FaultKind.NOT_READY, FaultKind.PARTITION}
        if down:
            for ctype in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready", "GpuHealthy"):
                setc(ctype, "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
        else:
            healthy = {c["type"]: c for c in self._healthy_conditions(at)}
            for ctype in ("MemoryPressure", "PIDPressure", "Ready"):
                setc(ctype, healthy[ctype]["status"], healthy[ctype]["reason"], healthy[ctype]["message"])
            if FaultKind.DISK_PRESSURE in kinds:
                setc("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure")
            else:
                setc("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure")
            bad = sorted(self._unhealthy.get(name, set()))
            if FaultKind.AGENT_DOWN in kinds:
                setc(
                    "GpuHealthy", "Unknown", "NodeAgentNotReporting", "node-agent is not reporting GPU health"
                )
            elif bad:
                xids = sorted({f.code for f in faults if f.kind in GPU_FAULTS and f.gpu in bad and f.code})
                setc(
                    "GpuHealthy",
                    "False",
                    "GpuUnhealthy",
                    f"node-agent: GPU(s) {','.join(map(str, bad))} unhealthy (XID {','.join(map(str, xids))})",
                )
            else:
                setc("GpuHealthy", "True", "AllGpusHealthy", "node-agent: all GPUs report healthy")
        node["status"]["conditions"] = list(conditions.values())
        own = {"node.kubernetes.io/unreachable", "node.kubernetes.io/disk-pressure"}
        taints = [t for t in node["spec"].get("taints") or [] if t["key"] not in own]
        if down:
            taints += [
                {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": at},
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": at},
            ]
        if FaultKind.DISK_PRESSURE in kinds and not down:
            taints.append(
                {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule", "timeAdded": at}
            )
        old_taints = {(t["key"], t["effect"]): t for t in node["spec"].get("taints") or []}
        taints = [old_taints.get((t["key"], t["effect"]), t) for t in taints]
        if taints:
            node["spec"]["taints"] = taints
        else:
            node["spec"].pop("taints", None)
        node["status"]["allocatable"][GPU] = str(
            self.spec.gpus_per_node - len(self._unhealthy.get(name, set()))
        )
        stored = self.store.put("nodes", node)
        self._rebucket(name)
        return stored

    def _healthy_conditions(self, at: str) -> list[dict[str, str]]:
        return [
            _condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                at,
            ),
            _condition(
                "DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", at
            ),
            _condition(
                "PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", at
            ),
            _condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", at),
            _condition("GpuHealthy", "True", "AllGpusHealthy", "node-agent: all GPUs report healthy", at),
        ]
