"""The outbox's SQL for the relay (`broker.outbox.relay`) and the reconciliation sweep
(`broker.outbox.reconcile`): claim rows, mark them sent, retire the settled, note a republish.

The callers hold one `Ledger.transaction()` across claim, publish and mark, and pass its connection
in. On PostgreSQL the claims take `FOR UPDATE SKIP LOCKED`, so several service processes relay and
sweep at once without publishing a row twice; on SQLite one process owns the ledger.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.tables import outbox, processed

__all__ = ["OutboxRow", "PendingOutbox", "SentOutbox"]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    event_id: str
    exchange: str
    routing_key: str
    body: str
    created_at: dt.datetime
    settled: bool = False  # the sweep's claim only: a consumer has settled the event


# The statements are built once (a statement made anew each round is re-hashed into SQLAlchemy's
# cache key); the claims, which carry the batch size, once per `PendingOutbox` / `SentOutbox`.
_COLUMNS = (outbox.c.id, outbox.c.event_id, outbox.c.exchange, outbox.c.routing_key, outbox.c.body,
            outbox.c.created_at)
_IDS = outbox.c.id.in_(sa.bindparam("ids", expanding=True))
# PostgreSQL: one statement for every batch size. `IN (...)` of n ids is a new prepared statement for
# each n, and asyncpg keeps 100 per pooled connection (memory, and re-prepares of the hot statements
# it evicts).
_IDS_ANY = outbox.c.id == sa.any_(sa.bindparam("ids", type_=ARRAY(sa.BigInteger)))
_MARK_SENT = {
    is_postgres: (sa.update(outbox).where(ids, outbox.c.status == "pending")
                  .values(status="sent", published_at=sa.bindparam("published_at"),
                          publish_attempts=outbox.c.publish_attempts + 1))
    for is_postgres, ids in ((True, _IDS_ANY), (False, _IDS))
}
_RETIRE = (sa.update(outbox).where(_IDS, outbox.c.status == "sent")
           .values(status="done", done_at=sa.bindparam("at")))
_REPUBLISHED = (sa.update(outbox).where(_IDS)
                .values(published_at=sa.bindparam("at"), attempted_at=None,
                        publish_attempts=outbox.c.publish_attempts + 1))


class PendingOutbox:
    """The relay's statements: committed rows not yet published, oldest first."""

    def __init__(self, *, is_postgres: bool, batch_size: int) -> None:
        claim = (sa.select(*_COLUMNS).where(outbox.c.status == "pending")
                 .order_by(outbox.c.id).limit(batch_size))
        self._claim = claim.with_for_update(skip_locked=True) if is_postgres else claim
        self._mark_sent = _MARK_SENT[is_postgres]

    async def claim(self, conn: AsyncConnection) -> list[OutboxRow]:
        """At most one batch of pending rows, locked until the caller's transaction ends."""
        return [OutboxRow(**r) for r in (await conn.execute(self._claim)).mappings()]

    async def mark_sent(self, conn: AsyncConnection, ids: Sequence[int], at: dt.datetime) -> None:
        """The broker confirmed these rows: `sent`, one more publish attempt."""
        await conn.execute(self._mark_sent, {"ids": list(ids), "published_at": at})


class SentOutbox:
    """The sweep's statements: published rows that no consumer settled and no worker tried lately."""

    def __init__(self, *, is_postgres: bool, batch_size: int, consumers: Sequence[str]) -> None:
        settled = sa.exists().where(processed.c.consumer.in_(tuple(consumers)),
                                    processed.c.event_id == outbox.c.event_id)
        last_seen = sa.func.coalesce(outbox.c.attempted_at, outbox.c.published_at)
        claim = (sa.select(*_COLUMNS, settled.label("settled"))
                 .where(outbox.c.status == "sent", last_seen < sa.bindparam("cutoff"))
                 .order_by(outbox.c.id).limit(batch_size))
        self._claim = claim.with_for_update(of=outbox, skip_locked=True) if is_postgres else claim

    async def claim(self, conn: AsyncConnection, cutoff: dt.datetime) -> list[OutboxRow]:
        """At most one batch of `sent` rows last seen before `cutoff`, each with `settled`."""
        rows = (await conn.execute(self._claim, {"cutoff": cutoff})).mappings()
        return [OutboxRow(**r) for r in rows]

    async def retire(self, conn: AsyncConnection, ids: Sequence[int], at: dt.datetime) -> None:
        """Settled by a consumer: `done`, out of the set the sweep scans."""
        await conn.execute(_RETIRE, {"ids": list(ids), "at": at})

    async def mark_republished(self, conn: AsyncConnection, ids: Sequence[int], at: dt.datetime,
                               ) -> None:
        """Published again: the clock restarts, one more publish attempt."""
        await conn.execute(_REPUBLISHED, {"ids": list(ids), "at": at})
