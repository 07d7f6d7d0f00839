"""The ground truth the evals score an agent against (never shown to the agent): capacity out of service,
pods disrupted and not ready, customers affected, the faults, and every write the API accepted.
"""

from __future__ import annotations

from typing import Any

from sandbox.fleet.world.spec import AGENT_NAMESPACE, CUSTOMER_LABEL, POOL_LABEL, is_ready, is_terminating
from sandbox.fleet.world.state import FleetState


class TruthMixin(FleetState):
    """Reports the world's ground truth and records the API's writes."""

    def truth(self) -> dict[str, Any]:
        pools: dict[str, dict[str, int]] = {}
        for node in self.store.items("nodes"):
            name = node["metadata"]["name"]
            pool = node["metadata"]["labels"][POOL_LABEL]
            p = pools.setdefault(
                pool,
                {
                    "nodes": 0,
                    "gpus": 0,
                    "gpus_out_of_service": 0,
                    "nodes_cordoned": 0,
                    "nodes_not_ready": 0,
                    "nodes_tainted": 0,
                },
            )
            p["nodes"] += 1
            p["gpus"] += self.spec.gpus_per_node
            down = self._node_down(name)
            cordoned = bool(node["spec"].get("unschedulable"))
            p["nodes_cordoned"] += cordoned
            p["nodes_not_ready"] += down
            p["nodes_tainted"] += any(
                t["key"].startswith("supply-agent.io/") for t in node["spec"].get("taints") or []
            )
            if down or cordoned:
                p["gpus_out_of_service"] += self.spec.gpus_per_node
            else:
                p["gpus_out_of_service"] += len(self._unhealthy.get(name, set()))
        not_ready_pods = []
        for pod in self.store.items("pods"):
            ns = pod["metadata"]["namespace"]
            if ns == AGENT_NAMESPACE:
                continue
            if pod["status"].get("phase") != "Running" or not is_ready(pod) or is_terminating(pod):
                not_ready_pods.append(
                    {
                        "namespace": ns,
                        "pod": pod["metadata"]["name"],
                        "customer": (pod["metadata"].get("labels") or {}).get(CUSTOMER_LABEL, ""),
                        "phase": "Terminating" if is_terminating(pod) else pod["status"].get("phase"),
                    }
                )
        customers = sorted({d["customer"] for d in self.disruptions + not_ready_pods if d["customer"]})
        return {
            "now": self.stamp(),
            "pools": pools,
            "gpus_out_of_service": sum(p["gpus_out_of_service"] for p in pools.values()),
            "pods_disrupted": self.disruptions,
            "pods_not_ready": not_ready_pods,
            "customers_affected": customers,
            "faults": [f.model_dump(mode="json") for f in self.faults.values()],
            "writes": self.writes,
        }

    def record_write(
        self, verb: str, resource: str, namespace: str, name: str, subresource: str, dry_run: bool, code: int
    ) -> None:
        self.writes.append(
            {
                "at": self.stamp(),
                "verb": verb,
                "resource": resource,
                "namespace": namespace,
                "name": name,
                "subresource": subresource,
                "dry_run": dry_run,
                "code": code,
            }
        )
