"""Diagnosis changes the plan: a pod's symptom whose GPU the node-agent reports broken is that GPU's
fault, and the incident becomes the node's hardware incident."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from supply_agent.mind.triage import match_playbook, pod_gpu_fault
from supply_agent.models.incident import AlertIn, Evidence
from supply_agent.policy import load_playbooks

PLAYBOOKS = load_playbooks(Path(__file__).resolve().parents[3] / "playbooks")


def _report(node: str, **gpu: Any) -> Evidence:
    g = {"index": 7, "uuid": "GPU-7", "lost": False, "xid_events": [], "pods": ["acme/train-0"], **gpu}
    other = {"index": 0, "uuid": "GPU-0", "lost": True, "xid_events": [], "pods": ["cobalt/eval-1"]}
    return Evidence(
        tool="nvml.gpu_health",
        params={"node": node},
        ok=True,
        summary="",
        result={"node": node, "available": True, "report": {"node": node, "gpus": [other, g]}},
    )


@pytest.mark.parametrize(
    ("gpu", "xid", "playbook"),
    [
        ({"lost": True}, "79", "xid-fallen-off-bus"),
        ({"ecc_uncorrected_volatile": 2}, "48", "xid-ecc"),
        ({"xid_events": [{"xid": 13, "gpu_index": 7, "observed_at": "2026-01-01T00:00:00Z"}]}, None, None),
    ],
)
def test_the_pods_own_gpu_fault_becomes_the_incidents_alert(
    gpu: dict[str, Any], xid: str | None, playbook: str | None
) -> None:
    found = pod_gpu_fault([_report("n1", **gpu)], "acme", "train-0", "n1")
    if xid is None:  # an application XID is the application's: the pod's own playbook stands
        assert found is None
        return
    assert found is not None and found.source == "agent"
    assert found.labels == {"node": "n1", "gpu": "7", "xid": xid, "UUID": "GPU-7"}
    assert "acme/train-0" in found.annotations["summary"]
    crash = AlertIn(alertname="KubePodCrashLooping", labels={"namespace": "acme", "pod": "train-0"})
    chosen = match_playbook(PLAYBOOKS, [found, crash])
    assert chosen is not None and chosen.id == playbook


def test_another_pods_broken_gpu_or_another_nodes_report_says_nothing() -> None:
    # GPU 0 is lost, but it is cobalt's: acme's crash loop is not explained by it.
    assert pod_gpu_fault([_report("n1")], "acme", "train-0", "n1") is None
    assert pod_gpu_fault([_report("n2", lost=True)], "acme", "train-0", "n1") is None
    unavailable = Evidence(
        tool="nvml.gpu_health", params={"node": "n1"}, ok=True, summary="", result={"available": False}
    )
    assert pod_gpu_fault([unavailable], "acme", "train-0", "n1") is None
