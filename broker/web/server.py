"""The HTTP server the app listens with: aiohttp's, except for what it answers to unreadable requests.

A request that aiohttp's parser refuses (a request line or header over 8,190 bytes, a control
character in the path, a bad header name) never reaches the app or its middlewares: the protocol's
`RequestHandler.handle_error` answers it with a plain-text 400 that quotes the first bytes of the
offending line. A request line is a URL, and a URL can hold an identity code, so here that answer is
the API's usual error body and quotes nothing. `serve` and the tests' server both run the app
through `HandoffRunner`.
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

__all__ = ["HandoffRunner"]


class _RequestHandler(RequestHandler):
    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's own handling logs the failure and refuses when a response has begun already.
        response = super().handle_error(request, status, exc, None)
        if status >= 500:
            return response  # aiohttp's 500 and 504 texts are fixed: nothing of the request
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Bad Request"
        generic = web.json_response(
            {"error": {"code": phrase.lower().replace(" ", "_"),
                       "message": "the request line or its headers could not be read"}},
            status=status)
        generic.force_close()
        return generic


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)


class HandoffRunner(web.AppRunner):
    """`web.AppRunner` whose connections answer parser errors without echoing the request."""

    __slots__ = ()

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _Server(server.request_handler, request_factory=server.request_factory,
                       handler_cancellation=server.handler_cancellation, loop=server._loop,
                       **server._kwargs)
