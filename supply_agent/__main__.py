"""``python -m supply_agent``: the same command line as the ``supply-agent`` script."""

from supply_agent.cli import main

main(prog_name="supply-agent")
