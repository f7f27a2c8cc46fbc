"""The statements of `access_tokens`; what a token may do, and the audit of its lifecycle, are in
`broker.security.tokens`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from broker.store.ledger import Connection
from broker.store.tables import access_tokens

__all__ = ["insert_token", "list_tokens", "revoke", "token_by_hash"]

_BY_HASH = sa.select(access_tokens).where(access_tokens.c.token_sha256 == sa.bindparam("h"))


async def token_by_hash(conn: Connection, token_sha256: str) -> sa.RowMapping | None:
    return (await conn.execute(_BY_HASH, {"h": token_sha256})).mappings().first()


async def insert_token(conn: Connection, *, id: str, token_sha256: str, party_id: str, role: str,
                       area: str | None, central_reader: bool, created_at: dt.datetime,
                       expires_at: dt.datetime | None) -> None:
    await conn.execute(access_tokens.insert().values(
        id=id, token_sha256=token_sha256, party_id=party_id, role=role, area=area,
        central_reader=central_reader, created_at=created_at, expires_at=expires_at))


async def revoke(conn: Connection, at: dt.datetime, *, token_id: str | None = None,
                 party_id: str | None = None, keep: str | None = None) -> int:
    """End at `at` one token (`token_id`) or every token of a party but `keep` (the one a rotation
    just made); returns how many ended (a token that ends by then anyway does not count)."""
    if token_id is not None:
        where = access_tokens.c.id == token_id
    elif keep is None:
        where = access_tokens.c.party_id == party_id
    else:
        where = sa.and_(access_tokens.c.party_id == party_id, access_tokens.c.id != keep)
    return await _revoke(conn, where, at)


async def _revoke(conn: Connection, where: sa.ColumnElement[bool], at: dt.datetime) -> int:
    # Only tokens that would still work at `at` move: an earlier revoke is never pushed later.
    still_usable = sa.or_(access_tokens.c.revoked_at.is_(None), access_tokens.c.revoked_at > at)
    result = await conn.execute(sa.update(access_tokens).where(where, still_usable)
                                .values(revoked_at=at))
    return int(result.rowcount)


async def list_tokens(conn: Connection, *, party_id: str | None = None) -> Sequence[sa.RowMapping]:
    """Every token (or a party's), by party and age."""
    query = sa.select(access_tokens).order_by(access_tokens.c.party_id, access_tokens.c.created_at)
    if party_id is not None:
        query = query.where(access_tokens.c.party_id == party_id)
    return (await conn.execute(query)).mappings().all()
