"""``supply-agent console``: the read-only console over a store alone, without the agent running (a
PostgreSQL the replicas share, or a copy of the SQLite file). ``serve`` serves the same pages itself."""

from __future__ import annotations

from pathlib import Path

import click

from supply_agent.settings import load_settings


def register(cli_group: click.Group) -> None:
    cli_group.add_command(console)


@click.command("console")
@click.option("--store", "url", help="The store's database URL (default: the settings' database).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8090, show_default=True)
@click.option("--evals", "evals_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("evals"))
def console(url: str | None, host: str, port: int, evals_dir: Path) -> None:
    """Serve the console of a store at http://HOST:PORT/console/ (needs SUPPLY_AGENT_CONSOLE_TOKEN or
    SUPPLY_AGENT_CONSOLE_PROXY_HEADER: without either it is off)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from supply_agent.logging import configure_logging
    from supply_agent.web.app import console_app
    from supply_agent.web.mount import console_for_store

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    served = console_for_store(settings, url or settings.resolved_database_url(), evals_dir)
    if not served.enabled:
        raise click.ClickException(
            "the console is off: set SUPPLY_AGENT_CONSOLE_TOKEN (or SUPPLY_AGENT_CONSOLE_PROXY_HEADER behind "
            "an authenticating proxy)"
        )
    app = Starlette(routes=[Mount("/console", console_app(served))])
    click.echo(f"console: http://{host}:{port}/console/")
    uvicorn.run(app, host=host, port=port, log_level="warning")
