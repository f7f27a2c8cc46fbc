"""Outbox relay: publishes committed outbox rows, marks them sent only after the broker's confirm.

A nack or a lost connection leaves the row pending for the next round. On PostgreSQL several service
processes relay at once without double publishing: each claims its rows with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import ARRAY

from broker.config.settings import RelaySettings
from broker.store.ledger import Ledger, utcnow
from broker.store.tables import outbox
from broker.transport.protocol import H_ATTEMPT, H_CREATED_AT, OutboundMessage, PublishError, Transport

__all__ = ["OutboxRelay"]

log = structlog.get_logger(__name__)

# A round (claim, publish, confirm, mark sent) costs about the same for one row as for ten; at a
# steady 200 referrals/s, waiting this long after a wake-up makes it carry several rows, not one.
_GATHER_S = 0.005


class OutboxRelay:
    def __init__(self, ledger: Ledger, transport: Transport, settings: RelaySettings) -> None:
        self._ledger = ledger
        self._transport = transport
        self._settings = settings
        self._wake = asyncio.Event()
        # Built once: a statement made anew each round is re-hashed into SQLAlchemy's cache key.
        claim = (sa.select(outbox.c.id, outbox.c.event_id, outbox.c.exchange, outbox.c.routing_key,
                           outbox.c.body, outbox.c.created_at)
                 .where(outbox.c.status == "pending").order_by(outbox.c.id).limit(settings.batch_size))
        self._claim = claim.with_for_update(skip_locked=True) if ledger.is_postgres else claim
        if ledger.is_postgres:
            # One statement for every batch size: `IN (...)` of n ids is a new prepared statement for
            # each n, and asyncpg keeps 100 per pooled connection (memory, and re-prepares of the
            # hot statements it evicts).
            ids = outbox.c.id == sa.any_(sa.bindparam("ids", type_=ARRAY(sa.BigInteger)))
        else:
            ids = outbox.c.id.in_(sa.bindparam("ids", expanding=True))
        self._mark_sent = (sa.update(outbox).where(ids, outbox.c.status == "pending")
                           .values(status="sent", published_at=sa.bindparam("published_at"),
                                   publish_attempts=outbox.c.publish_attempts + 1))

    def notify(self) -> None:
        """Called after a commit that wrote outbox rows: relay now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                count = await self.drain_once()
            except Exception:
                log.exception("outbox_relay_round_failed")
                count = 0
            if count >= self._settings.batch_size:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval_s)
            except TimeoutError:
                continue  # the poll: rows another process committed
            # Woken by a commit: let the commits of the next few milliseconds join this round.
            await asyncio.sleep(_GATHER_S)

    async def drain_once(self) -> int:
        """Publish one batch; returns how many rows were confirmed."""
        async with self._ledger.transaction() as conn:
            rows = (await conn.execute(self._claim)).mappings().all()
            if not rows:
                return 0
            messages = [
                OutboundMessage(
                    event_id=r["event_id"], exchange=r["exchange"], routing_key=r["routing_key"],
                    body=r["body"].encode(),
                    headers={H_ATTEMPT: 1, H_CREATED_AT: int(r["created_at"].timestamp())},
                )
                for r in rows
            ]
            results = await asyncio.gather(*(self._transport.publish(m) for m in messages),
                                           return_exceptions=True)
            confirmed = [r["id"] for r, res in zip(rows, results, strict=True) if res is None]
            failed = [res for res in results if res is not None]
            if confirmed:
                await conn.execute(self._mark_sent, {"ids": confirmed, "published_at": utcnow()})
        if failed:
            unexpected = [f for f in failed if not isinstance(f, PublishError)]
            log.warning("outbox_publish_unconfirmed", count=len(failed),
                        unexpected=len(unexpected))
            if unexpected and isinstance(unexpected[0], BaseException) and not isinstance(
                    unexpected[0], Exception):
                raise unexpected[0]
        return len(confirmed)
