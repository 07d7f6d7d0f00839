"""An MCP caller's ``ask``, end to end with real parts: ``supply-agent mcp`` over stdio (the SDK's own
client starts it) and ``serve`` (in process, its real app) on one store, the sandbox fleet, and the Slack
stub behind the real slack_sdk. The gate asks a human about a drain; the prompt goes to Slack once;
a stranger's click is refused, the approver's click lands at ``serve`` and finishes it; the caller's
``execute`` of the same request then drains the node, once. A replayed approval, a rejected one, an
expired one and an action while frozen are refused and write nothing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from mcp import Client, StdioServerParameters

from supply_agent.cli import main
from tests.support.service_harness import (
    APPROVER,
    SLACK_TOKEN,
    STRANGER,
    ServeHarness,
    serve_harness,
)

ROOT = Path(__file__).resolve().parents[2]


def _text(result: Any) -> Any:
    assert not result.is_error, result
    sc = result.structured_content
    if sc is not None:
        return sc["result"] if set(sc) == {"result"} else sc
    return json.loads(result.content[0].text)


def _mcp(h: ServeHarness, tmp: Path, caller: str) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPLY_AGENT_")}
    env |= {  # the serve harness's store and Slack: one data directory, as one database would be
        "SUPPLY_AGENT_DATA_DIR": str(tmp / "var"),
        "SUPPLY_AGENT_APPROVERS": APPROVER,
        "SUPPLY_AGENT_SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SUPPLY_AGENT_SLACK_CHANNEL": "C0APPROVALS",
        "SUPPLY_AGENT_SLACK_API_URL": h.slack.url,
    }
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "supply_agent.cli", "mcp", "--kubeconfig", str(h.kubeconfig), "--caller", caller],
        env=env,
        cwd=str(ROOT),
    )


def _writes(h: ServeHarness) -> list[dict[str, Any]]:
    return [w for w in h.admin.truth()["writes"] if not w.get("dry_run")]


def _drain(node: str, request: str, approval: str | None = None) -> dict[str, Any]:
    execution: dict[str, Any] = {
        "action": {"tool": "k8s.drain_node", "params": {"node": node}},
        "request_id": request,
        "reason": "GPU 1 fell off the bus",
    }
    if approval is not None:
        execution["approval_id"] = approval
    return {"execution": execution}


def test_a_drain_asked_approved_in_slack_then_run_once(tmp_path: Path) -> None:
    with serve_harness(tmp_path) as h:
        node, other = h.node(0), h.node(1)

        async def run() -> None:
            async with Client(_mcp(h, tmp_path, "agent-a"), read_timeout_seconds=90) as a:
                asked = _text(await a.call_tool("execute", _drain(node, "d-1")))
                assert asked["verdict"] == "ask" and asked["executed"] is False, asked
                approval = asked["approval"]
                assert approval["status"] == "pending" and approval["posted_to_slack"], approval
                assert approval["tool"] == "k8s.drain_node" and approval["params"] == {"node": node}
                posted = h.slack.posted()
                assert len(posted) == 1 and "k8s.drain_node" in json.dumps(posted[0]["blocks"])
                assert h.button().startswith("mcp:agent-a|")
                again = _text(await a.call_tool("execute", _drain(node, "d-1")))  # asked again: the same one
                assert again["approval"]["approval_id"] == approval["approval_id"]
                assert len(h.slack.posted()) == 1  # never a second prompt

                # The approval is bound to its action: offered for another node, or another request, no.
                for replay in (_drain(other, "d-2", approval["approval_id"]), _drain(node, "d-3", "999")):
                    refused = _text(await a.call_tool("execute", replay))
                    assert refused["verdict"] == "deny" and refused["executed"] is False, refused
                assert "another action" in " ".join(
                    _text(await a.call_tool("execute", _drain(other, "d-2", approval["approval_id"])))[
                        "reasons"
                    ]
                )
                assert _writes(h) == []

                # A stranger's click is refused at serve; the approval stays pending.
                r = h.click(STRANGER, "approve", h.button())
                assert r.status_code == 200 and r.json()["status"] == "refused", r.text
                h.drain()
                status = _text(
                    await a.call_tool("approval_status", {"query": {"approval_id": approval["approval_id"]}})
                )
                assert status["status"] == "pending", status
                still = _text(await a.call_tool("execute", _drain(node, "d-1")))
                assert still["executed"] is False and _writes(h) == []

                # The approver's click finishes it, and Slack's message says who decided.
                r = h.click(APPROVER, "approve", h.button())
                assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
                h.drain()
                status = _text(
                    await a.call_tool("approval_status", {"query": {"approval_id": approval["approval_id"]}})
                )
                assert status["status"] == "approved" and status["decided_by"] == APPROVER, status
                h.until("the prompt updated", h.slack.updates)
                shown = json.dumps(h.slack.updates()[-1]["blocks"])
                assert f"Approved by <@{APPROVER}>" in shown and '"actions"' not in shown, shown

                ran = _text(await a.call_tool("execute", _drain(node, "d-1")))
                assert ran["outcome"] == "executed" and ran["executed"] is True, ran
                assert ran["approval"]["decided_by"] == APPROVER
                drained = _writes(h)
                assert drained and all(w.get("node") in (node, None) for w in drained), drained
                twice = _text(await a.call_tool("execute", _drain(node, "d-1")))
                assert twice["outcome"] == "duplicate", twice
                assert len(_writes(h)) == len(drained)  # a retry never acts twice

                # Another caller cannot read (or use) agent-a's approvals.
                async with Client(_mcp(h, tmp_path, "agent-b"), read_timeout_seconds=90) as b:
                    theirs = _text(
                        await b.call_tool(
                            "approval_status", {"query": {"approval_id": approval["approval_id"]}}
                        )
                    )
                    assert theirs["status"] == "unknown", theirs

                # Rejected: the request never runs.
                no = _text(await a.call_tool("execute", _drain(other, "d-4")))
                assert no["verdict"] == "ask", no
                r = h.click(APPROVER, "reject", h.button())
                assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
                h.drain()
                after = _text(await a.call_tool("execute", _drain(other, "d-4")))
                assert after["executed"] is False and after["approval"]["status"] == "rejected", after
                assert len(_writes(h)) == len(drained)

                # Unanswered: the sweeper at serve expires it when its time is up; it never runs.
                late = _text(await a.call_tool("execute", _drain(other, "d-5")))
                assert late["verdict"] == "ask", late
                h.admin.advance(16 * 60)  # past the playbooks' 15-minute ttl
                assert h.service.sweep() == 1
                h.drain()
                gone = _text(
                    await a.call_tool(
                        "approval_status", {"query": {"approval_id": late["approval"]["approval_id"]}}
                    )
                )
                assert gone["status"] == "expired" and gone["decided_by"] == "supply-agent", gone
                after = _text(await a.call_tool("execute", _drain(other, "d-5")))
                assert after["executed"] is False and after["approval"]["status"] == "expired", after
                assert len(_writes(h)) == len(drained)

                # Frozen: the kill switch stops what the gate would otherwise allow or ask about.
                h.admin.inject("xid", node=other, gpu=1, code=79)
                cordon = {
                    "tool": "k8s.cordon_node",
                    "params": {"node": other},
                    "playbook": "xid-fallen-off-bus",
                }
                before = _text(await a.call_tool("propose", {"proposal": {"action": cordon}}))
                assert before["verdict"] != "deny", before
                runner = CliRunner()
                frozen = runner.invoke(
                    main,
                    ["freeze", "--reason", "maintenance", "--by", "test", "--kubeconfig", str(h.kubeconfig)],
                )
                assert frozen.exit_code == 0, frozen.output
                latched = len(_writes(h))  # the freeze itself is a write (the latch's ConfigMap)
                stopped = _text(
                    await a.call_tool("execute", {"execution": {"action": cordon, "request_id": "c-1"}})
                )
                assert stopped["verdict"] == "deny" and stopped["executed"] is False, stopped
                assert "kill switch is on: maintenance" in " ".join(stopped["reasons"]), stopped
                assert len(_writes(h)) == latched

        asyncio.run(run())
