"""`supply-agent mcp` with the official MCP SDK's client, over stdio (the client starts the command) and
streamable HTTP (a bearer token required), against the sandbox fleet: the read tools and `propose`
from the tool table, a cordon allowed, a fleet-wide or unbounded action refused, malformed arguments
refused, the playbooks and containment resources, the gate's prompt; nothing written."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from mcp import Client, StdioServerParameters

from sandbox.fleet.admin import AdminClient

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "mcp-test-token-abcdef0123456789"
BETA_TOKEN = "mcp-beta-token-9876543210fedcba"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPLY_AGENT_")}
    return env | {"SUPPLY_AGENT_DATA_DIR": str(tmp_path / "var"), "SUPPLY_AGENT_MCP_TOKEN": TOKEN}


def _text(result: Any) -> Any:
    assert not result.is_error, result
    sc = result.structured_content
    if sc is not None:  # a tool returning a dict gives it as is; any other value is wrapped in "result"
        return sc["result"] if set(sc) == {"result"} else sc
    return json.loads(result.content[0].text)


async def _session(client: Client, admin: AdminClient, node: str) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert "propose" in tools and "k8s.get_node" in tools and "nvml.gpu_health" in tools
    assert not [t for t in tools if t.startswith("control.")]  # never offered
    assert "k8s.cordon_node" not in tools  # writes only through propose
    got = _text(await client.call_tool("k8s.get_node", {"params": {"node": node}}))
    assert node in json.dumps(got)
    allowed = _text(
        await client.call_tool(
            "propose", {"proposal": {"action": {"tool": "k8s.cordon_node", "params": {"node": node}}}}
        )
    )
    assert allowed["verdict"] in ("allow", "ask") and allowed["executed"] is False, allowed
    assert allowed["targets"]["nodes"] == [node] and allowed["limits_consulted"], allowed
    for bad, why in (
        ({"tool": "k8s.cordon_node", "params": {"node": "*"}}, ""),
        ({"tool": "k8s.cordon_node", "params": {}}, "bad parameters"),
        ({"tool": "control.freeze", "params": {"reason": "x"}}, "not offered"),
        ({"tool": "rm -rf", "params": {}}, "not a tool"),
    ):
        refused = _text(await client.call_tool("propose", {"proposal": {"action": bad}}))
        assert refused["verdict"] == "deny" and refused["executed"] is False, (bad, refused)
        assert why in " ".join(refused["reasons"]), (bad, refused)
    malformed = await client.call_tool("propose", {"proposal": {"action": {"tool": 5}, "extra": 1}})
    assert malformed.is_error  # the schema refuses it before the gate is asked
    resources = {str(r.uri) for r in (await client.list_resources()).resources}
    assert {"supply-agent://playbooks", "supply-agent://containment"} <= resources
    status = json.loads((await client.read_resource("supply-agent://containment")).contents[0].text)
    assert {b["limit"] for b in status["budgets"]} >= {"blast_radius.gpus_out", "rate_limits.per_hour"}
    prompts = [p.name for p in (await client.list_prompts()).prompts]
    assert "work-with-the-gate" in prompts
    # Nothing was written: proposing is not executing.
    assert not [w for w in admin.truth()["writes"] if not w.get("dry_run")]


def test_over_stdio_with_the_sdk_client(kubeconfig: Path, admin: AdminClient, tmp_path: Path) -> None:
    node = _first_node(kubeconfig)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "supply_agent.cli", "mcp", "--kubeconfig", str(kubeconfig), "--caller", "test-agent"],
        env=_env(tmp_path),
        cwd=str(ROOT),
    )

    async def run() -> None:
        async with Client(params, read_timeout_seconds=60) as client:
            await _session(client, admin, node)

    asyncio.run(run())


def _first_node(kubeconfig: Path) -> str:
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    return str(sorted(n.metadata.name for n in api.list_node().items)[0])


def test_over_streamable_http_a_token_is_required(
    kubeconfig: Path, admin: AdminClient, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tokens = tmp_path / "mcp-tokens.yaml"  # a second caller, by its own token
    tokens.write_text(f"beta: {BETA_TOKEN}\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "supply_agent.cli",
            "mcp",
            "--kubeconfig",
            str(kubeconfig),
            "--transport",
            "http",
            "--port",
            str(port),
            "--tokens",
            str(tokens),
        ],
        env=_env(tmp_path),
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.post(url, json={})
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert r.status_code == 401  # no token, no gate
        wrong = httpx.post(url, json={}, headers={"Authorization": f"Bearer {TOKEN}x"})
        assert wrong.status_code == 401
        node = _first_node(kubeconfig)
        from mcp.client.streamable_http import streamable_http_client

        def connect(token: str) -> Client:
            http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
            return Client(streamable_http_client(url, http_client=http), read_timeout_seconds=60)

        async def run() -> None:
            async with connect(TOKEN) as client:
                await _session(client, admin, node)
            # Each token names its caller: beta's write is beta's in the audit log (its thread, its
            # writes-per-incident limit), though both came to the same server.
            admin.inject("xid", node=node, gpu=1, code=79)
            action = {"tool": "k8s.cordon_node", "params": {"node": node}, "playbook": "xid-fallen-off-bus"}
            async with connect(BETA_TOKEN) as beta:
                got = _text(
                    await beta.call_tool("execute", {"execution": {"action": action, "request_id": "b-1"}})
                )
                assert got["outcome"] == "executed", got

        asyncio.run(run())
        from sandbox.executor.audit import AuditLog
        from supply_agent.settings import Settings

        audit = AuditLog.from_url(Settings(data_dir=tmp_path / "var").resolved_database_url())
        threads = {r.incident_id for r in audit.records() if r.tool == "k8s.cordon_node"}
        assert threads == {"mcp:beta"}, threads
    finally:
        proc.terminate()
        proc.wait(20)


def _pool_nodes(kubeconfig: Path) -> list[str]:
    from kubernetes import client, config

    from sandbox.fleet.world import POOL_LABEL

    api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    pools: dict[str, list[str]] = {}
    for n in api.list_node().items:
        pools.setdefault(n.metadata.labels[POOL_LABEL], []).append(n.metadata.name)
    return sorted(pools[sorted(pools)[0]])


def test_execute_runs_what_the_gate_allows_once_and_two_callers_share_one_budget(
    kubeconfig: Path, admin: AdminClient, tmp_path: Path
) -> None:
    nodes = _pool_nodes(kubeconfig)

    def params(caller: str) -> StdioServerParameters:
        return StdioServerParameters(
            command=sys.executable,
            args=["-m", "supply_agent.cli", "mcp", "--kubeconfig", str(kubeconfig), "--caller", caller],
            env=_env(tmp_path),  # one data directory: one audit log, as one database would be
            cwd=str(ROOT),
        )

    def cordon(node: str, request: str) -> dict[str, Any]:
        # Each node's GPU 1 falls off the bus first: the playbook's preconditions hold for it.
        admin.inject("xid", node=node, gpu=1, code=79)
        action = {"tool": "k8s.cordon_node", "params": {"node": node}, "playbook": "xid-fallen-off-bus"}
        return {"execution": {"action": action, "request_id": request}}

    async def run() -> None:
        async with (
            Client(params("agent-a"), read_timeout_seconds=90) as a,
            Client(params("agent-b"), read_timeout_seconds=90) as b,
        ):
            first = _text(await a.call_tool("execute", cordon(nodes[0], "a-1")))
            assert first["verdict"] == "allow" and first["outcome"] == "executed", first
            assert first["verified"] is True, first
            again = _text(
                await a.call_tool("execute", cordon(nodes[0], "a-1"))
            )  # a retry of the same request
            assert again["outcome"] == "duplicate", again
            cordons = [w for w in admin.truth()["writes"] if w["verb"] == "patch" and not w.get("dry_run")]
            assert len(cordons) == 1, cordons
            # The two callers take turns on one pool until the gate stops them: it counts both.
            done, refused = 1, None
            for i, node in enumerate(nodes[1:], start=1):
                who = (a, b)[i % 2]
                got = _text(await who.call_tool("execute", cordon(node, f"r-{i}")))
                if got["verdict"] != "allow":
                    refused = (i % 2, got)
                    break
                assert got["outcome"] == "executed", got
                done += 1
            assert refused is not None, "the gate never stopped two callers cordoning one pool"
            other = (b, a)[refused[0]]  # the other caller is stopped by the same spent budget
            more = _text(await other.call_tool("execute", cordon(nodes[-1], "last")))
            assert more["verdict"] != "allow" and more["executed"] is False, more
            # A drain of a node of that pool (its GPU fallen off the bus too) is held by the same budget.
            drain = cordon(nodes[-2], "drain")
            drain["execution"]["action"]["tool"] = "k8s.drain_node"
            held = _text(await other.call_tool("execute", drain))
            assert held["verdict"] != "allow" and held["executed"] is False, held
            assert any("pool" in r for r in held["reasons"]), held
            truth = admin.truth()
            out = sum(p["nodes_cordoned"] for p in truth["pools"].values())
            assert out == done, (out, done)

    asyncio.run(run())
