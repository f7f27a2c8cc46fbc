"""The statements of the hash-chained audit (`audit`, `audit_heads`); the chain's rules (what is
hashed, which chain, when a link is broken) are in `broker.security.audit`.

On PostgreSQL one record is one statement (`append_one_pg`): the head is locked, advanced and
re-hashed and the record inserted together, the hash computed by the server. Otherwise the head is
bumped first (`bump_head`, which locks it until commit), the records inserted, then the head's hash
set. `snapshot` is the one read-only transaction in which `verify` reads the heads and the chains.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa

from broker.store.ledger import Connection, Engine
from broker.store.tables import audit, audit_heads

__all__ = [
    "ExportQuery", "append_one_pg", "bump_head", "chain_rows", "check_in_transaction", "heads",
    "insert_records", "set_head_hash", "snapshot",
]

_BUMP_HEAD = (sa.update(audit_heads).where(audit_heads.c.chain == sa.bindparam("c"))
              .values(n=audit_heads.c.n + sa.bindparam("k"))
              .returning(audit_heads.c.n, audit_heads.c.hash))
_SET_HEAD_HASH = (sa.update(audit_heads).where(audit_heads.c.chain == sa.bindparam("c"))
                  .values(hash=sa.bindparam("h")))
_INSERT = audit.insert()
_HEADS = sa.select(audit_heads).order_by(audit_heads.c.chain)

# PostgreSQL appends one record in one round trip: the head is locked, advanced and re-hashed and the
# record inserted by one statement, the hash computed by the server over exactly the text that
# `broker.security.audit.record_hash` hashes (the fields after `n` arrive as one pre-joined
# parameter, `tail`).
_APPEND_ONE_PG = sa.text("""
WITH old AS (
    SELECT chain, n, hash FROM audit_heads WHERE chain = :c FOR UPDATE
), head AS (
    UPDATE audit_heads AS a
    SET n = old.n + 1,
        hash = encode(sha256(convert_to(
            old.hash || :sep || old.chain::text || :sep || (old.n + 1)::text || :tail, 'UTF8')), 'hex')
    FROM old WHERE a.chain = old.chain
    RETURNING a.n, a.hash, old.hash AS prev_hash
)
INSERT INTO audit (chain, n, at, party_id, role, action, referral_id, request_id, outcome,
                   prev_hash, hash)
SELECT :c, head.n, :at, :party_id, :role, :action, :referral_id, :request_id, :outcome,
       head.prev_hash, head.hash
FROM head
RETURNING n
""").bindparams(sa.bindparam("at", type_=audit.c.at.type))


# --- append --------------------------------------------------------------------------------------


async def append_one_pg(conn: Connection, chain: int, row: Mapping[str, Any], *, sep: str,
                        tail: str) -> bool:
    """One record (`row`: at, party_id, role, action, referral_id, request_id, outcome) in one
    statement; False if the chain has no head row."""
    done = (await conn.execute(_APPEND_ONE_PG, {**row, "c": chain, "sep": sep, "tail": tail})).first()
    return done is not None


async def bump_head(conn: Connection, chain: int, k: int) -> tuple[int, str] | None:
    """Advance the chain's head by `k` records and lock it until commit: its new `n` and its
    (still previous) hash, or None if the chain has no head row."""
    head = (await conn.execute(_BUMP_HEAD, {"c": chain, "k": k})).first()
    return None if head is None else (int(head[0]), str(head[1]))


async def insert_records(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    await conn.execute(_INSERT, rows)


async def set_head_hash(conn: Connection, chain: int, hash_: str) -> None:
    await conn.execute(_SET_HEAD_HASH, {"c": chain, "h": hash_})


# --- verify --------------------------------------------------------------------------------------


@asynccontextmanager
async def snapshot(engine: Engine) -> AsyncIterator[Connection]:
    """A read-only transaction whose every read sees the ledger as it was at its first read.

    PostgreSQL: REPEATABLE READ, READ ONLY. Its reads take no lock that blocks a writer (only
    ACCESS SHARE, which conflicts with DDL alone). SQLite: an explicit BEGIN. The driver opens a
    transaction of its own only before INSERT/UPDATE/DELETE, so without it each SELECT would be its
    own snapshot. In WAL mode a read transaction does not block the writer. It is rolled back: it
    wrote nothing. The pool's connection keeps its driver settings (only this one
    transaction is explicit), so the service's write transactions are unchanged.
    """
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ",
                                                postgresql_readonly=True)
            async with conn.begin():
                yield conn
            return
        await conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            await conn.rollback()


async def check_in_transaction(conn: Connection) -> None:
    """Refuse to verify outside one snapshot (a driver that ignored BEGIN): a false alarm on a live
    ledger is what this prevents."""
    if conn.dialect.name != "sqlite":
        return
    raw = await conn.get_raw_connection()
    if not raw.driver_connection.in_transaction:  # type: ignore[union-attr]
        raise RuntimeError("audit verify: the SQLite reads are not in one transaction")


async def heads(conn: Connection) -> list[tuple[int, int, str]]:
    """(chain, n, hash) of every head, by chain."""
    return [(int(chain), int(n), str(hash_)) for chain, n, hash_ in (await conn.execute(_HEADS)).all()]


async def chain_rows(conn: Connection, chain: int, batch: int) -> AsyncIterator[dict[str, Any]]:
    """The chain's records by `n`, read `batch` at a time."""
    after = 0
    while True:
        rows = (await conn.execute(
            sa.select(audit).where(audit.c.chain == chain, audit.c.n > after)
            .order_by(audit.c.n).limit(batch))).mappings().all()
        if not rows:
            return
        for r in rows:
            yield dict(r)
        after = int(rows[-1]["n"])


# --- export --------------------------------------------------------------------------------------


class ExportQuery:
    """The records in [start, end), optionally of one case or one party, by `seq`."""

    def __init__(self, start: dt.datetime, end: dt.datetime, *, referral_id: str | None = None,
                 party_id: str | None = None) -> None:
        q = sa.select(audit).where(audit.c.at >= start, audit.c.at < end)
        if referral_id is not None:
            q = q.where(audit.c.referral_id == referral_id)
        if party_id is not None:
            q = q.where(audit.c.party_id == party_id)
        self._query = q

    async def batch(self, conn: Connection, after: int, limit: int) -> Sequence[sa.RowMapping]:
        """Up to `limit` records with `seq` above `after`."""
        return (await conn.execute(self._query.where(audit.c.seq > after).order_by(audit.c.seq)
                                   .limit(limit))).mappings().all()
