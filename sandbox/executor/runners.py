"""Write runners bound to the write credentials: what the guarded executor calls, and nothing else does."""

from __future__ import annotations

from decimal import Decimal
from typing import cast

from pydantic import BaseModel

from sandbox.executor.executor import Runner
from supply_agent.models import Action
from tools.billing import CreditRequest, HoldRequest, Ledger, PauseRequest, ReleaseRequest, ResumeRequest
from tools.catalogue import (
    CreditInput,
    DeletePodInput,
    DeploymentInput,
    DrainInput,
    MeteringInput,
    NodeInput,
    NotifyInput,
    PayoutInput,
    ScaleInput,
    TaintInput,
    UntaintInput,
)
from tools.kubernetes import KubeTools
from tools.notify import Outbox


def kube_runners(kube: KubeTools) -> dict[str, Runner]:
    """The Kubernetes write tools over one (write-credentialed) client."""

    def cordon(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        return kube.cordon_node(cast(NodeInput, i).node, dry_run=dry)

    def uncordon(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        return kube.uncordon_node(cast(NodeInput, i).node, dry_run=dry)

    def taint(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        t = cast(TaintInput, i)
        return kube.taint_node(t.node, t.key, t.value, t.effect, dry_run=dry)

    def untaint(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        u = cast(UntaintInput, i)
        return kube.untaint_node(u.node, u.key, dry_run=dry)

    def drain(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        d = cast(DrainInput, i)
        return kube.drain_node(d.node, timeout_s=d.timeout_s, dry_run=dry)

    def delete(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        p = cast(DeletePodInput, i)
        return kube.delete_pod(p.namespace, p.pod, p.grace_period_s, dry_run=dry)

    def restart(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        d = cast(DeploymentInput, i)
        return kube.rollout_restart(d.namespace, d.deployment, action.idempotency_key(), dry_run=dry)

    def scale(i: BaseModel, dry: bool, action: Action) -> BaseModel:
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


def billing_runners(ledger: Ledger, max_credit_usd: Decimal) -> dict[str, Runner]:
    """The billing write tools; keys come from (incident, step, tool), so a repeated step credits once."""

    def credit(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        c = cast(CreditInput, i)
        return ledger.issue_credit(
            CreditRequest(
                customer=c.customer,
                amount_usd=c.amount_usd,
                reason=c.reason,
                incident_id=action.incident_id,
                step=action.step,
                idempotency_key=action.idempotency_key(),
            ),
            max_amount_usd=max_credit_usd,
        )

    def pause(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        m = cast(MeteringInput, i)
        return ledger.pause_metering(
            PauseRequest(
                namespace=m.namespace,
                pod=m.pod,
                reason=m.reason,
                incident_id=action.incident_id,
                step=action.step,
                idempotency_key=action.idempotency_key(),
            )
        )

    def resume(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        m = cast(MeteringInput, i)
        return ledger.resume_metering(
            ResumeRequest(
                namespace=m.namespace,
                pod=m.pod,
                incident_id=action.incident_id,
                step=action.step,
                idempotency_key=action.idempotency_key(),
            )
        )

    def hold(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        p = cast(PayoutInput, i)
        return ledger.hold_payout(
            HoldRequest(
                node=p.node,
                reason=p.reason,
                incident_id=action.incident_id,
                step=action.step,
                idempotency_key=action.idempotency_key(),
            )
        )

    def release(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        p = cast(PayoutInput, i)
        return ledger.release_payout(
            ReleaseRequest(
                node=p.node,
                incident_id=action.incident_id,
                step=action.step,
                idempotency_key=action.idempotency_key(),
            )
        )

    return {
        "billing.issue_credit": credit,
        "billing.pause_metering": pause,
        "billing.resume_metering": resume,
        "billing.hold_payout": hold,
        "billing.release_payout": release,
    }


def notify_runners(outbox: Outbox) -> dict[str, Runner]:
    def notify(i: BaseModel, dry: bool, action: Action) -> BaseModel:
        n = cast(NotifyInput, i)
        return outbox.send(action.incident_id, n.customer, n.subject, n.body, action.idempotency_key())

    return {"notify.customer": notify}
