"""The command line: one module per command group; ``main`` is the ``supply-agent`` entry point."""

from supply_agent.cli.main import main

__all__ = ["main"]
