"""The `handoff` command line (`handoff = "broker.cli:main"`, or `python -m broker.cli`)."""

from broker.cli.commands import app, main

__all__ = ["app", "main"]
