"""Approvers: who answers the gate's ``ask``. This module has the terminal approver
(``--approve prompt|auto|never``); Slack answers the same pending requests from the server."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from rich.console import Console
from rich.panel import Panel
from rich.prompt import Confirm

from supply_agent.incidents.agent import ApprovalAnswer, ApprovalRequest


def default_identity() -> str:
    try:
        return f"terminal:{getpass.getuser()}"
    except Exception:
        return "terminal:unknown"


def describe(request: ApprovalRequest) -> str:
    """What a human needs to decide: what, why, the blast radius and the gate's reasons."""
    br = request.blast_radius
    radius = ", ".join(
        f"{k}: {', '.join(v) if isinstance(v, list) else v}"
        for k, v in br.items()
        if v not in (None, [], 0, "0", "0.00")
    )
    params = ", ".join(f"{k}={v}" for k, v in request.params.items())
    lines = [
        f"[bold]{request.tool}[/]({params})  step {request.step} of incident {request.incident_id}",
        f"why: {request.why or '-'}  (proposed by {request.planner})",
        f"blast radius: {radius or 'none'}",
        "gate: " + ("; ".join(request.reasons) or "ask"),
        f"expires: {request.expires_at.isoformat()}",
    ]
    return "\n".join(lines)


class TerminalApprover:
    """``prompt`` asks on the terminal; ``auto`` approves as ``identity``; ``never`` rejects."""

    def __init__(
        self,
        mode: Literal["prompt", "auto", "never"],
        identity: str,
        clock: Callable[[], datetime],
        console: Console | None = None,
    ) -> None:
        self.mode, self.identity, self.clock = mode, identity, clock
        self.console = console or Console(stderr=True)

    def answer(self, request: ApprovalRequest) -> ApprovalAnswer | None:
        self.console.print(Panel(describe(request), title="approval requested", border_style="yellow"))
        if self.mode == "auto":
            approved, comment = True, "auto-approved (--approve auto)"
        elif self.mode == "never":
            approved, comment = False, "rejected (--approve never)"
        else:
            approved = Confirm.ask(f"approve as {self.identity}?", console=self.console, default=False)
            comment = ""
        self.console.print(f"{'approved' if approved else 'rejected'} by {self.identity}")
        return ApprovalAnswer(
            approved=approved,
            approver=self.identity,
            decided_at=self.clock(),
            channel="terminal",
            comment=comment,
        )
