"""What an injected fault does to the world, and how the world heals when it is cleared. The fault models
themselves (`FaultKind`, `Fault`) are data in `sandbox.fleet.faults`; this module makes every API show a
fault: the NVML report, node conditions and taints, events, pod statuses, meters and logs. What an XID
does (GPU health, its job) follows NVIDIA's Xid catalogue, through `sandbox.fleet.xids`.

Long because injecting and clearing are one state machine over the same world records (a component
fault expands to its nodes' faults and heals with them); split apart, each half would need the other's
bookkeeping.
"""

from __future__ import annotations

from dataclasses import asdict

from sandbox.fleet.faults import (
    COMPONENT_FAULTS,
    DEFAULT_ROLLOUT_DRIVER,
    DEFAULT_ROLLOUT_XID,
    EXPANSIONS,
    GPU_FAULTS,
    NODE_FAULTS,
    OPTIONAL_GPU_FAULTS,
    POD_FAULTS,
    Fault,
    FaultKind,
)
from sandbox.fleet.store import Obj, thaw
from sandbox.fleet.world.spec import (
    AGENT_NAME,
    AGENT_NAMESPACE,
    CUSTOMER_LABEL,
    DRIVER_LABEL,
    POOL_LABEL,
    PRODUCT_LABEL,
    RACK_LABEL,
    REGION_LABEL,
    SWITCH_LABEL,
    FleetError,
    Meter,
    is_ready,
    is_terminating,
    not_found,
)
from sandbox.fleet.world.state import FleetState
from sandbox.fleet.xids import (
    DEFAULT_RECOVERY_ACTION,
    XID_RECOVERY_ACTION_CHANGED,
    recovery_action_in,
    recovery_action_name,
)
from sandbox.fleet.xids import effect as xid_effect
from tools.nvml.codes import GPU_RECOVERY_ACTION_VALUES


class FaultEffectsMixin(FleetState):
    """Injects faults into the world and clears them."""

    def _find_pod(self, namespace: str | None, pod: str) -> Obj:
        if namespace:
            found = self.store.get("pods", namespace, pod)
            if found is None:
                raise not_found("pods", pod)
            return found
        matches = [p for p in self.store.items("pods") if p["metadata"]["name"] == pod]
        if not matches:
            raise not_found("pods", pod)
        if len(matches) > 1:
            raise FleetError(422, "Invalid", f'pod name "{pod}" is in several namespaces: give the namespace')
        return matches[0]

    def _gpu_labels(self, node: Obj, gpu: int | None) -> dict[str, str]:
        labels = node["metadata"]["labels"]
        out = {
            "node": node["metadata"]["name"],
            "pool": labels[POOL_LABEL],
            "region": labels[REGION_LABEL],
            "gpu_product": labels[PRODUCT_LABEL],
            "rack": labels[RACK_LABEL],
        }
        if gpu is not None:
            sim, _ = self.agent(node["metadata"]["name"])
            out["gpu_uuid"] = sim.gpus[gpu].uuid
            owner = self._gpu_owner[node["metadata"]["name"]][gpu]
            if owner:
                ns, pod_name = owner.split("/", 1)
                out.update(namespace=ns, pod=pod_name)
                pod = self.store.get("pods", ns, pod_name)
                if pod:
                    out["customer"] = (pod["metadata"].get("labels") or {}).get(CUSTOMER_LABEL, "")
        return out

    def inject(
        self,
        kind: FaultKind,
        *,
        node: str | None = None,
        gpu: int | None = None,
        code: int | None = None,
        namespace: str | None = None,
        pod: str | None = None,
        detail: str = "",
        recovery_action: str | int | None = None,
        rack: str | None = None,
        switch: str | None = None,
        nodes: list[str] | None = None,
        driver: str | None = None,
    ) -> Fault:
        """Inject a fault; every API (NVML report, conditions, events, pod status, meters) shows it.

        ``recovery_action`` (xid faults only, a name or an NVML value) is what NVML reports as the GPU's
        recovery action afterwards. An XID 154 always carries one: given, else named in ``detail`` (the
        driver's "... changed from 0x0 (None) to 0x1 (GPU Reset Required)"), else `DEFAULT_RECOVERY_ACTION`.

        A component fault (`COMPONENT_FAULTS`: rack-cooling, rack-power, switch-down, driver-rollout)
        names its nodes by ``rack``, ``switch`` or ``nodes`` instead, and is recorded together with the
        per-node faults it expands into (`EXPANSIONS`); the component fault is returned.
        """
        if kind in COMPONENT_FAULTS:
            if node is not None or gpu is not None or namespace or pod or recovery_action is not None:
                raise FleetError(
                    422,
                    "Invalid",
                    f"fault {kind.value!r} covers whole nodes: name them by "
                    f"{' or '.join(EXPANSIONS[kind].targets)}, not by node, gpu, pod or recovery_action",
                )
            return self._inject_component(
                kind, rack=rack, switch=switch, nodes=nodes, code=code, driver=driver, detail=detail
            )
        extra = [
            name
            for name, v in (("rack", rack), ("switch", switch), ("nodes", nodes), ("driver", driver))
            if v
        ]
        if extra:
            raise FleetError(
                422,
                "Invalid",
                f"fault {kind.value!r} takes no {', '.join(extra)}: only component faults do "
                f"({', '.join(sorted(k.value for k in COMPONENT_FAULTS))})",
            )
        return self._inject_one(
            kind,
            node=node,
            gpu=gpu,
            code=code,
            namespace=namespace,
            pod=pod,
            detail=detail,
            recovery_action=recovery_action,
        )

    def _inject_one(
        self,
        kind: FaultKind,
        *,
        node: str | None,
        gpu: int | None,
        code: int | None,
        namespace: str | None,
        pod: str | None,
        detail: str,
        recovery_action: str | int | None,
        parent: str | None = None,
    ) -> Fault:
        if recovery_action is not None and kind != FaultKind.XID:
            raise FleetError(422, "Invalid", "only an xid fault carries a GPU recovery action")
        try:
            action = None if recovery_action is None else recovery_action_name(recovery_action)
        except ValueError as exc:
            raise FleetError(422, "Invalid", str(exc)) from None
        if kind == FaultKind.XID and code == XID_RECOVERY_ACTION_CHANGED and action is None:
            action = recovery_action_in(detail) or DEFAULT_RECOVERY_ACTION
        if kind in NODE_FAULTS:
            if not node:
                raise FleetError(422, "Invalid", f"fault {kind.value!r} needs a node")
            node_obj = self.node(node)
            if kind in GPU_FAULTS and gpu is None:
                raise FleetError(422, "Invalid", f"fault {kind.value!r} needs a GPU index")
            if kind in GPU_FAULTS | OPTIONAL_GPU_FAULTS and gpu is not None:
                self._check_gpu(node, gpu)
            if kind == FaultKind.XID and (code is None or not 1 <= code <= 1000):
                raise FleetError(422, "Invalid", "an xid fault needs an XID code between 1 and 1000")
            labels = self._gpu_labels(node_obj, gpu if kind in GPU_FAULTS | OPTIONAL_GPU_FAULTS else None)
        elif kind in POD_FAULTS:
            if not pod:
                raise FleetError(422, "Invalid", f"fault {kind.value!r} needs a pod")
            pod_obj = self._find_pod(namespace, pod)
            namespace = pod_obj["metadata"]["namespace"]
            node = pod_obj["spec"].get("nodeName")
            labels = {
                "namespace": namespace,
                "pod": pod,
                "customer": (pod_obj["metadata"].get("labels") or {}).get(CUSTOMER_LABEL, ""),
                "deployment": (pod_obj["metadata"].get("labels") or {}).get("app", ""),
            }
            if node:
                labels["node"] = node
        else:  # pragma: no cover - every kind is a node or a pod fault
            raise FleetError(422, "Invalid", f"unknown fault {kind}")
        if kind == FaultKind.ECC:
            code = 48
        elif kind == FaultKind.OFF_BUS:
            code = 79
        if code is not None:
            labels["xid"] = str(code)
        self._fault_seq += 1
        fault = Fault(
            id=f"f{self._fault_seq:04d}",
            kind=kind,
            started_at=self.now(),
            node=node if kind in NODE_FAULTS else None,
            gpu=gpu,
            code=code,
            recovery_action=action,
            namespace=namespace,
            pod=pod,
            labels=labels,
            detail=detail,
            parent=parent,
        )
        if kind in POD_FAULTS and node:
            fault = fault.model_copy(update={"node": None})
            labels["node"] = node
        self.faults[fault.id] = fault
        self._apply(fault)
        return fault

    def _check_gpu(self, node: str, gpu: int) -> None:
        if not 0 <= gpu < self.spec.gpus_per_node:
            raise FleetError(
                422, "Invalid", f"node {node} has GPUs 0..{self.spec.gpus_per_node - 1}, not {gpu}"
            )

    def _component_nodes(
        self, kind: FaultKind, rack: str | None, switch: str | None, nodes: list[str] | None
    ) -> tuple[list[Obj], str | None, str | None]:
        """The nodes a component fault covers, with the rack and switch it names (checked: exactly one
        target, one the kind takes; a node list of a rack fault lies in one rack)."""
        allowed = EXPANSIONS[kind].targets
        given = [name for name, v in (("rack", rack), ("switch", switch), ("nodes", nodes)) if v]
        if len(given) != 1 or given[0] not in allowed:
            raise FleetError(
                422,
                "Invalid",
                f"fault {kind.value!r} needs exactly one of {' or '.join(allowed)}"
                + (f" (got {' and '.join(given)})" if given else ""),
            )
        if nodes:
            objs = [self.node(n) for n in dict.fromkeys(nodes)]
        else:
            label, value = (RACK_LABEL, rack) if rack else (SWITCH_LABEL, switch)
            objs = sorted(
                (n for n in self.store.items("nodes") if n["metadata"]["labels"].get(label) == value),
                key=lambda n: n["metadata"]["name"],
            )
            if not objs:
                what = "rack" if rack else "switch"
                raise FleetError(
                    404, "NotFound", f'no node is in {what} "{value}"', {"name": value, "kind": what}
                )
        if "rack" in allowed and not rack:
            racks = sorted({n["metadata"]["labels"][RACK_LABEL] for n in objs})
            if len(racks) > 1:
                raise FleetError(
                    422,
                    "Invalid",
                    f"the nodes of a {kind.value} fault share a rack; these are in {', '.join(racks)}",
                )
            rack = racks[0]
        return objs, rack, switch

    def _inject_component(
        self,
        kind: FaultKind,
        *,
        rack: str | None,
        switch: str | None,
        nodes: list[str] | None,
        code: int | None,
        driver: str | None,
        detail: str,
    ) -> Fault:
        """Record the component fault, then the per-node faults its `Expansion` says it is."""
        expansion = EXPANSIONS[kind]
        if kind != FaultKind.DRIVER_ROLLOUT and (code is not None or driver):
            raise FleetError(
                422, "Invalid", f"fault {kind.value!r} takes no code or driver (driver-rollout does)"
            )
        if kind == FaultKind.DRIVER_ROLLOUT:
            code = DEFAULT_ROLLOUT_XID if code is None else code
            if not 1 <= code <= 1000:
                raise FleetError(422, "Invalid", "a driver-rollout fault's XID code is between 1 and 1000")
            driver = driver or DEFAULT_ROLLOUT_DRIVER
        objs, rack, switch = self._component_nodes(kind, rack, switch, nodes)
        names = [n["metadata"]["name"] for n in objs]
        self._fault_seq += 1
        fault = Fault(
            id=f"f{self._fault_seq:04d}",
            kind=kind,
            started_at=self.now(),
            code=code,
            labels={k: v for k, v in (("rack", rack), ("switch", switch), ("driver", driver)) if v},
            detail=detail,
            rack=rack,
            switch=switch,
            nodes=names,
            driver=driver,
            previous_drivers=(
                {n["metadata"]["name"]: n["metadata"]["labels"].get(DRIVER_LABEL, "") for n in objs}
                if driver
                else {}
            ),
        )
        self.faults[fault.id] = fault
        for name in names:
            if driver:
                self._set_driver(name, driver)
            for gpu in range(self.spec.gpus_per_node) if expansion.every_gpu else [None]:
                self._inject_one(
                    expansion.each,
                    node=name,
                    gpu=gpu,
                    code=code,
                    namespace=None,
                    pod=None,
                    detail=detail,
                    recovery_action=None,
                    parent=fault.id,
                )
        return fault

    def _set_driver(self, name: str, version: str) -> None:
        """The node's driver-version label, as GPU feature discovery republishes it after an upgrade."""
        node = thaw(self.node(name))
        if not version:
            node["metadata"]["labels"].pop(DRIVER_LABEL, None)
        else:
            node["metadata"]["labels"][DRIVER_LABEL] = version
        self.store.put("nodes", node)
        self.driver_changed(name, version)

    def _apply(self, fault: Fault) -> None:
        kind = fault.kind
        pod: Obj | None
        if kind in GPU_FAULTS:
            assert fault.node is not None and fault.gpu is not None
            sim, _ = self.agent(fault.node)
            node = self.node(fault.node)
            uuid_ = sim.gpus[fault.gpu].uuid
            if kind == FaultKind.XID:
                assert fault.code is not None
                if fault.recovery_action is None:
                    sim.inject_xid(fault.gpu, fault.code)
                elif fault.code == XID_RECOVERY_ACTION_CHANGED:
                    sim.change_recovery_action(fault.gpu, GPU_RECOVERY_ACTION_VALUES[fault.recovery_action])
                else:
                    sim.set_recovery_action(fault.gpu, GPU_RECOVERY_ACTION_VALUES[fault.recovery_action])
                    sim.inject_xid(fault.gpu, fault.code)
            elif kind == FaultKind.ECC:
                sim.inject_ecc_uncorrectable(fault.gpu)
            elif kind == FaultKind.OFF_BUS:
                sim.fall_off_bus(fault.gpu)
            elif kind == FaultKind.THERMAL:
                sim.set_thermal(fault.gpu, True)
            self._pace_jobsets(self.now())  # the jobs on the node run at its slowest GPU's pace from now
            if kind == FaultKind.THERMAL:
                self.event(
                    node,
                    "Warning",
                    "GpuThermalThrottling",
                    f"GPU {fault.gpu} ({uuid_}): thermal slowdown active, clocks reduced",
                    "node-agent",
                )
            else:
                xid = fault.code or 0
                what = xid_effect(xid, fault.recovery_action)
                note = []
                if xid == XID_RECOVERY_ACTION_CHANGED:
                    note.append(f"GPU recovery action: {fault.recovery_action}")
                if not what.gpu_unhealthy:
                    note.append("application error; GPU healthy" if what.job_dies else "GPU healthy")
                self.event(
                    node,
                    "Warning",
                    "GpuXidError",
                    f"XID {xid} on GPU {fault.gpu} ({uuid_})" + (f" ({'; '.join(note)})" if note else ""),
                    "node-agent",
                )
                if what.gpu_unhealthy:
                    self._unhealthy.setdefault(fault.node, set()).add(fault.gpu)
                    self._refresh_node(fault.node)
                owner = self._gpu_owner[fault.node][fault.gpu]
                if owner and what.job_dies:
                    self._container_crashed(owner, f"CUDA error: XID {xid} on GPU {fault.gpu}")
        elif kind in (FaultKind.NOT_READY, FaultKind.PARTITION):
            assert fault.node is not None
            node = self._refresh_node(fault.node)
            self.event(
                node,
                "Normal",
                "NodeNotReady",
                f"Node {fault.node} status is now: NodeNotReady",
                "node-controller",
            )
            if kind == FaultKind.NOT_READY:
                self.event(
                    node,
                    "Warning",
                    "HostUnresponsive",
                    "out-of-band: BMC reports host not responding (power state unknown); no traffic from the "
                    "node's workloads",
                    "bmc-monitor",
                )
            else:
                cause = self.faults.get(fault.parent or "")
                leaf = cause.switch if cause is not None and cause.kind == FaultKind.SWITCH_DOWN else None
                self.event(
                    node,
                    "Warning",
                    "ControlPlanePathDown",
                    (
                        f"out-of-band: BMC reports host up; its leaf switch {leaf} is down: no network path "
                        "to the control plane or to its peers"
                        if leaf
                        else f"out-of-band: BMC reports host up; peers in {node['metadata']['labels'][RACK_LABEL]} "
                        "reach it on the data plane; the control-plane network path is lost"
                    ),
                    "network-monitor",
                )
            for pod in self.store.pods_on_node(fault.node):
                new = thaw(pod)
                for cond in new["status"].get("conditions") or []:
                    if cond["type"] in ("Ready", "ContainersReady"):
                        cond["status"], cond["lastTransitionTime"] = "False", self.stamp()
                for cs in new["status"].get("containerStatuses") or []:
                    cs["ready"] = False
                stored = self.store.put("pods", new)
                if kind == FaultKind.NOT_READY:
                    self._stop_meters(stored)
                self._refresh_owner(stored)
                self._refresh_pdbs(stored["metadata"]["namespace"])
            self._refresh_daemonset_status()
        elif kind == FaultKind.AGENT_DOWN:
            assert fault.node is not None
            pod = self.agent_pod(fault.node)
            if pod is not None:
                new = thaw(pod)
                self._set_crashloop_status(new, "Error", 1, 1)
                stored = self.store.put("pods", new)
                self.event(
                    stored,
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {AGENT_NAME} in pod "
                    f"{pod['metadata']['name']}_{AGENT_NAMESPACE}",
                    "kubelet",
                )
                self._refresh_daemonset_status()
            self._refresh_node(fault.node)
        elif kind == FaultKind.DISK_PRESSURE:
            assert fault.node is not None
            node = self._refresh_node(fault.node)
            self.event(
                node,
                "Warning",
                "NodeHasDiskPressure",
                f"Node {fault.node} status is now: NodeHasDiskPressure",
                "kubelet",
            )
            self.event(
                node, "Warning", "EvictionThresholdMet", "Attempting to reclaim ephemeral-storage", "kubelet"
            )
        elif kind in (FaultKind.CRASHLOOP, FaultKind.OOMKILL):
            assert fault.namespace and fault.pod
            pod = self.store.get("pods", fault.namespace, fault.pod)
            if pod is not None and pod["status"].get("phase") == "Running":
                new = thaw(pod)
                self._restart_base[fault.id] = (pod["status"].get("containerStatuses") or [{}])[0].get(
                    "restartCount", 0
                )
                reason, code = ("OOMKilled", 137) if kind == FaultKind.OOMKILL else ("Error", 1)
                self._set_crashloop_status(new, reason, code, 1)
                stored = self.store.put("pods", new)
                if kind == FaultKind.OOMKILL:
                    self.event(
                        stored,
                        "Warning",
                        "OOMKilling",
                        "Memory cgroup out of memory: Killed process (python) in container main",
                        "kernel-monitor",
                    )
                self.event(
                    stored,
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container main in pod {fault.pod}_{fault.namespace}",
                    "kubelet",
                )
                self._after_status(stored)
        elif kind == FaultKind.STUCK_TERMINATING:
            assert fault.namespace and fault.pod
            self.delete_pod(fault.namespace, fault.pod, grace=None, reason="StuckTerminating")
        elif kind == FaultKind.DOUBLE_METERING:
            assert fault.namespace and fault.pod
            pod = self.store.get("pods", fault.namespace, fault.pod)
            if pod is not None:
                base = self.meters.get(f"m-{pod['metadata']['uid']}")
                if base is not None:
                    dup = Meter(
                        **{
                            **asdict(base),
                            "id": f"m-{pod['metadata']['uid']}-dup",
                            "accumulated": 0.0,
                            "since": self.now().isoformat(),
                        }
                    )
                    self.meters[dup.id] = dup

    def _container_crashed(self, owner: str, message: str) -> None:
        ns, name = owner.split("/", 1)
        pod = self.store.get("pods", ns, name)
        if pod is None:
            return
        new = thaw(pod)
        for cs in new["status"].get("containerStatuses") or []:
            started = cs.get("state", {}).get("running", {}).get("startedAt", self.stamp())
            cs["restartCount"] = cs.get("restartCount", 0) + 1
            cs["lastState"] = {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "message": message,
                    "startedAt": started,
                    "finishedAt": self.stamp(),
                }
            }
            cs["state"] = {"running": {"startedAt": self.stamp()}}
        if new["spec"].get("restartPolicy") == "Never":  # a Job's pod: it fails, and its Job with it
            for cs in new["status"].get("containerStatuses") or []:
                cs["state"], cs["restartCount"] = {"terminated": cs["lastState"]["terminated"]}, 0
                cs["lastState"], cs["ready"] = {}, False
            new["status"]["phase"] = "Failed"
        stored = self.store.put("pods", new)
        self._record_disruption(stored, "GpuError")
        self.logs.setdefault(owner, []).append(f"{self.stamp()} RuntimeError: {message}")
        if stored["status"].get("phase") == "Failed":
            self._jobset_pod_gone(stored)
        elif any(r.get("kind") == "LeaderWorkerSet" for r in stored["metadata"].get("ownerReferences") or []):
            self._lws_pod_gone(stored)  # a container restart recreates its group (RecreateGroupOnPodRestart)

    def _after_status(self, pod: Obj) -> None:
        self._refresh_owner(pod)
        self._refresh_pdbs(pod["metadata"]["namespace"])

    def clear(
        self,
        node: str | None = None,
        *,
        rack: str | None = None,
        switch: str | None = None,
        gpu: int | None = None,
    ) -> list[Fault]:
        """Clear every fault, or those of a node, or of a rack's or a leaf switch's nodes: the underlying
        problem is repaired, the world heals. A component fault goes with the last of the per-node faults
        it expanded into; the nodes a driver rollout reached get their earlier driver back.

        With ``gpu`` (and ``node``): the GPU was reset (``nvidia-smi -r``, by a field engineer): its own
        faults clear and it reports healthy again; the node's other GPUs and faults stay as they are."""
        if gpu is not None:
            return self._reset_gpu(node, gpu, rack, switch)
        scope = self._clear_scope(node, rack, switch)
        cleared = [
            f
            for f in self.faults.values()
            if f.kind not in COMPONENT_FAULTS
            and (scope is None or f.node in scope or f.labels.get("node") in scope)
        ]
        for f in cleared:
            del self.faults[f.id]
        cleared += self._components_done(scope, roll_back=True)
        cleared.sort(key=lambda f: f.id)
        nodes = {f.node for f in cleared if f.node} | {
            f.labels.get("node") for f in cleared if f.labels.get("node")
        }
        for name in sorted(n for n in nodes if n):
            if name in self._agents:
                self._agents[name][0].reset()
            self._unhealthy.pop(name, None)
            self._refresh_node(name)
            for on_node in self.store.pods_on_node(name):
                self._heal_pod(on_node)
        self._pace_jobsets(self.now())  # repaired GPUs run their jobs at full pace from now
        pod: Obj | None
        for f in cleared:
            if f.kind in (FaultKind.CRASHLOOP, FaultKind.OOMKILL) and f.namespace and f.pod:
                pod = self.store.get("pods", f.namespace, f.pod)
                if pod is not None:
                    self._heal_pod(pod)
            elif f.kind == FaultKind.STUCK_TERMINATING and f.namespace and f.pod:
                if self.store.get("pods", f.namespace, f.pod) is not None:
                    self.delete_pod(f.namespace, f.pod, grace=0, reason="StuckTerminating")
            elif f.kind == FaultKind.DOUBLE_METERING:
                pod = self.store.get("pods", f.namespace or "", f.pod or "")
                dup = self.meters.get(f"m-{pod['metadata']['uid']}-dup") if pod else None
                if dup is not None:
                    dup.set_rate(0, self.now())
        self.schedule_pending()
        return cleared

    def _components_done(self, scope: set[str] | None, *, roll_back: bool) -> list[Fault]:
        """The component faults none of whose per-node faults is left, removed; with ``roll_back``, the
        nodes of ``scope`` (None: all) a driver rollout reached get their earlier driver back first."""
        done: list[Fault] = []
        for comp in [f for f in self.faults.values() if f.kind in COMPONENT_FAULTS]:
            for name in [n for n in comp.previous_drivers if roll_back and (scope is None or n in scope)]:
                version = comp.previous_drivers.pop(name)  # rolled back once
                if self.store.get("nodes", "", name) is not None:
                    self._set_driver(name, version)
            if not any(f.parent == comp.id for f in self.faults.values()):
                del self.faults[comp.id]
                done.append(comp)
        return done

    def _reset_gpu(self, node: str | None, gpu: int, rack: str | None, switch: str | None) -> list[Fault]:
        """One GPU reset: its XID, ECC, off-bus and thermal faults clear, NVML shows it healthy (lifetime
        counters kept), the device plugin offers it again. A driver stays as it is: a reset is no rollback."""
        if not node or rack is not None or switch is not None:
            raise FleetError(422, "Invalid", "a GPU reset names a node and a gpu (no rack or switch)")
        self.node(node)
        self._check_gpu(node, gpu)
        cleared = [
            f for f in self.faults.values() if f.kind in GPU_FAULTS and f.node == node and f.gpu == gpu
        ]
        for f in cleared:
            del self.faults[f.id]
        cleared += self._components_done({node}, roll_back=False)
        cleared.sort(key=lambda f: f.id)
        if node in self._agents:
            self._agents[node][0].reset_gpu(gpu)
            self._pace_jobsets(self.now())  # its jobs run at full pace again from now
        self._unhealthy.get(node, set()).discard(gpu)
        self._refresh_node(node)
        for on_node in self.store.pods_on_node(node):
            self._heal_pod(on_node)
        self.schedule_pending()
        return cleared

    def _clear_scope(self, node: str | None, rack: str | None, switch: str | None) -> set[str] | None:
        """The nodes a clear covers (None: all of them)."""
        given = [
            (what, v) for what, v in (("node", node), ("rack", rack), ("switch", switch)) if v is not None
        ]
        if len(given) > 1:
            raise FleetError(
                422, "Invalid", f"clear one of node, rack and switch, not {' and '.join(w for w, _ in given)}"
            )
        if not given:
            return None
        what, value = given[0]
        if what == "node":
            self.node(value)
            return {value}
        label = RACK_LABEL if what == "rack" else SWITCH_LABEL
        scope = {
            n["metadata"]["name"]
            for n in self.store.items("nodes")
            if n["metadata"]["labels"].get(label) == value
        }
        if not scope:
            raise FleetError(
                404, "NotFound", f'no node is in {what} "{value}"', {"name": value, "kind": what}
            )
        return scope

    def _heal_pod(self, pod: Obj) -> None:
        if is_terminating(pod):
            if self._kubelet_confirms(pod):
                self.delete_pod(
                    pod["metadata"]["namespace"], pod["metadata"]["name"], grace=0, reason="Deleted"
                )
            return
        if pod["status"].get("phase") != "Running" or is_ready(pod):
            return
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if any((f.namespace, f.pod) == key for f in self.faults.values()):
            return
        new = thaw(pod)
        restarts = (new["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0)
        new["status"] = self._running_status(new, new["status"].get("hostIP", ""), self.stamp(), restarts)
        stored = self.store.put("pods", new)
        self._start_meter(stored)
        self._after_status(stored)
        if key[0] == AGENT_NAMESPACE:
            self._refresh_daemonset_status()
