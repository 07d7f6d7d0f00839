"""Write runners bound to the write credentials: what the guarded executor calls, and nothing else does."""

from __future__ import annotations

from typing import cast

from pydantic import BaseModel

from sandbox.executor.executor import Runner
from tools.catalogue import (
    DeletePodInput,
    DeploymentInput,
    DrainInput,
    NodeInput,
    ScaleInput,
    TaintInput,
    UntaintInput,
)
from tools.kubernetes import KubeTools


def kube_runners(kube: KubeTools) -> dict[str, Runner]:
    """The Kubernetes write tools over one (write-credentialed) client."""

    def cordon(i: BaseModel, dry: bool, key: str) -> BaseModel:
        return kube.cordon_node(cast(NodeInput, i).node, dry_run=dry)

    def uncordon(i: BaseModel, dry: bool, key: str) -> BaseModel:
        return kube.uncordon_node(cast(NodeInput, i).node, dry_run=dry)

    def taint(i: BaseModel, dry: bool, key: str) -> BaseModel:
        t = cast(TaintInput, i)
        return kube.taint_node(t.node, t.key, t.value, t.effect, dry_run=dry)

    def untaint(i: BaseModel, dry: bool, key: str) -> BaseModel:
        u = cast(UntaintInput, i)
        return kube.untaint_node(u.node, u.key, dry_run=dry)

    def drain(i: BaseModel, dry: bool, key: str) -> BaseModel:
        d = cast(DrainInput, i)
        return kube.drain_node(d.node, timeout_s=d.timeout_s, dry_run=dry)

    def delete(i: BaseModel, dry: bool, key: str) -> BaseModel:
        p = cast(DeletePodInput, i)
        return kube.delete_pod(p.namespace, p.pod, p.grace_period_s, dry_run=dry)

    def restart(i: BaseModel, dry: bool, key: str) -> BaseModel:
        d = cast(DeploymentInput, i)
        return kube.rollout_restart(d.namespace, d.deployment, key, dry_run=dry)

    def scale(i: BaseModel, dry: bool, key: str) -> BaseModel:
        s = cast(ScaleInput, i)
        return kube.scale_deployment(s.namespace, s.deployment, s.replicas, dry_run=dry)

    return {
        "k8s.cordon_node": cordon,
        "k8s.uncordon_node": uncordon,
        "k8s.taint_node": taint,
        "k8s.untaint_node": untaint,
        "k8s.drain_node": drain,
        "k8s.delete_pod": delete,
        "k8s.rollout_restart": restart,
        "k8s.scale_deployment": scale,
    }
