"""Running the service until SIGTERM/SIGINT, with the shutdown order of the supervisor."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from broker.config.settings import Settings
from broker.runtime.app import create_app
from broker.security.tls import server_ssl_context
from broker.web.server import HandoffRunner

__all__ = ["serve"]

log = structlog.get_logger(__name__)


async def serve(settings: Settings, *, until: Callable[[], Awaitable[None]] | None = None) -> None:
    """Serve HTTP and run the workers; stop on a signal or when `until` returns."""
    app = create_app(settings)
    runner = HandoffRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=settings.server.shutdown_timeout_s,
                           keepalive_timeout=settings.server.keepalive_timeout_s)
    await runner.setup()
    ssl_context = server_ssl_context(settings.server)
    site = web.TCPSite(runner, settings.server.host, settings.server.port, ssl_context=ssl_context)
    await site.start()
    log.info("http_listening", host=settings.server.host, port=settings.server.port,
             tls=ssl_context is not None,
             client_certificates=settings.server.tls_client_ca_file is not None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    if until is not None:
        waiters.append(asyncio.ensure_future(until()))
    try:
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("demo_failed", error=type(task.exception()).__name__)
    finally:
        log.info("shutdown_started")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
