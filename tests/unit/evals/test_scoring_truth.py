"""The scorer takes a claimed mitigation only when the fleet's truth says the symptom is gone or contained:
faults injected into a real fleet, fixes (or none) applied through its Kubernetes API, the truth's
``symptoms`` read back, and ``score`` fed that truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from evals.report import failure_reasons
from evals.schema import load_incident
from evals.scoring import Evidence, score, symptoms_by_incident
from sandbox.executor.audit import AuditRecord
from sandbox.fleet.admin import AdminClient
from sandbox.fleet.world import GPU_INDICES_ANNOTATION
from supply_agent.models.incident import AlertIn, IncidentState
from supply_agent.policy import GlobalLimits

T0 = datetime(2025, 1, 1, tzinfo=UTC)
INCIDENTS = Path(__file__).resolve().parents[3] / "evals" / "incidents"
LIMITS = GlobalLimits()
CUSTOMER = "supply-agent.io/customer"


def rec(tool: str, *, at: datetime = T0, approver: str | None = None, **params: Any) -> AuditRecord:
    """An executed action of incident inc-1, as the audit log records it."""
    return AuditRecord(
        tool=tool,
        params=params,
        at=at,
        incident_id="inc-1",
        verdict="allow",
        approver=approver,
        phase="after",
        outcome="executed",
    )


def _symptom(admin: AdminClient, fault_id: str) -> dict[str, Any]:
    return next(s for s in admin.truth()["symptoms"] if s["fault_id"] == fault_id)


def _tenant_pods(core: client.CoreV1Api) -> list[client.V1Pod]:
    return [
        p
        for p in core.list_pod_for_all_namespaces(label_selector=CUSTOMER).items
        if p.status.phase == "Running"
    ]


def _busy_gpu(core: client.CoreV1Api) -> tuple[str, int, client.V1Pod]:
    for pod in _tenant_pods(core):
        indices = (pod.metadata.annotations or {}).get(GPU_INDICES_ANNOTATION, "")
        if indices:
            return pod.spec.node_name, int(indices.split(",")[0]), pod
    raise AssertionError("no GPU in use")


def _state(iid: str, *alerts: AlertIn, outcome: str | None = "mitigated") -> IncidentState:
    return IncidentState.model_validate(
        {
            "incident_id": iid,
            "alerts": list(alerts),
            "opened_at": T0,
            "root_cause": "tenant-crashloop",
            "outcome": outcome,
        }
    )


def _evidence(
    truth: dict[str, Any], states: list[IncidentState], audit: list[AuditRecord], **extra: Any
) -> Evidence:
    return Evidence(
        names={},
        opened=[s.incident_id for s in states],
        states=states,
        paused=frozenset(),
        closed_at={s.incident_id: T0 + timedelta(minutes=10) for s in states},
        t0=T0,
        now=T0 + timedelta(minutes=10),
        audit=audit,
        truth=truth,
        credits={s.incident_id: Decimal("10") for s in states},
        **extra,
    )


def _crashloop_audit() -> list[AuditRecord]:
    return [
        rec("notify.customer", customer="acme", at=T0 + timedelta(minutes=2)),
        rec("billing.issue_credit", customer="acme", at=T0 + timedelta(minutes=3), approver="alice"),
    ]


# -- what the truth says, per fault, from the world -------------------------------------------------------


def test_a_crashloop_persists_until_the_workload_runs_again(
    core: client.CoreV1Api, apps: client.AppsV1Api, admin: AdminClient
) -> None:
    pod = _tenant_pods(core)[0]
    ns, name = pod.metadata.namespace, pod.metadata.name
    fault = admin.inject("crashloop", namespace=ns, pod=name)
    admin.advance(120)
    sym = _symptom(admin, fault["id"])
    assert (sym["present"], sym["contained"]) == (True, False)
    assert sym["namespace"] == ns and sym["pod"] == name and sym["node"] == pod.spec.node_name
    assert f"pod {ns}/{name} is still CrashLoopBackOff" in sym["why"]
    # The fix, through the API: a rollout replaces the looping pod with a new one that runs.
    deployment = pod.metadata.labels["app"]
    apps.patch_namespaced_deployment(
        deployment,
        ns,
        {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}},
    )
    admin.advance(30)
    with pytest.raises(client.ApiException):
        core.read_namespaced_pod(name, ns)
    sym = _symptom(admin, fault["id"])
    assert (sym["present"], sym["contained"]) == (False, False), sym
    assert "was replaced" in sym["why"]


def test_deleting_a_looping_pod_nothing_replaces_is_not_a_fix(
    core: client.CoreV1Api, apps: client.AppsV1Api, admin: AdminClient
) -> None:
    pod = _tenant_pods(core)[0]
    ns, deployment = pod.metadata.namespace, pod.metadata.labels["app"]
    fault = admin.inject("oomkill", namespace=ns, pod=pod.metadata.name)
    assert "OOMKilled" in _symptom(admin, fault["id"])["why"]
    apps.patch_namespaced_deployment_scale(deployment, ns, {"spec": {"replicas": 0}})
    admin.advance(60)
    sym = _symptom(admin, fault["id"])
    assert sym["present"] and not sym["contained"]
    assert "scaled to 0" in sym["why"]


def test_a_fatal_xid_is_contained_only_once_the_node_is_cordoned_and_drained(
    core: client.CoreV1Api, admin: AdminClient
) -> None:
    node, gpu, owner = _busy_gpu(core)
    fault = admin.inject("xid", node=node, gpu=gpu, code=79)
    sym = _symptom(admin, fault["id"])
    assert (sym["present"], sym["contained"]) == (True, False)
    assert f"tenant pod {owner.metadata.namespace}/{owner.metadata.name} still runs on it" in sym["why"]
    core.patch_node(node, {"spec": {"unschedulable": True}})
    # Cordoned, but the job is still on the lost GPU: not contained.
    assert not _symptom(admin, fault["id"])["contained"]
    for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items:
        if pod.metadata.labels and CUSTOMER in pod.metadata.labels:
            core.create_namespaced_pod_eviction(
                pod.metadata.name,
                pod.metadata.namespace,
                client.V1Eviction(
                    metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=pod.metadata.namespace)
                ),
            )
    admin.advance(60)
    sym = _symptom(admin, fault["id"])
    assert (sym["present"], sym["contained"]) == (True, True), sym
    assert "cordoned" in sym["why"] and "no tenant pod runs on it" in sym["why"]


def test_an_application_xid_leaves_nothing_to_fix(core: client.CoreV1Api, admin: AdminClient) -> None:
    node, gpu, _ = _busy_gpu(core)
    fault = admin.inject("xid", node=node, gpu=gpu, code=13)
    sym = _symptom(admin, fault["id"])
    assert (sym["present"], sym["contained"]) == (False, False)
    assert "in service" in sym["why"]


def test_node_faults_need_a_cordon_or_the_agents_own_taint(
    core: client.CoreV1Api, admin: AdminClient
) -> None:
    nodes = [n.metadata.name for n in core.list_node().items]
    full = admin.inject("disk-pressure", node=nodes[0])
    dead = admin.inject("notready", node=nodes[1])
    hot = admin.inject("thermal", node=nodes[2], gpu=0)
    # The kubelet's own disk-pressure taint and the node controller's unreachable taints are not containment.
    for fid in (full["id"], dead["id"], hot["id"]):
        sym = _symptom(admin, fid)
        assert (sym["present"], sym["contained"]) == (True, False), sym
    core.patch_node(nodes[0], {"spec": {"unschedulable": True}})
    core.patch_node(nodes[1], {"spec": {"unschedulable": True}})
    taint = {"key": "supply-agent.io/gpu-thermal", "value": "throttling", "effect": "PreferNoSchedule"}
    core.patch_node(nodes[2], {"spec": {"taints": [taint]}})
    for fid in (full["id"], dead["id"], hot["id"]):
        sym = _symptom(admin, fid)
        assert (sym["present"], sym["contained"]) == (True, True), sym
    admin.clear(nodes[0])
    assert all(s["fault_id"] != full["id"] for s in admin.truth()["symptoms"])


def test_double_metering_is_present_until_one_meter_stops(core: client.CoreV1Api, admin: AdminClient) -> None:
    pod = next(p for p in _tenant_pods(core) if (p.metadata.annotations or {}).get(GPU_INDICES_ANNOTATION))
    fault = admin.inject("double-metering", namespace=pod.metadata.namespace, pod=pod.metadata.name)
    admin.advance(60)
    sym = _symptom(admin, fault["id"])
    assert sym["present"] and "metered twice" in sym["why"]


# -- the score the truth gives ----------------------------------------------------------------------------


def test_score_downgrades_a_mitigation_the_world_does_not_show(
    core: client.CoreV1Api, admin: AdminClient
) -> None:
    pod = _tenant_pods(core)[0]
    ns, name = pod.metadata.namespace, pod.metadata.name
    admin.inject("crashloop", namespace=ns, pod=name)
    admin.advance(120)
    inc = load_incident(INCIDENTS / "pb-tenant-crashloop.yaml")
    # Scored as if the file expected a mitigation: the world, not the file, must refuse the claim.
    inc = inc.model_copy(update={"expect": inc.expect.model_copy(update={"outcome": "mitigated"})})
    state = _state("inc-1", AlertIn(alertname="KubePodCrashLooping", labels={"namespace": ns, "pod": name}))
    r = score(inc, _evidence(admin.truth(), [state], _crashloop_audit()), LIMITS, "runbook", True, 8)
    assert (r.claimed_outcome, r.outcome, r.outcome_correct, r.passed) == (
        "mitigated",
        "not_mitigated",
        False,
        False,
    )
    assert len(r.symptoms_left) == 1
    assert r.symptoms_left[0].startswith(f"claimed mitigated but pod {ns}/{name} is still CrashLoopBackOff")
    reasons = failure_reasons(r)
    assert "outcome mismatch: expected mitigated, got not_mitigated (claimed mitigated)" in reasons
    assert any(x.startswith("symptom left: claimed mitigated but pod") for x in reasons)
    # The same claim once the world agrees: the fault cleared, the pod runs again.
    admin.clear()
    r = score(inc, _evidence(admin.truth(), [state], _crashloop_audit()), LIMITS, "runbook", True, 8)
    assert (r.outcome, r.symptoms_left, r.passed) == ("mitigated", [], True)


def test_a_double_metered_pod_the_ledger_paused_is_contained(
    core: client.CoreV1Api, admin: AdminClient
) -> None:
    pod = next(p for p in _tenant_pods(core) if (p.metadata.annotations or {}).get(GPU_INDICES_ANNOTATION))
    ns, name = pod.metadata.namespace, pod.metadata.name
    admin.inject("double-metering", namespace=ns, pod=name)
    admin.advance(60)
    inc = load_incident(INCIDENTS / "pb-double-metering.yaml")
    state = _state("inc-1", AlertIn(alertname="GPUMeteringAnomaly", labels={"namespace": ns, "pod": name}))
    state = state.model_copy(update={"root_cause": "double-metering"})
    audit = [
        rec("billing.pause_metering", namespace=ns, pod=name, approver="alice"),
        rec("billing.issue_credit", customer="acme", approver="alice"),
        rec("notify.customer", customer="acme"),
    ]
    truth = admin.truth()
    r = score(inc, _evidence(truth, [state], audit), LIMITS, "runbook", True, 8)
    assert r.outcome == "not_mitigated" and "metered twice" in r.symptoms_left[0]
    paused = _evidence(truth, [state], audit, metering_paused=frozenset({f"{ns}/{name}"}))
    r = score(inc, paused, LIMITS, "runbook", True, 8)
    assert (r.outcome, r.symptoms_left, r.passed) == ("mitigated", [], True)


def test_several_incidents_each_answer_for_the_faults_their_alerts_name() -> None:
    sym = {"fault_id": "f0001", "kind": "crashloop", "present": True, "contained": False, "why": "looping"}
    truth: dict[str, Any] = {
        "symptoms": [
            {**sym, "node": "n1", "namespace": "t", "pod": "p"},
            {**sym, "fault_id": "f0002", "kind": "notready", "node": "n2", "namespace": None, "pod": None},
            {
                **sym,
                "fault_id": "f0003",
                "kind": "disk-pressure",
                "node": "n9",
                "namespace": None,
                "pod": None,
            },
        ]
    }
    pod_inc = _state(
        "inc-a", AlertIn(alertname="KubePodCrashLooping", labels={"namespace": "t", "pod": "p", "node": "n1"})
    )
    node_inc = _state(
        "inc-b",
        AlertIn(alertname="KubeNodeNotReady", labels={"node": "n1"}),
        AlertIn(alertname="NodeDown", labels={"node": "n2"}),
    )
    by = symptoms_by_incident([pod_inc, node_inc], truth)
    # The pod's fault goes to the incident naming the pod (not to the one naming only its node); a fault
    # no alert names is nobody's claim.
    assert [[s["fault_id"] for s in about] for about in by] == [["f0001"], ["f0002"]]
    assert [len(about) for about in symptoms_by_incident([pod_inc], truth)] == [3]


def test_the_incident_count_reason_names_the_incidents() -> None:
    inc = load_incident(INCIDENTS / "pb-stuck-terminating.yaml")
    stuck = _state(
        "inc-1a2b",
        AlertIn(alertname="KubePodStuckTerminating", labels={"namespace": "tenant-acme", "pod": "job-0"}),
        outcome="escalated",
    )
    node = _state(
        "inc-3c4d", AlertIn(alertname="KubeNodeNotReady", labels={"node": "east-00"}), outcome="escalated"
    )
    truth: dict[str, Any] = {"pools": {}, "writes": [], "pods_disrupted": [], "symptoms": []}
    r = score(inc, _evidence(truth, [stuck, node], []), LIMITS, "runbook", True, 8)
    assert r.incidents_note == (
        "expected 1 incident, got 2: inc-1a2b (KubePodStuckTerminating pod tenant-acme/job-0), "
        "inc-3c4d (KubeNodeNotReady node=east-00)"
    )
    assert f"incident count mismatch: {r.incidents_note}" in failure_reasons(r)
    # A storm's incident names its first few pods and counts the rest.
    hot = _state(
        "inc-5e6f",
        *[
            AlertIn(alertname="GPUThermalThrottling", labels={"namespace": "t", "pod": f"p{i}"})
            for i in range(5)
        ],
        outcome="escalated",
    )
    r = score(inc, _evidence(truth, [hot, node], []), LIMITS, "runbook", True, 8)
    assert "inc-5e6f (GPUThermalThrottling pods t/p0, t/p1, t/p2 (+2 more))" in r.incidents_note
    none = score(inc, _evidence(truth, [], []), LIMITS, "runbook", True, 8)
    assert none.incidents_note == "expected 1 incident, got 0"
