"""Bearer tokens per party, stored as SHA-256 hashes (DESIGN § 7).

Two sources: the config's `[[parties]]` (in memory, fixed for the life of the process) and the
ledger's `access_tokens` (created, rotated and revoked at run time by `handoff token`). The ledger
is asked on every request that the config does not answer, so a revoke or an expiry is a 401 at once
in every process. An unknown, expired and revoked token all get the same 401.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from broker.config.settings import Party
from broker.domain.errors import Forbidden, Unauthorized

if TYPE_CHECKING:
    from broker.security.rate_limits import RateLimiter
    from broker.security.tokens import TokenStore

__all__ = ["PRINCIPAL", "Principal", "TokenBook", "hash_token", "new_token"]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "hnd_" + secrets.token_urlsafe(32)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Principal:
    party_id: str
    role: str
    area: str | None
    central_reader: bool = False

    @property
    def own_sender(self) -> str | None:
        """The sender whose cases alone this party may see: a Kela party's own id, unless it is
        Kela's central reader; None for everyone else (an intake is limited by area instead)."""
        return self.party_id if self.role == "kela" and not self.central_reader else None


PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


class TokenBook:
    def __init__(self, parties: Iterable[Party], store: TokenStore | None = None, *,
                 limiter: RateLimiter | None = None,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._by_hash = {p.token_sha256: Principal(p.id, p.role, p.area, p.central_reader)
                         for p in parties}
        self._store = store
        self.limiter = limiter
        self.clock = clock

    async def authenticate(self, authorization: str | None) -> Principal:
        """The token's party; raises `Unauthorized`, or `TooManyRequests` over the party's rate."""
        if not authorization:
            raise Unauthorized("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing bearer token")
        return await self.authenticate_digest(hash_token(token.strip()))

    async def authenticate_digest(self, digest: str) -> Principal:
        """As `authenticate`, from the token's SHA-256: a dashboard session holds the digest of the
        token it was opened with, so revoking that token ends the session at once."""
        principal = self._by_hash.get(digest)
        if principal is None and self._store is not None:
            info = await self._store.lookup(digest)
            if info is not None and info.status(self.clock()) == "active":
                principal = Principal(info.party_id, info.role, info.area, info.central_reader)
        if principal is None:
            raise Unauthorized("invalid token")
        if self.limiter is not None:
            self.limiter.take(f"party:{principal.party_id}")
        return principal

    @staticmethod
    def require(principal: Principal, *roles: str) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"this endpoint is for the role(s): {', '.join(roles)}")
        return principal
