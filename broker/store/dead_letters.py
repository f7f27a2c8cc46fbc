"""Dead letters: a delivery given up is kept, and an operator's replay puts its message back into the
outbox under the same event id. Each function takes the caller's connection (its transaction)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.tables import dead_letters, outbox, processed

__all__ = [
    "add_dead_letter",
    "dead_letter_by_id",
    "forget_processed",
    "has_open_dead_letter",
    "insert_outbox_copy",
    "mark_replayed",
    "outbox_has_event",
    "requeue_outbox_event",
]


async def has_open_dead_letter(conn: AsyncConnection, event_id: str) -> bool:
    """Whether `event_id` already has a dead letter that was not replayed."""
    return (await conn.execute(sa.select(dead_letters.c.id).where(
        dead_letters.c.event_id == event_id, dead_letters.c.replayed_at.is_(None)))).first() is not None


async def add_dead_letter(conn: AsyncConnection, *, event_id: str, referral_id: str | None,
                          area: str | None, queue: str, exchange: str, routing_key: str, reason: str,
                          attempts: int, body: str, at: dt.datetime) -> None:
    await conn.execute(dead_letters.insert().values(
        event_id=event_id, referral_id=referral_id, area=area, queue=queue,
        exchange=exchange, routing_key=routing_key, reason=reason,
        attempts=attempts, body=body, created_at=at))


async def dead_letter_by_id(conn: AsyncConnection, dead_letter_id: int) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(dead_letters).where(
        dead_letters.c.id == dead_letter_id))).mappings().first()
    return dict(row) if row else None


async def mark_replayed(conn: AsyncConnection, dead_letter_id: int, at: dt.datetime) -> None:
    await conn.execute(sa.update(dead_letters).where(dead_letters.c.id == dead_letter_id)
                       .values(replayed_at=at))


async def forget_processed(conn: AsyncConnection, event_id: str) -> None:
    """Every consumer's record of having applied `event_id`: a replay is applied again."""
    await conn.execute(sa.delete(processed).where(processed.c.event_id == event_id))


async def requeue_outbox_event(conn: AsyncConnection, event_id: str, at: dt.datetime) -> None:
    """The outbox row of `event_id`, if it is still there, pending again."""
    await conn.execute(sa.update(outbox).where(outbox.c.event_id == event_id).values(
        status="pending", created_at=at, published_at=None, done_at=None))


async def outbox_has_event(conn: AsyncConnection, event_id: str) -> bool:
    return (await conn.execute(sa.select(outbox.c.id).where(
        outbox.c.event_id == event_id))).first() is not None


async def insert_outbox_copy(conn: AsyncConnection, *, event_id: str, referral_id: str | None,
                             exchange: str, routing_key: str, body: str, at: dt.datetime) -> None:
    """A pending outbox row for a message whose row is gone, from the dead letter's copy."""
    await conn.execute(outbox.insert().values(
        event_id=event_id, referral_id=referral_id, exchange=exchange,
        routing_key=routing_key, body=body, status="pending",
        created_at=at, publish_attempts=0))
