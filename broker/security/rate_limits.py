"""Token-bucket rate limits: per party for an authenticated request, per client address otherwise.

The buckets live in the process. Several processes behind one balancer each admit the configured
rate, which is enough to stop a runaway client from starving the others; a cluster-wide limit would
need shared state in the ledger, a round trip on every request.

A request that brings credentials (a bearer token, or a dashboard session cookie) is authenticated
first and charged to its party's bucket (`TokenBook`), never to its address: anonymous traffic and
wrong tokens from the same address (every client behind one proxy shares it) cannot lock a valid
party out. Two buckets per client address take the rest:
- `anon:<address>`: requests without credentials, charged before the handler runs;
- `authfail:<address>`: requests whose credentials failed (a 401), charged after the lookup; once
  that bucket is empty the answer is a 429 instead of the 401, so guessing tokens stays slow. A
  throttled guess still costs its one lookup on the unique token index.
The client address is the peer's, or behind `[server] trusted_proxies` the forwarded one
(`broker.security.client_address`).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from broker.domain.errors import TooManyRequests, Unauthorized
from broker.security.auth import PRINCIPAL
from broker.security.client_address import TRUSTED_PROXIES, TrustedProxies

__all__ = ["CREDENTIAL_COOKIES", "EXEMPT_PATHS", "LIMITER", "RateLimiter", "rate_limit_middleware"]

# Probes and scrapes must answer whatever a client does.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Buckets by key, refilled at `rate_per_s` up to `burst`; `clock` is seconds (monotonic).

    At most `max_keys` buckets are kept; the least recently used one goes first. A bucket that is
    dropped starts full again, so the bound only matters for keys that come and go (addresses).
    """

    def __init__(self, rate_per_s: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0 and self.burst > 0

    def _refilled(self, key: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate_per_s)
            bucket.at = now
        return bucket

    def _retry_after(self, bucket: _Bucket) -> int:
        return max(1, math.ceil((1 - bucket.tokens) / self.rate_per_s))

    def take(self, key: str) -> None:
        """Spend one token of `key`'s bucket, or raise `TooManyRequests` saying when to retry."""
        if not self.enabled:
            return
        bucket = self._refilled(key)
        if bucket.tokens < 1:
            raise TooManyRequests(self._retry_after(bucket))
        bucket.tokens -= 1

    def check(self, key: str) -> None:
        """Raise `TooManyRequests` when `key`'s bucket is empty, without spending from it."""
        if not self.enabled:
            return
        bucket = self._refilled(key)
        if bucket.tokens < 1:
            raise TooManyRequests(self._retry_after(bucket))


LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter", RateLimiter)
# Cookies that carry a session (registered by the dashboard): such a request is judged like one with
# a bearer token, after its handler has authenticated it.
CREDENTIAL_COOKIES: web.AppKey[frozenset[str]] = web.AppKey("credential_cookies", frozenset)
_NO_PROXIES = TrustedProxies()


def _client(request: web.Request) -> str:
    return request.app.get(TRUSTED_PROXIES, _NO_PROXIES).client_address(request)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Limit anonymous requests and failed authentications per client address (parties: `TokenBook`)."""
    limiter = request.app.get(LIMITER)
    if limiter is None or not limiter.enabled or request.path in EXEMPT_PATHS:
        return await handler(request)
    client = _client(request)
    cookies = request.app.get(CREDENTIAL_COOKIES, frozenset())
    has_session = any(request.cookies.get(name) for name in cookies)
    if "Authorization" not in request.headers and not has_session:
        limiter.take(f"anon:{client}")
        return await handler(request)
    try:
        response = await handler(request)
    except Unauthorized:
        limiter.take(f"authfail:{client}")  # a 429 in place of the 401 once the bucket is empty
        raise
    if response.status == 401 or (has_session and request.get(PRINCIPAL) is None):
        # A 401 page, or a session cookie that authenticated nobody (a redirect to the login).
        limiter.take(f"authfail:{client}")
    return response
