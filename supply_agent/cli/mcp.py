"""``supply-agent mcp``: the containment gate for other agents, over the Model Context Protocol."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml

from supply_agent.heap import settle_heap
from supply_agent.settings import load_settings


def register(cli_group: click.Group) -> None:
    cli_group.add_command(mcp)


@click.command("mcp")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--caller", default="mcp-client", show_default=True, help="The caller's name in the audit log (stdio)."
)
@click.option(
    "--tokens",
    "tokens_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="SUPPLY_AGENT_MCP_TOKENS_FILE",
    help="HTTP: a YAML file mapping each caller's name to its bearer token (a mounted Secret); each "
    "request is recorded and rate-limited as the caller its token names.",
)
def mcp(
    kubeconfig: Path | None, transport: str, host: str, port: int, caller: str, tokens_file: Path | None
) -> None:
    """Serve the gate (propose, execute, approval_status) and the read tools to other agents: over stdio
    (a client starts this command), or streamable HTTP at http://HOST:PORT/mcp, where every request carries
    a bearer token: SUPPLY_AGENT_MCP_TOKEN (the caller is --caller) or one of --tokens."""
    from supply_agent.hands.wiring import build_environment
    from supply_agent.logging import configure_logging
    from supply_agent.mcp.approvals import CallerApprovals, caller_name
    from supply_agent.mcp.server import build_server
    from supply_agent.service.core import slack_client
    from supply_agent.service.prompts import PromptStore

    settings = load_settings()
    configure_logging("json", settings.log_level)  # stderr: stdout is the protocol's on stdio
    cluster = kubeconfig or settings.kubeconfig
    if cluster is None:
        raise click.UsageError("give --kubeconfig (or set SUPPLY_AGENT_KUBECONFIG)")
    try:
        caller_name(caller)
        tokens = _tokens(tokens_file, caller, os.environ.get("SUPPLY_AGENT_MCP_TOKEN", ""))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if transport == "http" and not tokens:
        raise click.ClickException(
            "streamable HTTP needs SUPPLY_AGENT_MCP_TOKEN or --tokens: every request must carry a token"
        )
    try:
        slack = slack_client(settings)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    env = build_environment(settings, cluster)
    try:
        approvals = CallerApprovals(
            env.runtime, PromptStore(env.runtime.audit.engine), slack, settings.slack_approver_groups
        )
        server = build_server(env, caller, approvals)
        settle_heap()  # a full collection would hold every caller's decision in flight
        if transport == "stdio":
            server.run("stdio")
            return
        import uvicorn

        app = server.streamable_http_app()
        uvicorn.run(bearer(app, tokens), host=host, port=port, log_level="warning")
    finally:
        env.close()


def _tokens(path: Path | None, caller: str, token: str) -> dict[str, str]:
    """Caller name -> bearer token: the file's, and SUPPLY_AGENT_MCP_TOKEN as ``caller``'s."""
    from supply_agent.mcp.approvals import caller_name

    out: dict[str, str] = {}
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read the tokens: {exc}") from exc
        if not isinstance(data, Mapping) or not data:
            raise ValueError(f"{path}: expected a mapping of caller name to token")
        for name, value in data.items():
            try:
                caller_name(str(name))
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from exc
            if not isinstance(value, str) or len(value) < 16:
                raise ValueError(f"{path}: the token of {name!r} must be a string of 16 characters or more")
            out[str(name)] = value
    if token:
        out.setdefault(caller, token)
    seen: dict[str, str] = {}
    for name, value in out.items():
        if value in seen:
            where = f"{path}: " if path is not None else ""
            raise ValueError(f"{where}callers {seen[value]!r} and {name!r} share a token: each needs its own")
        seen[value] = name
    return out


def bearer(app: Any, tokens: Mapping[str, str]) -> Any:
    """Every HTTP request carries ``Authorization: Bearer <token>`` of one caller, or is answered 401;
    the caller it names is the request's (``current_caller``): its audit rows and its rate limits."""
    from supply_agent.mcp.server import current_caller

    expected = [(name, f"Bearer {token}".encode()) for name, token in tokens.items()]

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            who = None
            for name, value in expected:  # every comparison made, in constant time each
                if hmac.compare_digest(given, value):
                    who = name
            if who is None:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": b"a bearer token is required"})
                return
            reset = current_caller.set(who)
            try:
                await app(scope, receive, send)
            finally:
                current_caller.reset(reset)
            return
        await app(scope, receive, send)

    return guarded
