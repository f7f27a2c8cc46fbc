"""kela-handoff broker: routing, ledger and outbox, state machine, transport, HTTP app, CLI."""

__all__ = ["__version__"]
__version__ = "0.1.0"
