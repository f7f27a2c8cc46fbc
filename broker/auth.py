"""Bearer tokens per party, stored as SHA-256 hashes (DESIGN § 7)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from broker.errors import Forbidden, Unauthorized
from broker.settings import Party

__all__ = ["PRINCIPAL", "Principal", "TokenBook", "hash_token", "new_token"]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "hnd_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    party_id: str
    role: str
    area: str | None


PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


class TokenBook:
    def __init__(self, parties: Iterable[Party]) -> None:
        self._by_hash = {p.token_sha256: Principal(p.id, p.role, p.area) for p in parties}

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing bearer token")
        principal = self._by_hash.get(hash_token(token.strip()))
        if principal is None:
            raise Unauthorized("invalid token")
        return principal

    @staticmethod
    def require(principal: Principal, *roles: str) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"this endpoint is for the role(s): {', '.join(roles)}")
        return principal
