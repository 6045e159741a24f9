"""The command line (`sensegate`): run, check, status, simulate, alerts, rules, visits, scenario.
Each subcommand is a thin shell over the wings; ``main`` is the entry point."""

from gateway.cli.app import main

__all__ = ["main"]
