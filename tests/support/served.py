"""`supply-agent serve` as real processes on loopback, for tests that kill them: started with an
environment of its own (PagerDuty and Slack stubs, a sandbox fleet's kubeconfig), ready when /readyz
says so, killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.pd_stub import PagerDutyStub
from tests.support.service_harness import (
    AGENT_EMAIL,
    AM_TOKEN,
    APPROVER,
    PD_KEY,
    PD_SECRET,
    POLICY,
    SLACK_SECRET,
    SLACK_TOKEN,
)
from tests.support.slack_stub import SlackStub


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Served:
    def __init__(
        self, env: dict[str, str], kubeconfig: Path, log: Path, *, single_process: bool = False
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "supply_agent.cli", "serve", "--port", str(self.port)]
        if single_process:  # one process is the replica: a signal to it is a signal to all of it
            cmd.append("--single-process")
        self.proc = subprocess.Popen(
            [*cmd, "--kubeconfig", str(kubeconfig)], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        until("serve to be ready", up, 60)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: alive, holding its connections and leases, doing nothing (a stalled node, a GC)."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def serve_env(tmp: Path, pd: PagerDutyStub, slack: SlackStub) -> dict[str, str]:
    ca = tmp / "pd-ca.pem"
    ca.write_bytes(pd.ca_pem)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPLY_AGENT_")}
    env.update(
        {
            "SUPPLY_AGENT_DATA_DIR": str(tmp / "var"),
            "SUPPLY_AGENT_APPROVERS": APPROVER,
            "SUPPLY_AGENT_LOG_FORMAT": "json",
            "SUPPLY_AGENT_PAGERDUTY_WEBHOOK_SECRETS": f"old-secret,{PD_SECRET}",
            "SUPPLY_AGENT_PAGERDUTY_API_KEY": PD_KEY,
            "SUPPLY_AGENT_PAGERDUTY_FROM": AGENT_EMAIL,
            "SUPPLY_AGENT_PAGERDUTY_API_URL": pd.url,
            "SUPPLY_AGENT_PAGERDUTY_CA_FILE": str(ca),
            "SUPPLY_AGENT_PAGERDUTY_ESCALATION_POLICY": POLICY,
            "SUPPLY_AGENT_SLACK_BOT_TOKEN": SLACK_TOKEN,
            "SUPPLY_AGENT_SLACK_SIGNING_SECRET": SLACK_SECRET,
            "SUPPLY_AGENT_SLACK_CHANNEL": "C0APPROVALS",
            "SUPPLY_AGENT_SLACK_API_URL": slack.url,
            "SUPPLY_AGENT_ALERTMANAGER_TOKEN": AM_TOKEN,
            # Retries fast: a test waits tenths of seconds for a failure to be tried again.
            "SUPPLY_AGENT_RETRY_BASE_S": "0.05",
            "SUPPLY_AGENT_RETRY_CAP_S": "0.5",
        }
    )
    return env


def xid79_page(fleet: Any, admin: Any, pd: PagerDutyStub) -> tuple[str, dict[str, Any], str]:
    """An XID 79 on the first pool's first node, paged the way PagerDuty would: (node, webhook, PD id);
    the stub serves the incident's alerts."""
    from sandbox.fleet.world import POOL_LABEL

    pools: dict[str, list[str]] = {}
    for n in fleet.store.items("nodes"):
        pools.setdefault(n["metadata"]["labels"][POOL_LABEL], []).append(n["metadata"]["name"])
    node = sorted(pools[sorted(pools)[0]])[0]
    admin.inject("xid", node=node, gpu=1, code=79)
    admin.advance(1800)
    hook = admin.alerts("pagerduty")[0]
    pd_id = hook["event"]["data"]["id"]
    pd.alerts[pd_id] = admin.request("GET", f"pagerduty/incidents/{pd_id}/alerts")["alerts"]
    return node, hook, pd_id


def post_page(url: str, hook: dict[str, Any]) -> httpx.Response:
    """A PagerDuty webhook to a running ``serve``, signed the way PagerDuty signs it."""
    from supply_agent.intake.signing import sign_pagerduty

    raw = json.dumps(hook).encode()
    return httpx.post(
        f"{url}/webhooks/pagerduty",
        content=raw,
        headers={"content-type": "application/json", "x-pagerduty-signature": sign_pagerduty(raw, PD_SECRET)},
        timeout=10,
    )


def approve_values(posted: list[dict[str, Any]]) -> list[str]:
    """The Approve buttons' values of the Slack messages posted, in order."""
    out = []
    for message in posted:
        blocks = message["blocks"]
        for b in json.loads(blocks) if isinstance(blocks, str) else blocks:
            for el in b.get("elements", []) if b.get("type") == "actions" else []:
                if el.get("action_id") == "approve":
                    out.append(str(el["value"]))
    return out


def click(url: str, value: str, user: str = APPROVER) -> httpx.Response:
    """A click on Approve to a running ``serve``, signed the way Slack signs it."""
    from supply_agent.intake.signing import sign_slack
    from tests.support.slack_stub import block_actions_payload, click_body

    body = click_body(block_actions_payload(user, "approve", value))
    ts = int(time.time())
    return httpx.post(
        f"{url}/slack/interactions",
        content=body,
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-slack-request-timestamp": str(ts),
            "x-slack-signature": sign_slack(body, SLACK_SECRET, ts),
        },
        timeout=10,
    )
