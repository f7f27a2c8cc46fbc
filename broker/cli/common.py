"""What every `handoff` verb shares: the --config option, loading settings, a ledger to work on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from broker.config.settings import Settings, load_settings

__all__ = ["ConfigOpt", "run_ledger", "settings_for"]

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config (or HANDOFF_CONFIG).",
                                                exists=True, dir_okay=False)]


def settings_for(config: Path | None) -> Settings:
    """The settings of a verb that runs the service: logging configured as the config says."""
    from broker.observability.logs import configure_logging

    settings = load_settings(config)
    configure_logging(settings.log.level, settings.log.format)
    return settings


def run_ledger(config: Path | None, job: Any) -> Any:
    from broker.store.ledger import Ledger

    settings = load_settings(config)

    async def main() -> Any:
        ledger = Ledger.from_url(settings.store.url)
        try:
            await ledger.migrate()
            return await job(settings, ledger)
        finally:
            await ledger.dispose()

    return asyncio.run(main())
