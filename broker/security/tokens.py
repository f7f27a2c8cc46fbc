"""Party tokens held in the ledger: created, rotated and revoked without editing the config.

Only the SHA-256 of a token is stored; the plaintext exists once, in what `create` and `rotate`
return. Every request looks its token up here (one query on the unique hash index, no cache), so a
revoke or an expiry takes effect at once in every process that shares the ledger.

A rotation revokes the old tokens of the party at `now + grace`: a future `revoked_at` means the
token still works until then, which gives the party time to switch without a second command.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from broker.config.settings import Party
from broker.domain.errors import NotFound
from broker.security.audit import Actor, AuditEntry, append
from broker.security.auth import hash_token, new_token
from broker.store import tokens as queries
from broker.store.ledger import Ledger, new_id

__all__ = ["IssuedToken", "TokenInfo", "TokenStatus", "TokenStore"]

TokenStatus = Literal["active", "expired", "revoked"]


@dataclass(frozen=True)
class TokenInfo:
    """A stored token without its hash: what an operator may see."""

    id: str
    party_id: str
    role: str
    area: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    central_reader: bool = False

    def status(self, now: dt.datetime) -> TokenStatus:
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def as_json(self, now: dt.datetime) -> dict[str, str | bool | None]:
        def stamp(at: dt.datetime | None) -> str | None:
            return at.isoformat() if at is not None else None

        return {"id": self.id, "party": self.party_id, "role": self.role, "area": self.area,
                "central_reader": self.central_reader,
                "created": stamp(self.created_at), "expires": stamp(self.expires_at),
                "revoked": stamp(self.revoked_at), "status": self.status(now)}


@dataclass(frozen=True)
class IssuedToken:
    info: TokenInfo
    token: str  # plaintext: shown once, never stored


def _info(row: Mapping[Any, Any]) -> TokenInfo:
    return TokenInfo(id=row["id"], party_id=row["party_id"], role=row["role"], area=row["area"],
                     created_at=row["created_at"], expires_at=row["expires_at"],
                     revoked_at=row["revoked_at"], central_reader=bool(row["central_reader"]))


class TokenStore:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def lookup(self, token_sha256: str) -> TokenInfo | None:
        async with self._ledger.engine.connect() as conn:
            row = await queries.token_by_hash(conn, token_sha256)
        return _info(row) if row is not None else None

    async def create(self, party_id: str, role: str, area: str | None, *, actor: Actor,
                     now: dt.datetime, expires_in: dt.timedelta | None = None,
                     central_reader: bool = False) -> IssuedToken:
        token = new_token()
        # The config's party model holds the rules (id pattern, roles, an intake needs an area,
        # only a Kela party can be the central reader).
        party = Party.model_validate({"id": party_id, "role": role, "area": area,
                                      "token_sha256": hash_token(token),
                                      "central_reader": central_reader})
        info = TokenInfo(id=new_id(), party_id=party.id, role=party.role, area=party.area,
                         created_at=now, expires_at=now + expires_in if expires_in else None,
                         revoked_at=None, central_reader=party.central_reader)
        async with self._ledger.transaction() as conn:
            await queries.insert_token(
                conn, id=info.id, token_sha256=party.token_sha256, party_id=info.party_id,
                role=info.role, area=info.area, central_reader=info.central_reader,
                created_at=info.created_at, expires_at=info.expires_at)
            await append(conn, actor, [AuditEntry("token_created")], now)
        return IssuedToken(info, token)

    async def rotate(self, party_id: str, *, actor: Actor, now: dt.datetime,
                     grace: dt.timedelta = dt.timedelta(0),
                     expires_in: dt.timedelta | None = None) -> IssuedToken:
        """A new token with the role, area and central-reader mark of the party's newest usable
        token; the old ones end."""
        current = [t for t in await self.list(party_id=party_id) if t.status(now) == "active"]
        if not current:
            raise NotFound(f"party {party_id} has no active token in the ledger (use create)")
        newest = max(current, key=lambda t: t.created_at)
        issued = await self.create(party_id, newest.role, newest.area, actor=actor, now=now,
                                   expires_in=expires_in, central_reader=newest.central_reader)
        await self._revoke(party_id=party_id, keep=issued.info.id,
                           actor=actor, now=now, at=now + grace, action="token_rotated")
        return issued

    async def revoke(self, *, actor: Actor, now: dt.datetime, token_id: str | None = None,
                     party_id: str | None = None) -> int:
        """Revoke one token by id, or every token of a party; returns how many were revoked."""
        if (token_id is None) == (party_id is None):
            raise ValueError("give exactly one of token_id and party_id")
        count = await self._revoke(token_id=token_id, party_id=party_id,
                                   actor=actor, now=now, at=now, action="token_revoked")
        if count == 0 and token_id is not None:
            raise NotFound(f"no usable token with id {token_id}")
        return count

    async def _revoke(self, *, token_id: str | None = None, party_id: str | None = None,
                      keep: str | None = None, actor: Actor, now: dt.datetime, at: dt.datetime,
                      action: str) -> int:
        async with self._ledger.transaction() as conn:
            count = await queries.revoke(conn, at, token_id=token_id, party_id=party_id, keep=keep)
            if count:
                await append(conn, actor, [AuditEntry(action)] * count, now)
        return count

    async def list(self, *, party_id: str | None = None) -> list[TokenInfo]:
        async with self._ledger.engine.connect() as conn:
            return [_info(r) for r in await queries.list_tokens(conn, party_id=party_id)]
