"""Composition root: settings in, a running aiohttp application out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from broker.config.settings import Settings
from broker.dashboard import load_dashboard_keys, setup_dashboard
from broker.http.routes import routes
from broker.observability.metrics import Metrics
from broker.runtime.services import SERVICES, build_services
from broker.runtime.supervisor import Supervisor
from broker.security.client_address import TRUSTED_PROXIES, TrustedProxies
from broker.security.rate_limits import LIMITER, rate_limit_middleware
from broker.transport.protocol import Transport
from broker.web.errors import error_middleware
from broker.web.security_headers import security_headers_middleware
from broker.web.slow_clients import body_deadline_middleware

__all__ = ["SUPERVISOR", "create_app"]

log = structlog.get_logger(__name__)

SUPERVISOR: web.AppKey[Supervisor] = web.AppKey("supervisor", Supervisor)


def create_app(settings: Settings, *, transport: Transport | None = None,
               metrics: Metrics | None = None, run_workers: bool = True) -> web.Application:
    # The handlers enforce the body limit themselves (exactly 1 MiB passes); aiohttp's own limit
    # sits just above it so that it never answers first with a different error shape.
    # Outermost first: headers go on every answer, errors become JSON, then the guards that raise.
    app = web.Application(middlewares=[security_headers_middleware, error_middleware,
                                       rate_limit_middleware,
                                       body_deadline_middleware(settings.server.read_timeout_s)],
                          client_max_size=settings.server.max_body_bytes + 1024)
    app[TRUSTED_PROXIES] = TrustedProxies(settings.server.trusted_proxies)
    app.add_routes(routes)
    setup_dashboard(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        services = build_services(settings, transport=transport, metrics=metrics)
        supervisor = Supervisor(services)
        app[SERVICES] = services
        app[LIMITER] = services.limiter
        app[SUPERVISOR] = supervisor
        if settings.demo_parties:
            log.warning("demo_parties_in_use", hint="configure [[parties]] before real use")
        if run_workers:
            await supervisor.start()
        else:
            await supervisor.start_resources()
        await load_dashboard_keys(app, services.ledger)
        yield
        await supervisor.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
