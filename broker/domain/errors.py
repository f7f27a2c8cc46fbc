"""Domain errors. One middleware (`broker.web.errors`) maps them to HTTP; nothing else does."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from schemas.errors import ErrorItem, safe_loc

__all__ = [
    "Conflict", "Forbidden", "HandoffError", "InvalidInput", "MalformedRequest", "NotFound",
    "PayloadTooLarge", "RequestTimeout", "TooManyRequests", "Unauthorized", "UnsupportedMediaType",
]


class HandoffError(Exception):
    status = 500
    code = "internal_error"
    headers: Mapping[str, str] = MappingProxyType({})  # extra response headers
    close_connection = False  # answer with `Connection: close` and drop the connection

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(HandoffError):
    status = 422
    code = "validation_error"

    def __init__(self, errors: list[ErrorItem]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        # A `loc` can name a key the sender wrote; whatever built the errors, none leaves with a code.
        self.errors: list[ErrorItem] = [{**e, "loc": safe_loc(e["loc"])} for e in errors]


class MalformedRequest(HandoffError):
    status = 400
    code = "malformed_request"


class Unauthorized(HandoffError):
    status = 401
    code = "unauthorized"


class Forbidden(HandoffError):
    status = 403
    code = "forbidden"


class NotFound(HandoffError):
    status = 404
    code = "not_found"


class Conflict(HandoffError):
    status = 409
    code = "conflict"


class PayloadTooLarge(HandoffError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(HandoffError):
    status = 415
    code = "unsupported_media_type"


class RequestTimeout(HandoffError):
    """The request body did not arrive in time (a slow or stalled client): the rest of it is not
    waited for, so the connection closes."""

    status = 408
    code = "request_timeout"
    close_connection = True


class TooManyRequests(HandoffError):
    status = 429
    code = "too_many_requests"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s
        self.headers = {"Retry-After": str(retry_after_s)}
