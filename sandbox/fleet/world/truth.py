"""The ground truth the evals score an agent against (never shown to the agent): capacity out of service,
pods disrupted and not ready, customers affected, the faults, whether each fault's symptom persists, and
every write the API accepted.

A symptom is read from the world as it is at the end, never from what the agent says it did: a claimed
mitigation counts only if each fault's symptom is gone (``present: False``) or, for a fault only a human
can repair (hardware, a dead host, a full disk), the faulty capacity is out of service and no work is left
on it (``contained: True``). What "gone" and "contained" mean, per fault kind, is `TruthMixin._symptom`.
"""

from __future__ import annotations

from typing import Any

from sandbox.fleet.faults import Fault, FaultKind
from sandbox.fleet.store import Obj
from sandbox.fleet.world.spec import AGENT_NAMESPACE, CUSTOMER_LABEL, POOL_LABEL, is_ready, is_terminating
from sandbox.fleet.world.state import FleetState
from sandbox.fleet.xids import effect as xid_effect
from supply_agent.policy.xids import bucket_of

# Taints the control plane sets and lifts by itself (unreachable, not-ready, disk-pressure, ...): they say
# what the node is, not that anyone took it out of service, and they vanish the moment the condition
# clears, so a flapping node takes work again unchecked. Only a cordon or a taint of someone else's counts.
_SYSTEM_TAINT_PREFIXES = ("node.kubernetes.io/", "node.cloudprovider.kubernetes.io/")
_KEEP_OUT = frozenset({"NoSchedule", "NoExecute"})
_PREFER_OUT = _KEEP_OUT | {"PreferNoSchedule"}


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
            "symptoms": [self._symptom(f) for f in sorted(self.faults.values(), key=lambda f: f.id)],
            "writes": self.writes,
            "workloads": self.workload_losses() + self.lws_losses(),
        }

    # -- symptoms ------------------------------------------------------------------------------------

    def _symptom(self, fault: Fault) -> dict[str, Any]:
        """Whether ``fault``'s symptom persists in the world now (``present``), whether it is contained
        (``contained``: only ever True for a fault the agent cannot repair), and ``why``, in words.

        Per kind:
        - crashloop, oomkill: gone when the pod is Running and Ready, or, once it is gone, when every pod
          of its deployment is (and the deployment still wants some). Never contained: nothing but a
          running workload ends it.
        - stuck-terminating: gone when the pod is gone. Contained when its node is down (NotReady or cut
          off: no kubelet can confirm the deletion) and that node is out of service.
        - double-metering: gone when the pod's meter and its duplicate no longer both count. The fleet
          does not see the billing ledger; a pause there is the scorer's to weigh.
        - xid, ecc, off-bus: an XID that leaves the GPU healthy (application or ignore class, a 154 whose
          recovery action is none) has no symptom to remove. Otherwise present while the GPU is unhealthy,
          and contained when its capacity is out of service (the GPU not allocatable, the node cordoned
          or tainted NoSchedule/NoExecute) and no tenant pod still runs on the GPU, unless the catalogue
          lets the job there go on (RESTART_APP, or a recovery action that only asks for no new work).
        - thermal: present while the GPU throttles; contained when the node is cordoned or tainted, a
          PreferNoSchedule taint included (the work on it runs, slower).
        - notready, partition: present while the node is down; contained when it is out of service (its
          pods cannot be evicted: no kubelet answers).
        - agent-down: present while the node's node-agent is not Running and Ready; contained when the
          node, whose GPUs nobody watches, is out of service.
        - disk-pressure: present while the DiskPressure condition is True; contained when the node is out
          of service (freeing the disk is a human's job).
        - monitor-silent: present while it lasts, and always contained: a gap in monitoring hurts no
          tenant by itself and only a human restarts the exporter; what it hides is scored by the faults
          it hides.
        """
        kind = fault.kind
        node = fault.node or fault.labels.get("node")
        out: dict[str, Any] = {
            "fault_id": fault.id,
            "kind": kind.value,
            "node": node,
            "gpu": fault.gpu,
            "code": fault.code,
            "namespace": fault.namespace,
            "pod": fault.pod,
        }
        parent = getattr(fault, "parent", None)
        if parent:
            out["parent"] = parent
        covers = sorted(f.id for f in self.faults.values() if getattr(f, "parent", None) == fault.id)
        if covers:
            # A component's fault (a rack, a switch, a rollout) is the per-node faults it expanded into:
            # each is a symptom of its own; this one sums them up.
            out["covers"] = covers
            present, contained, why = self._component_state(fault, covers)
        else:
            present, contained, why = self._symptom_state(fault)
        return {**out, "present": present, "contained": contained and present, "why": why}

    def _component_state(self, fault: Fault, covers: list[str]) -> tuple[bool, bool, str]:
        parts = [self._symptom_state(self.faults[c]) for c in covers]
        left = [why for present, _, why in parts if present]
        open_ = [why for present, contained, why in parts if present and not contained]
        what = f"{fault.kind.value} {fault.id}"
        if not left:
            return False, False, f"{what}: no symptom left on any of its {len(parts)} part(s)"
        if open_:
            return True, False, f"{what}: {len(open_)} of {len(parts)} part(s) uncontained, e.g. {open_[0]}"
        return True, True, f"{what}: {len(left)} of {len(parts)} part(s) still show it, all contained"

    def _symptom_state(self, fault: Fault) -> tuple[bool, bool, str]:
        kind = fault.kind
        if kind in (FaultKind.CRASHLOOP, FaultKind.OOMKILL):
            return self._pod_symptom(fault)
        if kind == FaultKind.STUCK_TERMINATING:
            return self._stuck_symptom(fault)
        if kind == FaultKind.DOUBLE_METERING:
            return self._metering_symptom(fault)
        if fault.node is None:  # a component fault that covers no node (yet): nothing to show
            return False, False, f"{kind.value} {fault.id} covers no node"
        node = self.node(fault.node)
        if kind in (FaultKind.XID, FaultKind.ECC, FaultKind.OFF_BUS):
            return self._gpu_symptom(fault, node)
        if kind == FaultKind.THERMAL:
            where = f"GPU {fault.gpu} of node {fault.node}"
            held = self._out_of_service(node, _PREFER_OUT)
            if held:
                return True, True, f"{where} still throttles; the node is {held}"
            return True, False, f"{where} still throttles and the node still takes new work"
        if kind in (FaultKind.NOT_READY, FaultKind.PARTITION):
            what = "NotReady (host down)" if kind == FaultKind.NOT_READY else "cut off from the control plane"
            held = self._out_of_service(node, _KEEP_OUT)
            if held:
                return True, True, f"node {fault.node} is {what}; it is {held} (its pods cannot be evicted)"
            return True, False, f"node {fault.node} is {what} and not cordoned: it takes work once it is back"
        if kind == FaultKind.AGENT_DOWN:
            agent = self.agent_pod(fault.node)
            if agent is not None and agent["status"].get("phase") == "Running" and is_ready(agent):
                return False, False, f"the node-agent on {fault.node} is Running and Ready"
            held = self._out_of_service(node, _KEEP_OUT)
            state = "not running" if agent is None else self._pod_state(agent)
            if held:
                return True, True, f"the node-agent on {fault.node} is {state}; the node is {held}"
            return True, False, f"the node-agent on {fault.node} is {state}; the node still takes work"
        if kind == FaultKind.DISK_PRESSURE:
            cond = next((c for c in node["status"]["conditions"] if c["type"] == "DiskPressure"), None)
            if cond is None or cond["status"] != "True":
                return False, False, f"node {fault.node} has no DiskPressure"
            held = self._out_of_service(node, _KEEP_OUT)
            if held:
                return True, True, f"node {fault.node} still has DiskPressure; it is {held}"
            return True, False, f"node {fault.node} still has DiskPressure and is not cordoned"
        if kind == FaultKind.MONITOR_SILENT:
            what = f"GPU {fault.gpu} of node {fault.node}" if fault.gpu is not None else f"node {fault.node}"
            return (
                True,
                True,
                f"dcgm-exporter exports no GPU series for {what} (a monitoring gap, no symptom)",
            )
        # A kind without a rule: say so rather than pass it (the scorer then refuses a mitigation).
        return True, False, f"no rule says when a {kind.value} fault on node {fault.node} is gone"

    def _out_of_service(self, node: Obj, effects: frozenset[str]) -> str | None:
        """How a node is kept from new work by someone (a cordon, a taint of ``effects``), else None."""
        if node["spec"].get("unschedulable"):
            return "cordoned"
        for t in node["spec"].get("taints") or []:
            if t.get("effect") in effects and not str(t.get("key", "")).startswith(_SYSTEM_TAINT_PREFIXES):
                return f"tainted {t['key']}:{t['effect']}"
        return None

    @staticmethod
    def _pod_state(pod: Obj) -> str:
        if is_terminating(pod):
            return "Terminating"
        cs = (pod["status"].get("containerStatuses") or [{}])[0]
        waiting = (cs.get("state") or {}).get("waiting") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason"):
            state = waiting["reason"]
        elif pod["status"].get("phase") != "Running":
            state = str(pod["status"].get("phase") or "Unknown")
        else:
            state = "Running" if is_ready(pod) else "Running but not Ready"
        notes = []
        if last.get("reason"):
            notes.append(f"last exit: {last['reason']}")
        if cs.get("restartCount"):
            notes.append(f"restarts: {cs['restartCount']}")
        return state + (f" ({', '.join(notes)})" if notes else "")

    def _pod_symptom(self, fault: Fault) -> tuple[bool, bool, str]:
        ns, name = fault.namespace or "", fault.pod or ""
        pod = self.store.get("pods", ns, name)
        if pod is not None and not is_terminating(pod):
            if pod["status"].get("phase") == "Running" and is_ready(pod):
                return False, False, f"pod {ns}/{name} is Running and Ready"
            return True, False, f"pod {ns}/{name} is still {self._pod_state(pod)}"
        # The pod is gone (or going): the symptom is gone when its owner runs what it wants, Ready.
        deployment = fault.labels.get("deployment", "")
        dep = self.store.get("deployments", ns, deployment) if deployment else None
        if dep is None:
            return True, False, f"pod {ns}/{name} was deleted and nothing replaced it"
        desired = int(dep["spec"].get("replicas", 1))
        if desired == 0:
            return True, False, f"pod {ns}/{name} is gone and deployment {ns}/{deployment} is scaled to 0"
        pods = [
            p
            for p in self.store.items("pods", ns)
            if (p["metadata"].get("labels") or {}).get("app") == deployment and not is_terminating(p)
        ]
        ready = [p for p in pods if p["status"].get("phase") == "Running" and is_ready(p)]
        count = f"deployment {ns}/{deployment} has {len(ready)}/{desired} Ready"
        if len(ready) >= desired and len(ready) == len(pods):
            return False, False, f"pod {ns}/{name} was replaced: {count}"
        bad = [f"{p['metadata']['name']} {self._pod_state(p)}" for p in pods if p not in ready]
        why = "; ".join(sorted(bad)) or f"{desired - len(ready)} missing"
        return True, False, f"pod {ns}/{name} is gone but {count} ({why})"

    def _stuck_symptom(self, fault: Fault) -> tuple[bool, bool, str]:
        ns, name = fault.namespace or "", fault.pod or ""
        pod = self.store.get("pods", ns, name)
        if pod is None:
            return False, False, f"pod {ns}/{name} is gone"
        node_name = pod["spec"].get("nodeName") or ""
        if node_name and self._node_down(node_name):
            held = self._out_of_service(self.node(node_name), _KEEP_OUT)
            where = f"pod {ns}/{name} is still Terminating on node {node_name}, which is down"
            if held:
                return True, True, f"{where} (no kubelet confirms the deletion) and {held}"
            return True, False, f"{where} and not cordoned"
        return True, False, f"pod {ns}/{name} is still {self._pod_state(pod)}"

    def _metering_symptom(self, fault: Fault) -> tuple[bool, bool, str]:
        ns, name = fault.namespace or "", fault.pod or ""
        counting = sorted(m.id for m in self.meters.values() if (m.namespace, m.pod) == (ns, name) and m.rate)
        if len(counting) > 1:
            return True, False, f"pod {ns}/{name} is still metered twice (meters {', '.join(counting)})"
        return False, False, f"pod {ns}/{name} is metered {'once' if counting else 'no longer'}"

    def _gpu_symptom(self, fault: Fault, node: Obj) -> tuple[bool, bool, str]:
        assert fault.node is not None and fault.gpu is not None
        code = fault.code or 0
        what = xid_effect(code, fault.recovery_action)
        where = f"GPU {fault.gpu} of node {fault.node}"
        if not what.gpu_unhealthy:
            return False, False, f"XID {code} leaves {where} in service ({what.why})"
        unhealthy = fault.gpu in self._unhealthy.get(fault.node, set())
        if not unhealthy:  # an unhealthy XID keeps the GPU out until it is cleared: not seen in practice
            return False, False, f"{where} reports healthy"
        # The device plugin took the GPU out of the allocatable count: no new work lands on it. What is
        # left is the work already there, unless the catalogue lets that job go on.
        keeps_job = not what.job_dies or bucket_of(code) == "RESTART_APP"
        owner = self._gpu_owner.get(fault.node, [None] * (fault.gpu + 1))[fault.gpu]
        if owner and not keeps_job:
            ns, pod_name = owner.split("/", 1)
            pod = self.store.get("pods", ns, pod_name)
            if pod is not None and not is_terminating(pod) and not self._node_down(fault.node):
                return (
                    True,
                    False,
                    f"{where} is unhealthy (XID {code}) and tenant pod {owner} still runs on it",
                )
        held = self._out_of_service(node, _KEEP_OUT)
        kept = f"the node is {held}" if held else "the GPU is not allocatable"
        if owner and keeps_job:
            rest = f"pod {owner} may finish on it ({what.why})"
        elif owner and self._node_down(fault.node):
            rest = f"pod {owner} cannot be evicted from the down node"
        else:
            rest = "no tenant pod runs on it"
        return True, True, f"{where} is unhealthy (XID {code}); {kept}; {rest}"

    def record_write(
        self,
        verb: str,
        resource: str,
        namespace: str,
        name: str,
        subresource: str,
        dry_run: bool,
        code: int,
        by: str = "",
    ) -> None:
        """One write the API answered; ``by`` is the identity that made it (admin, writer, reader)."""
        self.writes.append(
            {
                "by": by,
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
