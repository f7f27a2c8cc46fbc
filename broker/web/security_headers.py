"""Puts the headers of `broker.security.headers` on every response.

They go on every response: API answers carry case data (never to be cached by a browser or a
proxy), and an HTML page of the service must not be framed. The policy itself is defined once, in
`broker.security.headers`; the dashboard applies the same headers to every response under /dashboard
when it is prepared, after this middleware. Only headers a response does not yet carry are added
here, so nothing is sent twice.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from broker.security.headers import BASE_HEADERS, HTML_HEADERS

__all__ = ["BASE_HEADERS", "HTML_HEADERS", "security_headers_middleware"]


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # Only what the error middleware does not turn into JSON (it is inside this one).
        _add(exc, exc.content_type == "text/html")
        raise
    _add(response, response.content_type == "text/html")
    return response


def _add(response: web.StreamResponse, html: bool) -> None:
    for name, value in BASE_HEADERS.items():
        response.headers.setdefault(name, value)
    if html:
        for name, value in HTML_HEADERS.items():
            response.headers.setdefault(name, value)
