"""Token-bucket rate limits: per party once a token is known, per client address before that.

The buckets live in the process. Several processes behind one balancer each admit the configured
rate, which is enough to stop a runaway client from starving the others; a cluster-wide limit would
need shared state in the ledger, a round trip on every request.

Requests without a usable token are charged to the client's address: the middleware charges the
bucket of every request that ends in a 401 and of every request that brings no token at all, and
refuses a request from an address whose bucket is empty before any token is looked up, so guessing
tokens cannot flood the ledger with lookups.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from broker.errors import TooManyRequests, Unauthorized

__all__ = ["EXEMPT_PATHS", "LIMITER", "RateLimiter", "rate_limit_middleware"]

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

    def charge(self, key: str) -> None:
        """Spend one token even when that leaves the bucket empty (a request already answered)."""
        if self.enabled:
            bucket = self._refilled(key)
            bucket.tokens = max(0.0, bucket.tokens - 1)


LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter", RateLimiter)


def _address_key(request: web.Request) -> str:
    return f"addr:{request.remote or 'unknown'}"


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Limit requests without a usable token per client address (per-party limits: `TokenBook`)."""
    limiter = request.app.get(LIMITER)
    if limiter is None or not limiter.enabled or request.path in EXEMPT_PATHS:
        return await handler(request)
    key = _address_key(request)
    if "Authorization" not in request.headers:
        limiter.take(key)
        return await handler(request)
    limiter.check(key)
    try:
        response = await handler(request)
    except Unauthorized:
        limiter.charge(key)
        raise
    if response.status == 401:
        limiter.charge(key)
    return response
