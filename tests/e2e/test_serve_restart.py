"""`supply-agent serve` as a real process on loopback: killed while an approval is pending, restarted,
and the click still resumes the thread; events stored but not handled are handled after a restart."""

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

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.world import POOL_LABEL
from supply_agent.intake.signing import sign_pagerduty, sign_slack
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
    outside_world,
)
from tests.support.slack_stub import SlackStub, block_actions_payload, click_body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Served:
    def __init__(self, env: dict[str, str], kubeconfig: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "supply_agent.cli", "serve", "--port", str(self.port)]
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

        _until("serve to be ready", up, 60)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def _env(tmp: Path, pd: PagerDutyStub, slack: SlackStub) -> dict[str, str]:
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
        }
    )
    return env


def test_kill_while_an_approval_is_pending_restart_and_the_click_resumes(tmp_path: Path) -> None:
    with outside_world(tmp_path) as (fleet, kubeconfig, pd, slack):
        admin = AdminClient.from_kubeconfig(kubeconfig)
        pools: dict[str, list[str]] = {}
        for n in fleet.store.items("nodes"):
            pools.setdefault(n["metadata"]["labels"][POOL_LABEL], []).append(n["metadata"]["name"])
        node = sorted(pools[sorted(pools)[0]])[0]
        admin.inject("xid", node=node, gpu=1, code=79)
        admin.advance(1800)
        hook = admin.alerts("pagerduty")[0]
        pd_id = hook["event"]["data"]["id"]
        pd.alerts[pd_id] = admin.request("GET", f"pagerduty/incidents/{pd_id}/alerts")["alerts"]
        env = _env(tmp_path, pd, slack)
        log = tmp_path / "serve.log"

        first = Served(env, kubeconfig, log)
        try:
            raw = json.dumps(hook).encode()
            r = httpx.post(
                f"{first.url}/webhooks/pagerduty",
                content=raw,
                headers={"x-pagerduty-signature": sign_pagerduty(raw, PD_SECRET)},
            )
            assert r.status_code == 202, r.text
            _until("the Slack prompt", lambda: slack.posted())
            first.kill()  # SIGKILL: no shutdown of any kind
        finally:
            first.stop()

        second = Served(env, kubeconfig, log)
        try:
            iid = f"pd-{pd_id}"
            row = httpx.get(f"{second.url}/incidents/{iid}").json()
            assert row["status"] == "paused"  # paused threads stay paused across a restart
            time.sleep(0.5)
            assert len(slack.posted()) == 1  # and nobody is asked twice
            blocks = slack.posted()[0]["blocks"]
            value = next(
                el["value"]
                for b in (json.loads(blocks) if isinstance(blocks, str) else blocks)
                if b.get("type") == "actions"
                for el in b["elements"]
                if el["action_id"] == "approve"
            )
            body = click_body(block_actions_payload(APPROVER, "approve", value))
            ts = int(time.time())
            r = httpx.post(
                f"{second.url}/slack/interactions",
                content=body,
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    "x-slack-request-timestamp": str(ts),
                    "x-slack-signature": sign_slack(body, SLACK_SECRET, ts),
                },
            )
            assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
            _until("PagerDuty resolve", lambda: "resolved" in pd.statuses(pd_id))
            row = httpx.get(f"{second.url}/incidents/{iid}").json()
            assert row["outcome"] == "mitigated", row
            assert pd.statuses(pd_id) == ["acknowledged", "resolved"]
            # The fleet's own record: one cordon, the node drained; the credit exists once.
            truth = admin.truth()
            assert sum(p["nodes_cordoned"] for p in truth["pools"].values()) == 1
            left = [
                p["metadata"]["name"]
                for p in fleet.store.items("pods")
                if p["spec"].get("nodeName") == node
                and p["metadata"]["namespace"].startswith("tenant-")
                and p.get("status", {}).get("phase") == "Running"
            ]
            assert left == []  # drained
            from tools.billing import Ledger

            ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'var' / 'supply-agent.db'}")
            try:
                assert len(ledger.credits_for_incident(iid).credits) == 1
            finally:
                ledger.close()
            # The prompt's update follows the resumed run's write-back (resolve first): wait for it.
            _until("the Slack prompt updated", lambda: slack.updates(), 30)
            time.sleep(0.3)
            assert len(slack.updates()) == 1
        finally:
            second.stop()
