"""A deadline for the request body: a client that trickles or stalls it gets a 408 and is cut off.

Without it a handler waits on the body for as long as the client keeps the connection open, and a
few hundred stalled connections hold as many handlers (slowloris). The deadline runs from the moment
the handler starts until the last byte of the body has arrived; after that the handler has all the
time it needs. The 408 says `Connection: close`; aiohttp then discards what is left of the body for
at most its lingering time (10 s) and closes. An idle connection is closed by aiohttp's keep-alive
timeout (`[server] keepalive_timeout_s`, set where the site is started).
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from broker.domain.errors import RequestTimeout

__all__ = ["body_deadline_middleware"]


def body_deadline_middleware(timeout_s: float) -> Middleware:
    """The middleware for `[server] read_timeout_s`; raises RequestTimeout (408, connection closed),
    which the error middleware outside it turns into the JSON answer."""

    @web.middleware
    async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists or request.content.is_eof():
            return await handler(request)
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                # The whole body is in: lift the deadline (called from the protocol, on this loop).
                request.content.on_eof(lambda: deadline.reschedule(None))
                return await handler(request)
        except TimeoutError:
            if not deadline.expired():
                raise
        raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} s")

    return body_deadline
