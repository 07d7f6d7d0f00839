"""What the nodes share: timeline entries, the runbook step a record came from, short renderings of an
action and its result, and the tool table's default read-back."""

from __future__ import annotations

from typing import Any

from supply_agent.mind.deps import GraphDeps
from supply_agent.models.incident import IncidentState, TimelineEntry
from supply_agent.policy import Step, Verify
from tools.catalogue import CATALOGUE


def default_verify(tool: str) -> Any:
    """How to read back a write that no runbook step describes (an LLM's proposal): the tool table's."""
    spec = CATALOGUE.get(tool)
    return Verify.model_validate(spec.verify).condition if spec and spec.verify is not None else None


def entry(deps: GraphDeps, node: str, kind: str, text: str, **data: Any) -> TimelineEntry:
    return TimelineEntry(at=deps.runtime.clock(), node=node, kind=kind, text=text, data=data)


def runbook_step(deps: GraphDeps, state: IncidentState, name: str | None) -> Step | None:
    pb = deps.runtime.playbooks.get(state.playbook_id) if state.playbook_id else None
    if pb is None or name is None:
        return None
    return next((s for s in pb.runbook if s.name == name), None)


def short(params: dict[str, Any]) -> str:
    keys = ("node", "namespace", "pod", "deployment", "customer", "amount_usd")
    shown = [str(params[k]) for k in keys if k in params]
    return "/".join(shown[:2]) + (
        f" ${params['amount_usd']}" if "amount_usd" in params and len(shown) > 2 else ""
    )


def result_line(result: dict[str, Any]) -> str:
    if "evicted" in result:
        return (
            f"evicted {len(result['evicted'])}, blocked {len(result.get('blocked', []))}, "
            f"remaining {len(result.get('remaining', []))}"
        )
    if "changed" in result and "detail" in result:
        return str(result["detail"] or ("changed" if result["changed"] else "already so"))
    if "amount_usd" in result:
        return f"credit ${result['amount_usd']} to {result.get('customer')}"
    return ""
