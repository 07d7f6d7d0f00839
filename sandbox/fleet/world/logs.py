"""Container logs: plausible, deterministic output generated for each pod, plus the lines faults and the
admin API append.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta

from sandbox.fleet.clock import ts
from sandbox.fleet.store import Obj
from sandbox.fleet.world.spec import AGENT_NAMESPACE, AGENT_PORT, FleetError, not_found
from sandbox.fleet.world.state import FleetState


class LogsMixin(FleetState):
    """Serves pods' container logs."""

    def pod_log(self, ns: str, name: str, container: str | None, tail: int | None, previous: bool) -> str:
        pod = self.store.get("pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        if container and container not in names:
            raise FleetError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        if pod["status"].get("phase") == "Pending":
            raise FleetError(
                400,
                "BadRequest",
                f'container "{names[0]}" in pod "{name}" is waiting to start: ContainerCreating',
            )
        lines = list(_generated_log(pod, previous, self.now()))
        lines += self.logs.get(f"{ns}/{name}", [])
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        return "".join(line + "\n" for line in lines)

    def append_log(self, ns: str, name: str, lines: Iterable[str]) -> None:
        if self.store.get("pods", ns, name) is None:
            raise not_found("pods", name)
        self.logs.setdefault(f"{ns}/{name}", []).extend(lines)


def _generated_log(pod: Obj, previous: bool, now: datetime) -> Iterable[str]:
    """Plausible, deterministic container output for a pod."""
    meta = pod["metadata"]
    if meta["namespace"] == AGENT_NAMESPACE:
        yield f"{meta['creationTimestamp']} node-agent: serving GPU health on :{AGENT_PORT} (simulated NVML)"
        return
    cs = (pod["status"].get("containerStatuses") or [{}])[0]
    last = (cs.get("lastState") or {}).get("terminated")
    if previous or (cs.get("state") or {}).get("waiting"):
        if last and last.get("reason") == "OOMKilled":
            yield f"{last['startedAt']} loading dataset shard 17/64 into pinned memory"
            yield f"{last['finishedAt']} Killed"
            return
        if last:
            yield f"{last['startedAt']} Traceback (most recent call last):"
            yield f'{last["startedAt"]}   File "/app/train.py", line 211, in <module>'
            yield f"{last['finishedAt']} RuntimeError: CUDA error: an illegal memory access was encountered"
            return
    start = datetime.fromisoformat(
        pod["status"].get("startTime", meta["creationTimestamp"]).replace("Z", "+00:00")
    )
    seed = int(hashlib.sha256(meta["uid"].encode()).hexdigest()[:8], 16)
    steps = max(1, min(int((now - start).total_seconds() // 30) + 1, 50))
    for i in range(steps):
        at = ts(start + timedelta(seconds=30 * i))
        loss = 2.5 / (1 + 0.05 * (i + seed % 100))
        yield f"{at} step={1000 * (seed % 7) + 100 * i} loss={loss:.4f} tokens/s={9000 + seed % 3000}"
