"""What the access log may show of a request's URL: the real path and query, minus anything personal.

A URL is typed by whoever calls us, so it can carry anything: an identity code pasted as a referral
id, a client's name in a lookup box, free text in an unknown parameter. The access log keeps what an
operator needs (which case, which page of which list) and masks the rest by shape, before the
redaction processor ever sees it:
- a path parameter is kept only in the shape its route expects (a referral id, a number, a schema
  name); a path that matched no route keeps only the fixed segments of some route, and UUIDs;
- a query value is kept only for a known parameter and only in that parameter's shape (a cursor that
  decodes as a cursor, a month, an area code, ...); other values, and odd parameter names, are masked;
- anything shaped like an identity code is masked even where the shape would otherwise pass, with no
  word boundaries required (`x120503A944X` too), since a URL has no reason to hold one.
Names cannot be recognised by shape, so the rules keep only values that contain no free text.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from broker.security import b64url
from schemas.enums import CaseState
from schemas.export import SCHEMAS
from schemas.hetu import contains_identity_code

__all__ = ["MASK", "loggable_url", "response_bytes"]

MASK = "[redacted]"

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}",
                   re.IGNORECASE)
_ID = re.compile(r"[0-9A-Za-z-]{1,64}")
_DIGITS = re.compile(r"\d{1,19}")
_PARAM_NAME = re.compile(r"[a-z_]{1,32}")
_MONTH_OR_DAY = re.compile(r"\d{4}-\d{2}(-\d{2})?")
_AREA = re.compile(r"\d{2}|kela")
_CASE_STATES = frozenset(s.value for s in CaseState)
# A reference someone may look up on the dashboard (kela_reference): ids carry digits, names do not.
_REFERENCE = re.compile(r"(?=[^0-9]*[0-9])[0-9A-Za-z_.:/-]{1,64}")


def _no_hetu(value: str) -> bool:
    return not contains_identity_code(value)


def _is_id(value: str) -> bool:
    """A referral id: a UUID (which can never hold a code), or an id-like token without one."""
    return _UUID.fullmatch(value) is not None or (
        _ID.fullmatch(value) is not None and any(c.isdigit() for c in value) and _no_hetu(value))


def _is_cursor(value: str) -> bool:
    """Cursors are opaque base64 of `<kind>:<number>` (broker.web.cursors): keep only real ones."""
    try:
        raw = b64url.decode(value).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    kind, _, number = raw.partition(":")
    return len(kind) == 1 and number.isdigit() and len(value) <= 32


def _shape(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda value: pattern.fullmatch(value) is not None and _no_hetu(value)


def _one_of(*values: str) -> Callable[[str], bool]:
    """Words are kept only from a closed list: a lower-case name has the shape of a word."""
    known = frozenset(values)
    return lambda value: value in known


def _states(value: str) -> bool:
    return all(s in _CASE_STATES for s in value.split(","))


_PATH_PARAMS: dict[str, Callable[[str], bool]] = {
    "referral_id": _is_id,
    "dl_id": _shape(_DIGITS),
    "name": _one_of(*SCHEMAS),
}

_QUERY_PARAMS: dict[str, Callable[[str], bool]] = {
    "after": lambda v: v == "" or _is_cursor(v),
    "limit": _shape(_DIGITS),
    "state": _states,
    "from": _shape(_MONTH_OR_DAY),
    "to": _shape(_MONTH_OR_DAY),
    "area": _shape(_AREA),
    "format": _one_of("json", "csv"),
    "lang": _one_of("fi", "sv", "en"),
    "done": _one_of("replayed", "already", "missing"),
    "q": lambda v: v == "" or _is_id(v) or _shape(_REFERENCE)(v),
}

_TEMPLATE_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def _path(request: web.Request) -> str:
    match_info = request.match_info
    resource = match_info.route.resource
    if isinstance(match_info, UrlMappingMatchInfo) and resource is not None:
        def value(m: re.Match[str]) -> str:
            raw = match_info.get(m[1], "")
            keep = _PATH_PARAMS.get(m[1])
            return raw if keep is not None and keep(raw) else MASK

        return _TEMPLATE_PARAM.sub(value, resource.canonical)
    # No route matched: keep the segments that are literal parts of some route, and ids.
    literals = _literal_segments(request.app.router)
    return "/".join(s if s == "" or s in literals or _UUID.fullmatch(s) else MASK
                    for s in request.path.split("/"))


def _literal_segments(router: web.UrlDispatcher) -> set[str]:
    """Every fixed path segment of the app's routes (a few dozen; only unmatched requests ask)."""
    return {segment for resource in router.resources()
            for segment in resource.canonical.split("/") if segment and "{" not in segment}


def _query(request: web.Request) -> str:
    parts: list[str] = []
    for key, value in request.query.items():
        if _PARAM_NAME.fullmatch(key) is None:
            parts.append(f"{MASK}={MASK}")
            continue
        keep = _QUERY_PARAMS.get(key)
        parts.append(f"{key}={value if keep is not None and keep(value) else MASK}")
    return "&".join(parts)


def loggable_url(request: web.Request) -> str:
    """The path and query string as the access log shows them (see the module docstring)."""
    query = _query(request)
    return f"{_path(request)}?{query}" if query else _path(request)


def response_bytes(response: web.StreamResponse) -> int | None:
    """The body size known when the middleware returns; None for a streamed body of unknown size."""
    if isinstance(response, web.Response):
        body = response.body
        if isinstance(body, bytes | bytearray):
            return len(body)
    return response.content_length
