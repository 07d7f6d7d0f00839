"""`supply-agent serve` under test: a sandbox fleet, PagerDuty and Slack stubs, the real app in-process.

The app is driven through FastAPI's TestClient (the real ASGI app, lifespan included); PagerDuty and
Slack are stub HTTP servers the real SDKs talk to. Signatures are computed the way the senders do.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.clock import SimClock
from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import POOL_LABEL, Fleet, FleetSpec
from supply_agent.intake.signing import sign_pagerduty, sign_slack
from supply_agent.mind.planners.runbook import RunbookPlanner
from supply_agent.service.api import create_app
from supply_agent.service.core import Service, open_service
from supply_agent.settings import Settings
from tests.support.pd_stub import PagerDutyStub
from tests.support.slack_stub import SlackStub, block_actions_payload, click_body

PD_SECRET = "pd-webhook-secret-0001"
PD_KEY = "pd-rest-key-0001"
AGENT_EMAIL = "supply-agent@example.com"
AGENT_PD_USER = "PAGENT1"
SLACK_SECRET = "slack-signing-secret-0001"
SLACK_TOKEN = "xoxb-test-token"
AM_TOKEN = "am-bearer-token-0001"
APPROVER = "U0APPROVER"
STRANGER = "U0STRANGER"
POLICY = "PPOLICY1"


def settings_for(tmp: Path, pd: PagerDutyStub, slack: SlackStub, **extra: Any) -> Settings:
    # Retries fast: a test waits tenths of seconds for an outage to be retried, not minutes.
    extra = {"retry_base_s": 0.05, "retry_cap_s": 0.5, **extra}
    return Settings(
        data_dir=tmp / "var",
        approvers=[APPROVER],
        planner="runbook",
        pagerduty_webhook_secrets=[PD_SECRET],
        pagerduty_api_key=PD_KEY,
        pagerduty_from=AGENT_EMAIL,
        pagerduty_api_url=pd.url,
        pagerduty_escalation_policy=POLICY,
        slack_bot_token=SLACK_TOKEN,
        slack_signing_secret=SLACK_SECRET,
        slack_channel="C0APPROVALS",
        slack_api_url=slack.url,
        alertmanager_token=AM_TOKEN,
        workers=2,
        **extra,
    )


@dataclass
class ServeHarness:
    fleet: Fleet
    admin: AdminClient
    kubeconfig: Path
    pd: PagerDutyStub
    slack: SlackStub
    service: Service
    http: TestClient

    def node(self, pool: int = 0) -> str:
        pools: dict[str, list[str]] = {}
        for n in self.fleet.store.items("nodes"):
            pools.setdefault(n["metadata"]["labels"][POOL_LABEL], []).append(n["metadata"]["name"])
        return sorted(pools[sorted(pools)[pool]])[0]

    def pagerduty_webhooks(self, advance_s: float = 1800, details: str = "flat") -> list[dict[str, Any]]:
        """The fleet's firing alerts as PagerDuty would page them; the stub serves each incident's alerts,
        their custom_details as ``details`` says (flat, or Alertmanager's default text)."""
        if advance_s:
            self.admin.advance(advance_s)
        hooks = list(self.admin.alerts("pagerduty"))
        for hook in hooks:
            pd_id = hook["event"]["data"]["id"]
            served = self.admin.request("GET", f"pagerduty/incidents/{pd_id}/alerts?details={details}")
            self.pd.alerts[pd_id] = served["alerts"]
        return hooks

    def post_pagerduty(self, body: bytes | dict[str, Any], signature: str | None = "sign") -> Any:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        if signature == "sign":
            headers["x-pagerduty-signature"] = sign_pagerduty(raw, PD_SECRET)
        elif signature is not None:
            headers["x-pagerduty-signature"] = signature
        return self.http.post("/webhooks/pagerduty", content=raw, headers=headers)

    def click(self, user: str, action_id: str, value: str, ts: int | None = None) -> Any:
        body = click_body(block_actions_payload(user, action_id, value))
        stamp = int(time.time()) if ts is None else ts
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "x-slack-request-timestamp": str(stamp),
            "x-slack-signature": sign_slack(body, SLACK_SECRET, stamp),
        }
        return self.http.post("/slack/interactions", content=body, headers=headers)

    def drain(self) -> None:
        assert self.service.drain(60), "the service did not settle"

    def until(self, what: str, check: Any, timeout: float = 30.0) -> Any:
        """Wait for ``check()`` to be truthy (work that is retried in the background); its value."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = check()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def button(self, n: int = -1) -> str:
        """The value of the Approve button of the n-th posted prompt."""
        blocks = self.slack.posted()[n]["blocks"]
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        for block in blocks:
            for el in block.get("elements", []) if block.get("type") == "actions" else []:
                if el.get("action_id") == "approve":
                    return str(el["value"])
        raise AssertionError("no Approve button in the prompt")


@contextlib.contextmanager
def outside_world(
    tmp: Path, nodes: int = 24, spec: FleetSpec | None = None
) -> Iterator[tuple[Fleet, Path, PagerDutyStub, SlackStub]]:
    """What the service talks to: a sandbox fleet (its kubeconfig; ``spec``, else ``nodes`` nodes in two
    pools), and PagerDuty and Slack stubs."""
    fleet = Fleet(spec or FleetSpec(nodes=nodes, pools=2, seed=11), SimClock("manual"))
    fleet.generate()
    with (
        FleetServer(fleet) as server,
        PagerDutyStub(api_key=PD_KEY) as pd,
        SlackStub(token=SLACK_TOKEN) as slack,
    ):
        pd.users.append({"id": AGENT_PD_USER, "email": AGENT_EMAIL, "name": "supply-agent", "type": "user"})
        kubeconfig = tmp / "kubeconfig"
        server.write_kubeconfig(kubeconfig)
        yield fleet, kubeconfig, pd, slack


@contextlib.contextmanager
def serve_harness(
    tmp: Path, nodes: int = 24, spec: FleetSpec | None = None, **extra: Any
) -> Iterator[ServeHarness]:
    with outside_world(tmp, nodes, spec) as (fleet, kubeconfig, pd, slack):
        ca = tmp / "pagerduty-ca.pem"
        ca.write_bytes(pd.ca_pem)
        settings = settings_for(tmp, pd, slack, pagerduty_ca_file=ca, **extra)
        with (
            open_service(settings, kubeconfig, planner=RunbookPlanner()) as service,
            TestClient(create_app(service)) as http,
        ):
            yield ServeHarness(
                fleet, AdminClient.from_kubeconfig(kubeconfig), kubeconfig, pd, slack, service, http
            )


@contextlib.contextmanager
def replicas_harness(
    tmp: Path, database_url: str, replicas: int = 2, nodes: int = 24, **extra: Any
) -> Iterator[list[ServeHarness]]:
    """``replicas`` services on one database (PostgreSQL), each with its own app, sharing the fleet and
    the PagerDuty and Slack stubs, as replicas of one Deployment do."""
    with outside_world(tmp, nodes) as (fleet, kubeconfig, pd, slack), contextlib.ExitStack() as stack:
        ca = tmp / "pagerduty-ca.pem"
        ca.write_bytes(pd.ca_pem)
        out = []
        for i in range(replicas):
            settings = settings_for(
                tmp / f"replica-{i}",
                pd,
                slack,
                pagerduty_ca_file=ca,
                database_url=database_url,
                replica_id=f"replica-{i}",
                **extra,
            )
            service = stack.enter_context(open_service(settings, kubeconfig, planner=RunbookPlanner()))
            http = stack.enter_context(TestClient(create_app(service)))
            out.append(
                ServeHarness(
                    fleet, AdminClient.from_kubeconfig(kubeconfig), kubeconfig, pd, slack, service, http
                )
            )
        yield out
