"""One middleware maps domain errors to HTTP and logs every request without personal data.

Its `request_handled` event is the access log (aiohttp's own is off): one event per request with the
route pattern (`/v1/referrals/{referral_id}`) for grouping, and the URL as `broker.web.access_log` lets it
be shown (real path and query, anything that could be personal masked by shape), so nothing a client
puts in a URL can carry an identity code or a name into the logs.
"""

from __future__ import annotations

import time
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from structlog.contextvars import bound_contextvars

from broker.domain.errors import HandoffError, InvalidInput
from broker.resilience.failures import is_unavailable, unavailable_reason
from broker.security.auth import PRINCIPAL
from broker.web.access_log import loggable_url, response_bytes

__all__ = ["REQUEST_ID", "error_middleware"]

# The request id every audit record of this request carries (echoed as X-Request-Id).
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)

log = structlog.get_logger("broker.http.routes")

# Seconds a client is asked to wait after a 503 for an unavailable store: outages seen in practice
# (a failover, a restart) last seconds to a minute.
RETRY_AFTER_S = 5


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")
    if not (0 < len(request_id) <= 64 and request_id.replace("-", "").isalnum()):
        request_id = uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    route = _route_name(request)
    with bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
        except InvalidInput as exc:
            response = web.json_response({"errors": exc.errors}, status=422)
        except HandoffError as exc:
            response = web.json_response({"error": {"code": exc.code, "message": exc.message}},
                                         status=exc.status, headers=exc.headers)
            if exc.close_connection:
                response.force_close()
        except web.HTTPException as exc:
            response = web.json_response(
                {"error": {"code": exc.reason.lower().replace(" ", "_"), "message": exc.reason}},
                status=exc.status, headers={k: v for k, v in exc.headers.items()
                                            if k.lower() in ("allow",)})
        except Exception as exc:
            if is_unavailable(exc):
                # The store (or the broker) is away: the client should come back, not give up.
                # No traceback (an outage is not a bug), but the error's text: with
                # hide_parameters it names the statement, never its values.
                log.warning("request_unavailable", method=request.method, route=route,
                            reason=unavailable_reason(exc), error=str(exc)[:1000])
                response = web.json_response(
                    {"error": {"code": "unavailable",
                               "message": "the service cannot reach its ledger; retry later"}},
                    status=503, headers={"Retry-After": str(RETRY_AFTER_S)})
            else:
                log.exception("request_failed", method=request.method, route=route)
                response = web.json_response(
                    {"error": {"code": "internal_error", "message": "internal error"}}, status=500)
        response.headers["X-Request-Id"] = request_id
        principal = request.get(PRINCIPAL)
        log.info("request_handled", method=request.method, route=route, url=loggable_url(request),
                 status=response.status, bytes=response_bytes(response),
                 party=getattr(principal, "party_id", None), request_id=request_id,
                 remote=request.remote,
                 duration_ms=round((time.perf_counter() - started) * 1000, 1))
        return response
