"""``supply-agent mcp``: the containment gate for other agents, over the Model Context Protocol."""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

import click

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
def mcp(kubeconfig: Path | None, transport: str, host: str, port: int, caller: str) -> None:
    """Serve the gate (propose) and the read tools to other agents: over stdio (a client starts this
    command), or streamable HTTP at http://HOST:PORT/mcp with SUPPLY_AGENT_MCP_TOKEN as a bearer token."""
    from supply_agent.hands.wiring import build_environment
    from supply_agent.logging import configure_logging
    from supply_agent.mcp.server import build_server

    settings = load_settings()
    configure_logging("json", settings.log_level)  # stderr: stdout is the protocol's on stdio
    cluster = kubeconfig or settings.kubeconfig
    if cluster is None:
        raise click.UsageError("give --kubeconfig (or set SUPPLY_AGENT_KUBECONFIG)")
    token = os.environ.get("SUPPLY_AGENT_MCP_TOKEN", "")
    if transport == "http" and not token:
        raise click.ClickException(
            "streamable HTTP needs SUPPLY_AGENT_MCP_TOKEN: every request must carry it"
        )
    env = build_environment(settings, cluster)
    try:
        server = build_server(env, caller)
        if transport == "stdio":
            server.run("stdio")
            return
        import uvicorn

        app = server.streamable_http_app()
        uvicorn.run(_bearer(app, token), host=host, port=port, log_level="warning")
    finally:
        env.close()


def _bearer(app: Any, token: str) -> Any:
    """Every HTTP request carries ``Authorization: Bearer <token>``, or is answered 401."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": b"a bearer token is required"})
                return
        await app(scope, receive, send)

    return guarded
