"""Puts the headers of `broker.security.headers` on every response.

The dashboard sets the same headers itself when the response is prepared, after this
middleware; only headers a response does not yet carry are added here, so nothing is sent twice.
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
