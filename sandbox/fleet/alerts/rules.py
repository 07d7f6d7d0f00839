"""The alerting rules, as data: which Prometheus rules each kind of fault makes true, and which alerts
Alertmanager's inhibit rules mute.

Kept apart from their evaluation as a rules file is from Prometheus: one `Rule` per alert (expression,
severity, summary, description, runbook), then the fault-kind table `RULES` and `INHIBIT_RULES`, so that
adding an alert is adding data here.
"""

from __future__ import annotations

from datetime import timedelta

from sandbox.fleet.alerts.model import Exporter, Inhibit, Rule, Scope, Trigger
from sandbox.fleet.faults import FaultKind
from sandbox.fleet.xids import severity as xid_severity

RUNBOOKS = "http://runbooks.sandbox.local/alerts"
MIXIN_RUNBOOKS = "https://runbooks.prometheus-operator.dev/runbooks/kubernetes"


_GPU: tuple[Scope, ...] = ("gpu", "xid")

GPU_XID_ERROR = Rule(
    exporter="dcgm-exporter",
    alert="GPUXidError",
    expr="DCGM_FI_DEV_XID_ERRORS > 0",
    severity="warning",
    # From NVIDIA's Xid catalogue (sandbox.fleet.xids): critical when the GPU needs a reset, a reboot or
    # service (XID 154: when its recovery action says so), warning for an application error, info when
    # nothing needs doing.
    severity_of_xid=xid_severity,
    summary="XID {{ $labels.xid }} on GPU {{ $labels.gpu }} of node {{ $labels.node }}",
    description="GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node "
    "{{ $labels.node }} reported XID {{ $labels.xid }}. Some XIDs are faults of the job running on it, "
    "others mean the GPU needs a reset or must be drained; look the code up before acting.",
    runbook_url=f"{RUNBOOKS}/gpuxiderror",
    scope=_GPU,
)
GPU_FALLEN_OFF_BUS = Rule(
    exporter="dcgm-exporter",
    alert="GPUFallenOffBus",
    expr="DCGM_FI_DEV_XID_ERRORS == 79",
    severity="critical",
    xid=79,
    summary="GPU {{ $labels.gpu }} of node {{ $labels.node }} has fallen off the bus",
    description="GPU {{ $labels.gpu }} ({{ $labels.UUID }}) on node {{ $labels.node }} raised XID "
    "{{ $labels.xid }} and is no longer reachable over PCIe; NVML reports it lost and the jobs on it have "
    "failed. Only a node reboot (or a reseat) brings it back: drain the node first.",
    runbook_url=f"{RUNBOOKS}/gpufallenoffbus",
    scope=_GPU,
)
GPU_ECC_UNCORRECTABLE = Rule(
    exporter="dcgm-exporter",
    alert="GPUEccUncorrectable",
    expr="DCGM_FI_DEV_ECC_DBE_VOL_TOTAL > 0",
    severity="critical",
    xid=48,
    summary="Uncorrectable ECC errors on GPU {{ $labels.gpu }} of node {{ $labels.node }}",
    description="GPU {{ $labels.gpu }} ({{ $labels.UUID }}) on node {{ $labels.node }} counted volatile "
    "double-bit (uncorrectable) ECC errors (XID {{ $labels.xid }}). Memory of the job on it may be corrupt; "
    "the GPU must be reset before it is given work again.",
    runbook_url=f"{RUNBOOKS}/gpueccuncorrectable",
    scope=_GPU,
)
GPU_ROW_REMAP_PENDING = Rule(
    exporter="dcgm-exporter",
    alert="GPURowRemapPending",
    expr="DCGM_FI_DEV_ROW_REMAP_PENDING > 0",
    severity="warning",
    xid=63,
    summary="Row remap pending on GPU {{ $labels.gpu }} of node {{ $labels.node }}",
    description="GPU {{ $labels.gpu }} ({{ $labels.UUID }}) on node {{ $labels.node }} recorded a row remap "
    "(XID {{ $labels.xid }}) that takes effect only after a GPU reset: drain the GPU and reset it when its "
    "workload allows.",
    runbook_url=f"{RUNBOOKS}/gpurowremappending",
    scope=_GPU,
)
GPU_ROW_REMAP_FAILURE = Rule(
    exporter="dcgm-exporter",
    alert="GPURowRemapFailure",
    expr="DCGM_FI_DEV_ROW_REMAP_FAILURE > 0",
    severity="critical",
    xid=64,
    summary="Row remap failed on GPU {{ $labels.gpu }} of node {{ $labels.node }}",
    description="GPU {{ $labels.gpu }} ({{ $labels.UUID }}) on node {{ $labels.node }} failed to remap a "
    "row (XID {{ $labels.xid }}): it has no spare rows left. Take it out of service and have it replaced.",
    runbook_url=f"{RUNBOOKS}/gpurowremapfailure",
    scope=_GPU,
)
GPU_THERMAL_THROTTLING = Rule(
    exporter="dcgm-exporter",
    alert="GPUThermalThrottling",
    expr="rate(DCGM_FI_DEV_THERMAL_VIOLATION[5m]) > 0",
    severity="warning",
    for_=timedelta(minutes=5),
    summary="GPU {{ $labels.gpu }} of node {{ $labels.node }} is thermally throttled",
    description="GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node "
    "{{ $labels.node }} has spent time in thermal slowdown throughout the last 5 minutes; its clocks are "
    "reduced and jobs on it run slower. Check the node's cooling.",
    runbook_url=f"{RUNBOOKS}/gputhermalthrottling",
    scope=("gpu",),
)
KUBE_NODE_NOT_READY = Rule(
    alert="KubeNodeNotReady",
    expr='kube_node_status_condition{condition="Ready",status!="true"} == 1',
    severity="critical",
    for_=timedelta(minutes=15),
    static_labels={"condition": "Ready", "status": "unknown"},
    summary="Node {{ $labels.node }} is not ready",
    description="Node {{ $labels.node }} has been Ready={{ $labels.status }} for more than 15 minutes: its "
    "kubelet has stopped posting status to the API server.",
    runbook_url=f"{MIXIN_RUNBOOKS}/kubenodenotready",
)
KUBE_NODE_UNREACHABLE = Rule(
    alert="KubeNodeUnreachable",
    expr='kube_node_spec_taint{key="node.kubernetes.io/unreachable",effect="NoSchedule"} == 1',
    severity="warning",
    for_=timedelta(minutes=15),
    static_labels={"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
    summary="Node {{ $labels.node }} is unreachable",
    description="Node {{ $labels.node }} carries the node.kubernetes.io/unreachable taint: the control "
    "plane cannot reach it, and its pods will be evicted and may be rescheduled elsewhere.",
    runbook_url=f"{MIXIN_RUNBOOKS}/kubenodeunreachable",
)
NODE_DOWN = Rule(
    exporter="prometheus",
    alert="NodeDown",
    expr='up{job="node-exporter"} == 0',
    severity="critical",
    for_=timedelta(minutes=5),
    static_labels={"job": "node-exporter"},
    scope=("instance",),
    summary="Node {{ $labels.node }} is down",
    description="Prometheus has failed to scrape node-exporter on {{ $labels.instance }} for 5 minutes. "
    "With KubeNodeNotReady this means the machine itself is down, not only cut off from the control plane.",
    runbook_url=f"{RUNBOOKS}/nodedown",
)
NODE_AGENT_DOWN = Rule(
    exporter="prometheus",
    alert="NodeAgentDown",
    expr='up{job="node-agent"} == 0',
    severity="warning",
    for_=timedelta(minutes=5),
    static_labels={"job": "node-agent"},
    scope=("instance",),
    summary="GPU node-agent on node {{ $labels.node }} is down",
    description="Prometheus has failed to scrape the supply-agent node-agent on {{ $labels.instance }} for 5 "
    "minutes: GPU health (XID, ECC, row remapping, temperature) on this node is not being observed. The "
    "GPUs themselves may be fine.",
    runbook_url=f"{RUNBOOKS}/nodeagentdown",
)
KUBE_NODE_DISK_PRESSURE = Rule(
    alert="KubeNodeDiskPressure",
    expr='kube_node_status_condition{condition="DiskPressure",status="true"} == 1',
    severity="warning",
    for_=timedelta(minutes=5),
    static_labels={"condition": "DiskPressure", "status": "true"},
    summary="Node {{ $labels.node }} is under disk pressure",
    description="Node {{ $labels.node }} has reported DiskPressure for 5 minutes; the kubelet taints it and "
    "evicts pods to reclaim image and ephemeral storage.",
    runbook_url=f"{RUNBOOKS}/kubenodediskpressure",
)
KUBE_POD_CRASH_LOOPING = Rule(
    alert="KubePodCrashLooping",
    expr='kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff"} == 1',
    severity="warning",
    for_=timedelta(minutes=15),
    static_labels={"reason": "CrashLoopBackOff"},
    summary="Pod {{ $labels.namespace }}/{{ $labels.pod }} is crash looping",
    description="Pod {{ $labels.namespace }}/{{ $labels.pod }} on node {{ $labels.node }} has been in "
    "CrashLoopBackOff for 15 minutes.",
    runbook_url=f"{MIXIN_RUNBOOKS}/kubepodcrashlooping",
)
KUBE_POD_OOM_KILLED = Rule(
    alert="KubePodOOMKilled",
    expr="increase(kube_pod_container_status_restarts_total[10m]) > 0 and on (namespace, pod, container) "
    'kube_pod_container_status_last_terminated_reason{reason="OOMKilled"} == 1',
    severity="warning",
    static_labels={"reason": "OOMKilled"},
    summary="Pod {{ $labels.namespace }}/{{ $labels.pod }} was OOMKilled",
    description="A container of pod {{ $labels.namespace }}/{{ $labels.pod }} on node {{ $labels.node }} was "
    "killed for exceeding its memory limit and has restarted in the last 10 minutes.",
    runbook_url=f"{RUNBOOKS}/kubepodoomkilled",
)
KUBE_POD_STUCK_TERMINATING = Rule(
    alert="KubePodStuckTerminating",
    expr="kube_pod_deletion_timestamp > 0",
    severity="warning",
    for_=timedelta(minutes=10),
    summary="Pod {{ $labels.namespace }}/{{ $labels.pod }} is stuck terminating",
    description="Pod {{ $labels.namespace }}/{{ $labels.pod }} was deleted more than 10 minutes ago and the "
    "kubelet on node {{ $labels.node }} has not confirmed it; its GPUs stay allocated.",
    runbook_url=f"{RUNBOOKS}/kubepodstuckterminating",
)
GPU_METERING_ANOMALY = Rule(
    exporter="billing",
    alert="GPUMeteringAnomaly",
    expr="sum by (namespace, pod) (rate(billing_gpu_seconds_total[10m])) > 1.05 * sum by (namespace, pod) "
    '(kube_pod_container_resource_requests{resource="nvidia_com_gpu"})',
    severity="warning",
    for_=timedelta(minutes=10),
    summary="GPU time of pod {{ $labels.namespace }}/{{ $labels.pod }} is metered above its allocation",
    description="For 10 minutes the billing meter has counted GPU-seconds for pod {{ $labels.namespace }}/"
    "{{ $labels.pod }} faster than the GPUs it requested allow: customer {{ $labels.customer }} is likely "
    "being charged twice.",
    runbook_url=f"{RUNBOOKS}/gpumeteringanomaly",
)

# Which rules each kind of fault makes true. A real stack fires the generic XID alert alongside the specific
# GPU ones (DCGM_FI_DEV_XID_ERRORS moves too); INHIBIT_RULES mutes it, as a production Alertmanager would.
# A dead node and a partitioned one look the same to the control plane (Ready=Unknown, the unreachable taint);
# only the dead one also stops answering Prometheus (which scrapes over the data network), hence NodeDown.
RULES: dict[FaultKind, tuple[Trigger, ...]] = {
    FaultKind.XID: (
        Trigger(GPU_XID_ERROR),
        Trigger(GPU_FALLEN_OFF_BUS, codes=frozenset({79})),
        Trigger(GPU_ECC_UNCORRECTABLE, codes=frozenset({48})),
        Trigger(GPU_ROW_REMAP_PENDING, codes=frozenset({63})),
        Trigger(GPU_ROW_REMAP_FAILURE, codes=frozenset({64})),
    ),
    FaultKind.ECC: (
        Trigger(GPU_ECC_UNCORRECTABLE),
        Trigger(GPU_ROW_REMAP_PENDING, codes=frozenset({63})),
        Trigger(GPU_ROW_REMAP_FAILURE, codes=frozenset({64})),
        Trigger(GPU_XID_ERROR, default_xid=48),
    ),
    FaultKind.OFF_BUS: (
        Trigger(GPU_FALLEN_OFF_BUS),
        Trigger(GPU_XID_ERROR, default_xid=79),
    ),
    FaultKind.THERMAL: (Trigger(GPU_THERMAL_THROTTLING),),
    FaultKind.NOT_READY: (
        Trigger(KUBE_NODE_NOT_READY),
        Trigger(KUBE_NODE_UNREACHABLE),
        Trigger(NODE_DOWN),
        Trigger(NODE_AGENT_DOWN),
    ),
    FaultKind.PARTITION: (
        Trigger(KUBE_NODE_NOT_READY),
        Trigger(KUBE_NODE_UNREACHABLE),
    ),
    FaultKind.AGENT_DOWN: (
        Trigger(NODE_AGENT_DOWN),
        Trigger(KUBE_POD_CRASH_LOOPING, requires=("pod",)),
    ),
    FaultKind.DISK_PRESSURE: (Trigger(KUBE_NODE_DISK_PRESSURE),),
    # A silent monitor fires nothing: it answers its scrapes (`up` stays 1, so no target-down alert) and
    # exports no series, and no rule here asks for series that ought to exist (`absent()`). What it hides
    # is `SILENCED_BY`'s.
    FaultKind.MONITOR_SILENT: (),
    FaultKind.CRASHLOOP: (Trigger(KUBE_POD_CRASH_LOOPING),),
    FaultKind.OOMKILL: (Trigger(KUBE_POD_OOM_KILLED),),
    FaultKind.STUCK_TERMINATING: (Trigger(KUBE_POD_STUCK_TERMINATING),),
    FaultKind.DOUBLE_METERING: (Trigger(GPU_METERING_ANOMALY),),
    # A component fault (a rack's cooling or power, a leaf switch, a driver rollout) fires nothing itself:
    # no exporter watches the facility or the rollout. The per-node faults it expands into fire their own
    # rules on every node, as in a real stack; telling that they share a cause is the agent's work.
    FaultKind.RACK_COOLING: (),
    FaultKind.RACK_POWER: (),
    FaultKind.SWITCH_DOWN: (),
    FaultKind.DRIVER_ROLLOUT: (),
}

# Which exporters' series a fault kind takes away from its node (its one GPU, when it names one): every
# rule whose expression reads them stays silent there, whatever else is wrong. A dcgm-exporter that lost
# its DCGM host engine, or dropped a GPU from its watch list (DCGM #235), keeps running and answering
# scrapes with no DCGM_FI_* series for it: no XID, ECC, row-remap or thermal alert, while NVML (the
# node-agent's report), the GpuHealthy condition and the node-agent's events still show the truth.
SILENCED_BY: dict[FaultKind, frozenset[Exporter]] = {
    FaultKind.MONITOR_SILENT: frozenset({"dcgm-exporter"}),
}

INHIBIT_RULES: tuple[Inhibit, ...] = (
    Inhibit(
        source=frozenset(
            {"GPUFallenOffBus", "GPUEccUncorrectable", "GPURowRemapPending", "GPURowRemapFailure"}
        ),
        target=frozenset({"GPUXidError"}),
        equal=("cluster", "node", "gpu", "xid"),
    ),
    Inhibit(source=frozenset({"NodeDown"}), target=frozenset({"NodeAgentDown"}), equal=("cluster", "node")),
)


def all_rules() -> list[Rule]:
    """Every distinct rule in `RULES`, in table order."""
    seen: dict[str, Rule] = {}
    for triggers in RULES.values():
        for trigger in triggers:
            seen.setdefault(trigger.rule.alert, trigger.rule)
    return list(seen.values())
