"""Pure triage: which playbook, how severe, what to read first, and whether the fault is really there.

Nothing here does I/O: the graph reads, these functions look at what was read.

Long because every judgement made from what was read lives here, beside the others it must agree with:
the playbook match, the second-source checks (is the fault really there), and the diagnosis of an
alert no playbook knows from its pod, GPU or node (``pod_fault``, ``node_fault``, ``as_known``), which
the fold uses too. Split, each would import the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from supply_agent.models.incident import AlertIn, Evidence, IncidentState
from supply_agent.models.labels import gpu_series
from supply_agent.policy import (
    GpuFaultConfirmed,
    GpuThrottleConfirmed,
    MeterDuplicated,
    Playbook,
    PlaybookSet,
)
from supply_agent.policy.conditions import THERMAL_REASONS
from supply_agent.policy.world import APPLICATION_XIDS, group_labels_of

SEVERITIES = ("info", "warning", "critical")


# What a GPU alert of a rule set no playbook knows may be, for a shared component: a GPU error of unknown
# code, or a GPU running hot (the fleet's two GPU alerts that name a kind of fault, not one fault).
UNKNOWN_GPU_ALERTS = ("GPUXidError", "GPUThermalThrottling")


# What an alert's GPU shows when read: (whether it was read, the fleet's alert for what it shows).
Shown = Callable[[AlertIn], tuple[bool, AlertIn | None]]


def as_known(
    a: AlertIn, playbooks: PlaybookSet, shown: Shown | None = None
) -> list[tuple[str, dict[str, str]]]:
    """The names and labels a component playbook may read an alert under. An alert on a GPU's series
    that no playbook knows by its name (the stock ``GPUXIDError`` rule on ``DCGM_FI_DEV_XID_ERRORS``,
    whose code is only the alert's value; a ``GPUHighTemperature`` threshold) is read as either GPU
    alert of unknown detail: many nodes of one rack, driver version or pool raising GPU alerts at once
    is that component's fault whatever the rule is called, and the component that explains the most
    nodes, then the smallest, is chosen as for any alert. With ``shown`` (what the alert's GPU shows
    when read, as the fleet's alert for it: :func:`node_fault`), it is read as that alone: a rack of hot
    GPUs is the rack's cooling, an XID on a third of a pool is not; a GPU read that shows no fault makes
    it no component's alert. One node's incident reads its GPU in
    investigation instead."""
    if gpu_series(a.labels) and not playbooks.match(a.alertname, a.labels):
        read, seen = shown(a) if shown is not None else (False, None)
        if seen is not None:
            return [(seen.alertname, seen.labels)]
        if read:  # read, and the GPU shows no fault: not a component's fault either
            return []
        labels = {k: v for k, v in a.labels.items() if k not in ("xid", "err_code")}
        return [(name, labels) for name in UNKNOWN_GPU_ALERTS]
    return [(a.alertname, a.labels)]


def match_playbook(
    playbooks: PlaybookSet,
    alerts: list[AlertIn],
    conditions: dict[str, str] | None = None,
    events: list[str] | None = None,
    component: str | None = None,
    group: str | None = None,
) -> Playbook | None:
    """The most specific playbook for any of the incident's firing alerts. ``conditions``, ``events`` and
    ``group`` (what investigation saw on the node, and the node group its labels put it in: "" for none)
    refine the match; None means not observed yet. ``component``: the kind of shared component the
    incident is about (a rack, a switch), None for one node's."""
    firing = [a for a in alerts if a.status == "firing"] or alerts
    # A pod's alert that joined its node's incident (the node is down) is the node's symptom: the
    # node's alerts choose the playbook.
    firing = [a for a in firing if a.pod is None] or firing
    # An XID that follows another (45, 154) is answered by the other's playbook when both are here.
    leading = [a for a in firing if not _follower(a)]
    firing = leading or firing
    hits = []
    for alert in firing:
        # A shared component's incident reads a GPU alert no playbook knows as a GPU alert (as_known).
        read = as_known(alert, playbooks) if component is not None else [(alert.alertname, alert.labels)]
        for pb in playbooks:
            for name, labels in read:
                key = pb.match_key(
                    name,
                    labels,
                    conditions,
                    events,
                    playbooks.limits.xid_uncatalogued,
                    component,
                    group,
                )
                if key is not None:
                    hits.append((key, pb.id, pb))
    return min(hits, key=lambda h: (h[0], h[1]))[2] if hits else None


def _follower(alert: AlertIn) -> bool:
    from supply_agent.policy.xids import follows_another

    raw = alert.labels.get("xid") or alert.labels.get("err_code")
    return raw is not None and raw.isdigit() and follows_another(int(raw))


def observed(evidence: list[Evidence], node: str | None) -> tuple[dict[str, str] | None, list[str] | None]:
    """Node conditions and node event reasons from the evidence (None where not read)."""
    if node is None:
        return None, None
    conditions = events = None
    for e in evidence:
        if not e.ok:
            continue
        if e.tool == "k8s.get_node" and e.params.get("node") == node and isinstance(e.result, dict):
            conditions = {c["type"]: c["status"] for c in e.result.get("conditions", [])}
        if e.tool == "k8s.events_for" and e.params.get("kind") == "Node" and e.params.get("name") == node:
            events = sorted({ev["reason"] for ev in e.result or []})
    return conditions, events


def observed_group(evidence: list[Evidence], node: str | None, playbooks: PlaybookSet) -> str | None:
    """The node group (``_global.yaml``'s ``node_groups``) the node's labels, as read, put it in: "" for
    none; None when the node was not read."""
    if node is None:
        return None
    for e in reversed(evidence):
        if e.ok and e.tool == "k8s.get_node" and e.params.get("node") == node and isinstance(e.result, dict):
            group = playbooks.limits.group_for(group_labels_of(e.result.get("labels") or {}))
            return group.name if group is not None else ""
    return None


def severity(playbook: Playbook | None, alerts: list[AlertIn]) -> str:
    """The highest of the playbook's severity and the alerts' own ``severity`` labels."""
    seen = [a.labels.get("severity", "") for a in alerts] + [playbook.severity if playbook else "warning"]
    ranked = [s for s in seen if s in SEVERITIES]
    return max(ranked, key=SEVERITIES.index) if ranked else "warning"


def first_reads(alert: AlertIn) -> list[tuple[str, dict[str, Any]]]:
    """What an SRE looks at first: the node and its GPUs for a node alert, the pod for a pod alert."""
    reads: list[tuple[str, dict[str, Any]]] = []
    node, ns, pod = alert.labels.get("node"), alert.labels.get("namespace"), alert.labels.get("pod")
    if node:
        reads += [
            ("k8s.get_node", {"node": node}),
            ("nvml.gpu_health", {"node": node}),
            ("k8s.events_for", {"kind": "Node", "name": node}),
        ]
    if ns and pod:
        reads += [
            ("k8s.get_pod", {"namespace": ns, "pod": pod}),
            ("k8s.events_for", {"kind": "Pod", "namespace": ns, "name": pod}),
        ]
    return reads


def confirm_reads(alert: AlertIn, playbook: Playbook | None) -> list[tuple[str, dict[str, Any]]]:
    """The reads that confirm the playbook's fault from its second source, beyond :func:`first_reads`
    (which already read the node's NVML report and conditions and the pod's status): the meters for a
    metering alert."""
    if playbook is None:
        return []
    ns, pod = alert.labels.get("namespace"), alert.labels.get("pod")
    if ns and pod and any(isinstance(p, MeterDuplicated) for p in playbook.containment.preconditions):
        return [("billing.meter_anomalies", {"namespace": ns, "pod": pod})]
    return []


def _latest(evidence: list[Evidence], tool: str) -> Evidence | None:
    return next((e for e in reversed(evidence) if e.tool == tool and e.ok), None)


def nothing_asked(state: IncidentState) -> str | None:
    """NVIDIA's catalogue says XID 154 is followed by the GPU's recovery action (NVML's
    NVML_FI_DEV_GET_GPU_RECOVERY_ACTION): a fresh node-agent report that the alert's GPU needs none
    means nothing to do. Only a positive "none" counts; unread, unsupported or unknown never does."""
    from supply_agent.policy.matching import xid_bucket

    alert = state.alert
    if xid_bucket(alert.labels) != "XID_154" or not alert.node:
        return None
    health = _latest(state.evidence, "nvml.gpu_health")
    if health is None or not health.result or not health.result.get("available"):
        return None
    report = health.result.get("report") or {}
    if report.get("node") not in (None, alert.node):
        return None
    gpu = alert.labels.get("gpu")
    for g in report.get("gpus") or []:
        if str(g.get("index")) == str(gpu) and g.get("recovery_action") == "none":
            return (
                f"the node-agent's NVML report says GPU {gpu} of {alert.node} needs no recovery action "
                "(NVML_FI_DEV_GET_GPU_RECOVERY_ACTION = none): XID 154 asks for nothing"
            )
    return None


# Alerts that say the control plane cannot hear a node's kubelet; a fresh Ready=True says it can.
NODE_UNREACHABLE_ALERTS = frozenset({"KubeNodeNotReady", "KubeNodeUnreachable"})


def symptom_absent(state: IncidentState, playbook: Playbook | None) -> str | None:
    """Why there is nothing to do, or None when the fault is (or may be) there.

    Conservative: only a fresh, positive reading of health says "no fault". A monitor that did not
    answer, or a read that failed, never does.
    """
    if all(a.status == "resolved" for a in state.alerts):
        return "every alert of the incident has resolved"
    if state.alert.alertname in NODE_UNREACHABLE_ALERTS and state.alert.node:
        node = _latest(state.evidence, "k8s.get_node")
        if node is not None and node.ok and node.result and node.result.get("name") == state.alert.node:
            conds = {c["type"]: c["status"] for c in node.result.get("conditions") or []}
            unreachable = any(
                t.get("key") == "node.kubernetes.io/unreachable" for t in node.result.get("taints") or []
            )
            if conds.get("Ready") == "True" and not unreachable:
                return (
                    f"{state.alert.node} is Ready=True with no unreachable taint now: the kubelet reports, "
                    f"so {state.alert.alertname} is stale or was a blip"
                )
    if playbook is None:
        return None
    throttle = next(
        (p for p in playbook.containment.preconditions if isinstance(p, GpuThrottleConfirmed)), None
    )
    if throttle is not None:
        health = _latest(state.evidence, "nvml.gpu_health")
        report = (health.result or {}).get("report") if health is not None and health.result else None
        if health is not None and health.result.get("available") and report:
            gpu = state.alert.labels.get("gpu")
            gpus = [g for g in report.get("gpus") or [] if gpu is None or str(g.get("index")) == str(gpu)]
            seen = {r for g in gpus for r in g.get("clock_event_reasons") or []}
            if gpus and not seen & set(throttle.reasons):
                which = f"GPU {gpu}" if gpu is not None else "no GPU"
                return (
                    f"the node-agent's NVML report for {report.get('node', '?')} shows {which} throttled for "
                    f"{' or '.join(throttle.reasons)} (clock-event reasons now: {', '.join(sorted(seen)) or 'none'}): "
                    "the alert's fault is not present"
                )
    needs_gpu_fault = any(isinstance(p, GpuFaultConfirmed) for p in playbook.containment.preconditions)
    if needs_gpu_fault:
        health = _latest(state.evidence, "nvml.gpu_health")
        node = _latest(state.evidence, "k8s.get_node")
        if health is None or node is None or not health.result or not health.result.get("available"):
            return None
        report = health.result.get("report") or {}
        faulty = False
        for gpu in report.get("gpus") or []:
            xids = {x["xid"] for x in gpu.get("xid_events") or []} - APPLICATION_XIDS
            if gpu.get("lost") or (gpu.get("ecc_uncorrected_volatile") or 0) > 0 or xids:
                faulty = True
            rr = gpu.get("remapped_rows") or {}
            if rr.get("pending") or rr.get("failure"):
                faulty = True
        conds = {c["type"]: c["status"] for c in node.result.get("conditions") or []}
        if not faulty and conds.get("GpuHealthy", "True") == "True":
            return (
                f"the node-agent's NVML report for {report.get('node', '?')} shows no GPU fault and "
                "GpuHealthy=True: the alert's fault is not present"
            )
    if any(isinstance(p, MeterDuplicated) for p in playbook.containment.preconditions):
        meters = _latest(state.evidence, "billing.meter_anomalies")
        if meters is not None and meters.result and meters.result.get("duplicate_meters") == []:
            r = meters.result
            return (
                f"the meters count {r['namespace']}/{r['pod']} once (meter {r['primary_meter']}), no "
                "duplicate running: the alert's fault is not present (the query, not the meter, is wrong)"
            )
    pod_alert = state.alert.labels.get("pod") and not state.alert.labels.get("node")
    if pod_alert and state.alert.alertname in ("KubePodCrashLooping", "KubePodOOMKilled"):
        pod = _latest(state.evidence, "k8s.get_pod")
        if pod is not None and pod.result:
            r = pod.result
            if r.get("ready") and not r.get("waiting_reason") and r.get("phase") == "Running":
                return f"{r['namespace']}/{r['name']} is Running and ready: the crash loop is over"
    return None


_NOT_CARRIED = frozenset({"xid", "err_code", "pod", "namespace", "container", "job", "instance", "Hostname"})
# NVML's GpuIsLost is the GPU fallen off the bus: NVIDIA's Xid catalogue XID 79.
LOST_GPU_XID = 79
UNCORRECTABLE_ECC_XID = 48
# The XIDs that say whether an uncorrectable error was contained (NVIDIA Xid catalogue: 94 contained,
# 95 uncontained): more than the count says, so they name what the GPU shows.
CONTAINMENT_ECC_XIDS = (94, 95)


def _hardware_xid(code: int) -> bool:
    from supply_agent.policy.xids import bucket_of

    return code not in APPLICATION_XIDS and bucket_of(code) not in ("RESTART_APP", "IGNORE")


def pod_gpu_fault(evidence: list[Evidence], namespace: str, pod: str, node: str) -> AlertIn | None:
    """The GPU fault behind a pod's symptom, as the pod's node's node-agent reports it: a GPU bound to the
    pod (its pod-resources list) that is lost, has uncorrectable ECC errors or raised a hardware XID. The
    answer is the GPU alert that fault raises, derived (``source="agent"``), or None."""
    health = next(
        (
            e
            for e in reversed(evidence)
            if e.tool == "nvml.gpu_health" and e.ok and e.params.get("node") == node and e.result
        ),
        None,
    )
    report = (
        (health.result or {}).get("report") if health is not None and health.result.get("available") else None
    )
    for g in (report or {}).get("gpus") or []:
        if f"{namespace}/{pod}" not in (g.get("pods") or []):
            continue
        hardware = [x["xid"] for x in g.get("xid_events") or [] if _hardware_xid(int(x["xid"]))]
        if g.get("lost"):
            xid, what = LOST_GPU_XID, "is lost (fell off the bus)"
        elif (g.get("ecc_uncorrected_volatile") or 0) > 0:
            xid, what = UNCORRECTABLE_ECC_XID, "has uncorrectable ECC errors"
        elif hardware:
            xid, what = int(hardware[-1]), f"raised XID {hardware[-1]}"
        else:
            continue
        why = (
            f"the node-agent on {node} reports GPU {g['index']}, bound to {namespace}/{pod}, {what}: "
            "the pod's symptom is that GPU's fault"
        )
        labels = {"node": node, "gpu": str(g["index"]), "xid": str(xid)}
        if g.get("uuid"):
            labels["UUID"] = str(g["uuid"])
        return AlertIn(
            alertname="GPUXidError",
            labels=labels,
            annotations={"summary": why, "derived_from": f"nvml.gpu_health node={node}"},
            source="agent",
        )
    return None


def node_fault(evidence: list[Evidence], alert: AlertIn) -> AlertIn | None:
    """What the node an alert names shows, as the alert the fleet's own rules raise for it (derived,
    ``source="agent"``): for an alert no playbook knows by its name and labels. Stock rules page an XID
    with the code only in the alert's value (``expr: DCGM_FI_DEV_XID_ERRORS > 0``; the value reaches the
    receiver only inside annotation text, which is never read for a decision), and a temperature rule
    (``DCGM_FI_DEV_GPU_TEMP > 90``) under a name of its own; an on-call engineer reads the node instead.

    Only the alert's GPU (its ``gpu`` index or ``UUID`` label) where it names one, else any of the
    node's; in order: a lost GPU (XID 79),
    uncorrectable ECC (48), a row-remap failure (64) or pending remap (63), the last XID it raised since
    shortly before the alert began (``XID_BEFORE_ALERT``), a thermal slowdown (NVML's clock-event reasons); then the node's own conditions (NotReady, DiskPressure).
    None: the node shows nothing, or was not read."""
    node = alert.node
    if node is None:
        return None
    # The page's own labels stay (severity, cluster, customer), but not its code nor the scrape's
    # attribution (the exporter's pod and host), which name no workload of the node's.
    base = {k: v for k, v in alert.labels.items() if k not in _NOT_CARRIED}
    # A GPU's fault answers only an alert on a GPU's series (dcgm-exporter's labels); any alert naming
    # the node is answered by the node's own conditions.
    on_gpu = gpu_series(alert.labels)
    health = (
        None
        if not on_gpu
        else next(
            (
                e
                for e in reversed(evidence)
                if e.tool == "nvml.gpu_health" and e.ok and e.params.get("node") == node and e.result
            ),
            None,
        )
    )
    report = (
        (health.result or {}).get("report") if health is not None and health.result.get("available") else None
    )
    gpus = list((report or {}).get("gpus") or [])
    index, uuid = alert.labels.get("gpu"), alert.labels.get("UUID")

    def theirs(g: dict[str, Any]) -> bool:
        return (index is not None and str(g.get("index")) == index) or (
            uuid is not None and g.get("uuid") == uuid
        )

    if index is not None or uuid is not None:  # a page about one GPU is answered by that GPU alone
        gpus = [g for g in gpus if theirs(g)]
    for g in gpus:
        rr = g.get("remapped_rows") or {}
        # Only XIDs raised about when the alert began or since: the node-agent keeps a GPU's history, and
        # an XID of last week is not what pages now.
        xids = [int(x["xid"]) for x in g.get("xid_events") or [] if _recent(x.get("observed_at"), alert)]
        name = "GPUXidError"
        if g.get("lost"):
            xid, what = LOST_GPU_XID, "is lost (fell off the bus)"
        elif (g.get("ecc_uncorrected_volatile") or 0) > 0 and xids and xids[-1] in CONTAINMENT_ECC_XIDS:
            xid, what = xids[-1], f"raised XID {xids[-1]} with uncorrectable ECC errors"
        elif (g.get("ecc_uncorrected_volatile") or 0) > 0:
            # The fleet's own alert for a double-bit count (docs/alerts.md: GPUEccUncorrectable, xid=48).
            xid, what, name = UNCORRECTABLE_ECC_XID, "has uncorrectable ECC errors", "GPUEccUncorrectable"
        elif rr.get("failure"):
            xid, what, name = 64, "failed to remap a row", "GPURowRemapFailure"
        elif rr.get("pending"):
            xid, what, name = 63, "has a row remap pending", "GPURowRemapPending"
        elif xids:
            xid, what = xids[-1], f"raised XID {xids[-1]}"
        elif set(g.get("clock_event_reasons") or []) & set(THERMAL_REASONS):
            reasons = ", ".join(sorted(g.get("clock_event_reasons") or []))
            return _derived(
                "GPUThermalThrottling",
                base | {"node": node, "gpu": str(g["index"])},
                f"the node-agent on {node} reports GPU {g['index']} slowing down to stay cool ({reasons})",
                f"nvml.gpu_health node={node}",
                alert,
            )
        else:
            continue
        labels = base | {"node": node, "gpu": str(g["index"]), "xid": str(xid)}
        if g.get("uuid"):
            labels["UUID"] = str(g["uuid"])
        why = f"the node-agent on {node} reports GPU {g['index']} {what}"
        return _derived(name, labels, why, f"nvml.gpu_health node={node}", alert)
    conditions, _ = observed(evidence, node)
    if conditions is not None:
        if conditions.get("Ready", "True") != "True":
            why = f"the cluster reports {node} Ready={conditions['Ready']}"
            return _derived(
                "KubeNodeNotReady", base | {"node": node}, why, f"k8s.get_node node={node}", alert
            )
        if conditions.get("DiskPressure") == "True":
            why = f"the cluster reports {node} DiskPressure=True"
            return _derived(
                "KubeNodeDiskPressure", base | {"node": node}, why, f"k8s.get_node node={node}", alert
            )
    return None


def pod_fault(evidence: list[Evidence], alert: AlertIn) -> AlertIn | None:
    """What the pod an alert names shows, as the fleet's own pod alert (derived, ``source="agent"``): for
    a pod alert no playbook knows by name (a community rule set's KubernetesPodCrashLooping). From the
    pod's status as the cluster reports it now: not ready (or waiting) with its container last OOMKilled
    and restarted (OOMKilled), or waiting in CrashLoopBackOff (a crash loop). None: the pod shows neither, or was not read."""
    pod = alert.pod
    if pod is None:
        return None
    namespace, name = pod
    read = next(
        (
            e
            for e in reversed(evidence)
            if e.tool == "k8s.get_pod"
            and e.ok
            and isinstance(e.result, dict)
            and (e.params.get("namespace"), e.params.get("pod")) == (namespace, name)
        ),
        None,
    )
    if read is None:
        return None
    r = read.result
    labels = {k: v for k, v in alert.labels.items() if k not in _NOT_CARRIED or k in ("namespace", "pod")}
    if r.get("node"):
        labels["node"] = str(r["node"])
    source = f"k8s.get_pod {namespace}/{name}"
    # Its status now, not its history: a container OOMKilled once last week and Running and ready since
    # still reports OOMKilled as its last termination. Only a pod that is not serving now is its loop.
    down = not r.get("ready") or bool(r.get("waiting_reason"))
    if down and r.get("last_termination_reason") == "OOMKilled" and (r.get("restarts") or 0) > 0:
        why = f"the cluster reports {namespace}/{name} last OOMKilled, restarted {r['restarts']} time(s)"
        return _derived("KubePodOOMKilled", labels | {"reason": "OOMKilled"}, why, source, alert)
    if r.get("waiting_reason") == "CrashLoopBackOff":
        why = f"the cluster reports {namespace}/{name} waiting in CrashLoopBackOff ({r.get('restarts', 0)} restarts)"
        return _derived("KubePodCrashLooping", labels | {"reason": "CrashLoopBackOff"}, why, source, alert)
    return None


# How long before an alert began an XID still explains it (the exporter's scrape and the rule's
# evaluation put the alert a minute or two after the XID; a ``for`` longer than this is rare for XIDs).
XID_BEFORE_ALERT = timedelta(minutes=15)


def _recent(observed_at: Any, alert: AlertIn) -> bool:
    """Whether an XID observed then can be what the alert pages about (unknown times count)."""
    if alert.starts_at is None or not observed_at:
        return True
    try:
        at = datetime.fromisoformat(str(observed_at).replace("Z", "+00:00"))
    except ValueError:
        return True
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at >= alert.starts_at - XID_BEFORE_ALERT


def _derived(alertname: str, labels: dict[str, str], why: str, source: str, received: AlertIn) -> AlertIn:
    """The fleet's alert for what was read, begun when the received alert began (a credit counts from
    then)."""
    return AlertIn(
        alertname=alertname,
        labels={k: v for k, v in labels.items() if k != "alertname"},
        annotations={"summary": why, "derived_from": source},
        starts_at=received.starts_at,
        source="agent",
    )


def summarise_read(tool: str, value: Any) -> tuple[str, bool]:
    """One line about a read for the timeline, and whether it carries untrusted text."""
    if tool == "k8s.get_node" and isinstance(value, dict):
        conds = ", ".join(
            f"{c['type']}={c['status']}"
            for c in value.get("conditions", [])
            if c["type"] in ("Ready", "GpuHealthy")
        )
        return f"{value['name']}: {conds}, unschedulable={value['unschedulable']}", False
    if tool == "nvml.gpu_health" and isinstance(value, dict):
        if not value.get("available"):
            return f"node-agent on {value['node']} did not answer: {value.get('reason', '')}", False
        bad = []
        for g in (value.get("report") or {}).get("gpus", []):
            xids = ",".join(str(x["xid"]) for x in g.get("xid_events") or [])
            if g.get("lost") or xids or (g.get("ecc_uncorrected_volatile") or 0) > 0:
                bad.append(
                    f"GPU{g['index']}" + (" lost" if g.get("lost") else "") + (f" XID {xids}" if xids else "")
                )
        return f"{value['node']}: " + ("; ".join(bad) if bad else "all GPUs healthy"), False
    if tool == "k8s.list_pods_on_node" and isinstance(value, list):
        tenants = sum(1 for p in value if not p.get("daemonset"))
        return f"{len(value)} pods ({tenants} tenant)", False
    if tool == "k8s.get_pod" and isinstance(value, dict):
        extra = value.get("waiting_reason") or value.get("last_termination_reason") or ""
        return (
            f"{value['namespace']}/{value['name']}: {value['phase']}, ready={value['ready']}, "
            f"restarts={value['restarts']}{' ' + extra if extra else ''}",
            False,
        )
    if tool == "k8s.pod_logs" and isinstance(value, dict):
        lines = value.get("text", "").count("\n") + 1
        return f"{lines} log lines (untrusted)", True
    if tool == "k8s.events_for" and isinstance(value, list):
        reasons = sorted({e["reason"] for e in value})
        return f"{len(value)} events: {', '.join(reasons) or '-'}", True
    if tool == "billing.usage" and isinstance(value, dict):
        return f"{value.get('gpu_seconds')} GPU-s billed, ${value.get('cost_usd')}", False
    if tool == "billing.credits_for_incident" and isinstance(value, dict):
        return f"{len(value.get('credits', []))} credits, ${value.get('total_usd')}", False
    if isinstance(value, list):
        return f"{len(value)} items", False
    return "ok", False
