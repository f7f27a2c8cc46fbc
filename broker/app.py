"""Composition root: settings in, a running aiohttp application out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from broker.dashboard import setup_dashboard
from broker.http import routes
from broker.http_errors import error_middleware
from broker.metrics import Metrics
from broker.services import SERVICES, build_services
from broker.settings import Settings
from broker.supervisor import Supervisor
from broker.transport import Transport

__all__ = ["SUPERVISOR", "create_app"]

log = structlog.get_logger(__name__)

SUPERVISOR: web.AppKey[Supervisor] = web.AppKey("supervisor", Supervisor)


def create_app(settings: Settings, *, transport: Transport | None = None,
               metrics: Metrics | None = None, run_workers: bool = True) -> web.Application:
    # The handlers enforce the body limit themselves (exactly 1 MiB passes); aiohttp's own limit
    # sits just above it so that it never answers first with a different error shape.
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=settings.server.max_body_bytes + 1024)
    app.add_routes(routes)
    setup_dashboard(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        services = build_services(settings, transport=transport, metrics=metrics)
        supervisor = Supervisor(services)
        app[SERVICES] = services
        app[SUPERVISOR] = supervisor
        if settings.demo_parties:
            log.warning("demo_parties_in_use", hint="configure [[parties]] before real use")
        if run_workers:
            await supervisor.start()
        else:
            await supervisor.start_resources()
        yield
        await supervisor.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
