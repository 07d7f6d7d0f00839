"""The names of every tool in the catalogue, with their effect class: the vocabulary playbooks use.

Kept apart from the catalogue itself so that playbook validation needs no client library.
"""

from __future__ import annotations

from enum import StrEnum


class Effect(StrEnum):
    READ = "read"
    REVERSIBLE = "reversible"
    IRREVERSIBLE = "irreversible"


TOOLS: dict[str, Effect] = {
    # Kubernetes reads
    "k8s.get_node": Effect.READ,
    "k8s.list_pods_on_node": Effect.READ,
    "k8s.get_pod": Effect.READ,
    "k8s.pod_logs": Effect.READ,
    "k8s.events_for": Effect.READ,
    "k8s.pdbs_for_pod": Effect.READ,
    "k8s.deployment_status": Effect.READ,
    # Kubernetes writes
    "k8s.cordon_node": Effect.REVERSIBLE,
    "k8s.uncordon_node": Effect.REVERSIBLE,
    "k8s.taint_node": Effect.REVERSIBLE,
    "k8s.untaint_node": Effect.REVERSIBLE,
    "k8s.drain_node": Effect.IRREVERSIBLE,  # evicted pods restart elsewhere: the disruption cannot be undone
    "k8s.delete_pod": Effect.IRREVERSIBLE,
    "k8s.rollout_restart": Effect.IRREVERSIBLE,
    "k8s.scale_deployment": Effect.REVERSIBLE,
    # GPU health (node-agent through pods/proxy)
    "nvml.gpu_health": Effect.READ,
    # Billing
    "billing.usage": Effect.READ,
    "billing.credits_for_incident": Effect.READ,
    "billing.meter_anomalies": Effect.READ,
    "billing.issue_credit": Effect.IRREVERSIBLE,
    "billing.pause_metering": Effect.REVERSIBLE,
    "billing.resume_metering": Effect.REVERSIBLE,
    "billing.hold_payout": Effect.REVERSIBLE,
    "billing.release_payout": Effect.REVERSIBLE,
    # People
    "notify.customer": Effect.IRREVERSIBLE,
    "escalate.human": Effect.READ,  # paging a human never needs a gate's permission
}

INVERSES: dict[str, str] = {
    "k8s.cordon_node": "k8s.uncordon_node",
    "k8s.uncordon_node": "k8s.cordon_node",
    "k8s.taint_node": "k8s.untaint_node",
    "k8s.untaint_node": "k8s.taint_node",
    "billing.pause_metering": "billing.resume_metering",
    "billing.resume_metering": "billing.pause_metering",
    "billing.hold_payout": "billing.release_payout",
    "billing.release_payout": "billing.hold_payout",
}
