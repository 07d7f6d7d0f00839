"""``python -m supply_agent.cli``: the ``supply-agent`` command line."""

from supply_agent.cli.main import main

main(prog_name="supply-agent")
