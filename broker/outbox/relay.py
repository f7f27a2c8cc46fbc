"""Outbox relay: publishes committed outbox rows, marks them sent only after the broker's confirm.

A nack or a lost connection leaves the row pending for the next round. On PostgreSQL several service
processes relay at once without double publishing: each claims its rows with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from broker.config.settings import RelaySettings
from broker.store.ledger import Ledger, utcnow
from broker.store.outbox import OutboxRow, PendingOutbox
from broker.transport.protocol import H_ATTEMPT, H_CREATED_AT, OutboundMessage, PublishError, Transport

__all__ = ["OutboxRelay", "publish_rows"]

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
        self._rows = PendingOutbox(is_postgres=ledger.is_postgres, batch_size=settings.batch_size)

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
            rows = await self._rows.claim(conn)
            if not rows:
                return 0
            confirmed, failed = await publish_rows(self._transport, rows)
            if confirmed:
                await self._rows.mark_sent(conn, confirmed, utcnow())
        if failed:
            unexpected = [f for f in failed if not isinstance(f, PublishError)]
            log.warning("outbox_publish_unconfirmed", count=len(failed),
                        unexpected=len(unexpected))
            if unexpected and isinstance(unexpected[0], BaseException) and not isinstance(
                    unexpected[0], Exception):
                raise unexpected[0]
        return len(confirmed)


async def publish_rows(transport: Transport, rows: Sequence[OutboxRow],
                       ) -> tuple[list[int], list[BaseException]]:
    """Publish outbox rows at once (one confirm round trip for the batch, not one per row), each
    as the message its event is: `message_id` = event id, attempt 1, and the row's creation time,
    from which the give-up clock runs. Returns the ids of the confirmed rows and the failures."""
    messages = [
        OutboundMessage(event_id=r.event_id, exchange=r.exchange, routing_key=r.routing_key,
                        body=r.body.encode(),
                        headers={H_ATTEMPT: 1, H_CREATED_AT: int(r.created_at.timestamp())})
        for r in rows
    ]
    results = await asyncio.gather(*(transport.publish(m) for m in messages), return_exceptions=True)
    confirmed = [r.id for r, res in zip(rows, results, strict=True) if res is None]
    return confirmed, [res for res in results if res is not None]
