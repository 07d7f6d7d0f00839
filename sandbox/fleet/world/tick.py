"""Controllers that act on elapsed time: crash-loop restarts with the kubelet's back-off, taint-based
eviction from dead or cut-off nodes, and the Event TTL.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sandbox.fleet.clock import ts
from sandbox.fleet.faults import FaultKind
from sandbox.fleet.store import thaw
from sandbox.fleet.world.spec import AGENT_NAMESPACE, TOLERATION_SECONDS, is_terminating
from sandbox.fleet.world.state import FleetState


class TickMixin(FleetState):
    """Advances the clock and runs the time-driven controllers."""

    def tick(self) -> None:
        """Controllers that act on elapsed time: crash-loop restarts, taint-based eviction, event TTL."""
        now = self.now()
        for fault in list(self.faults.values()):
            elapsed = (now - fault.started_at).total_seconds()
            if fault.kind in (FaultKind.CRASHLOOP, FaultKind.OOMKILL) and fault.namespace and fault.pod:
                pod = self.store.get("pods", fault.namespace, fault.pod)
                if pod is not None and pod["status"].get("containerStatuses"):
                    want = 1 + _restarts_after(elapsed)
                    cs = pod["status"]["containerStatuses"][0]
                    base = self._restart_base.get(fault.id, 0)
                    if cs.get("restartCount", 0) < base + want:
                        new = thaw(pod)
                        new["status"]["containerStatuses"][0]["restartCount"] = base + want
                        self.store.put("pods", new)
            if (
                fault.kind in (FaultKind.NOT_READY, FaultKind.PARTITION)
                and fault.node
                and elapsed >= TOLERATION_SECONDS
            ):
                for listed in self.store.pods_on_node(fault.node):
                    # An eviction above may have made another pod under a listed name, elsewhere.
                    pod = self.store.get("pods", listed["metadata"]["namespace"], listed["metadata"]["name"])
                    if pod is None or pod["metadata"].get("uid") != listed["metadata"].get("uid"):
                        continue
                    if pod["metadata"]["namespace"] != AGENT_NAMESPACE and not is_terminating(pod):
                        self.event(
                            pod,
                            "Normal",
                            "TaintManagerEviction",
                            f"Marking for deletion Pod {pod['metadata']['namespace']}/{pod['metadata']['name']}",
                            "taint-eviction-controller",
                        )
                        self.delete_pod(
                            pod["metadata"]["namespace"],
                            pod["metadata"]["name"],
                            grace=None,
                            reason="TaintManagerEviction",
                        )
        self._checkpoint_jobsets(now)
        self._pace_jobsets(now)
        cutoff = ts(now - timedelta(hours=1))
        for ev in [e for e in self.store.items("events") if e["lastTimestamp"] < cutoff]:
            self.store.delete("events", ev["metadata"]["namespace"], ev["metadata"]["name"])

    def advance(self, seconds: float) -> datetime:
        self.clock.advance(seconds)
        self.tick()
        return self.now()


def _restarts_after(elapsed: float) -> int:
    """Kubelet crash-loop back-off: 10 s doubling to a 300 s cap between restarts."""
    count, t, delay = 0, 0.0, 10.0
    while t + delay <= elapsed:
        t += delay
        count += 1
        delay = min(delay * 2, 300.0)
    return count
