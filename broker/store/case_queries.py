"""The case logic's own statements on `cases` and `events` (beyond the row operations of `Ledger`):
each takes the caller's connection, so it runs inside the caller's transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.tables import cases, events

__all__ = ["case_purged_at", "insert_case", "previous_input", "received_data"]

_INSERT_CASE = cases.insert()  # built once, executed with parameters (see broker.store.ledger)


async def insert_case(conn: AsyncConnection, values: Mapping[str, Any]) -> None:
    """A new case row; a repeated (sender, kela_reference) raises `broker.store.errors.UniqueViolation`."""
    await conn.execute(_INSERT_CASE, dict(values))


async def received_data(conn: AsyncConnection, referral_id: str) -> str:
    """The stored data (JSON text) of the case's `received` event."""
    data: str = (await conn.execute(
        sa.select(events.c.data).where(events.c.referral_id == referral_id,
                                       events.c.type == "received").limit(1))).scalar_one()
    return data


async def previous_input(conn: AsyncConnection, referral_id: str, dedupe_key: str,
                         ) -> dict[str, Any] | None:
    """`body_sha256` and `data` of the event an earlier input with this dedupe key wrote, if any."""
    row = (await conn.execute(sa.select(events.c.body_sha256, events.c.data).where(
        events.c.referral_id == referral_id, events.c.dedupe_key == dedupe_key))).mappings().first()
    return dict(row) if row else None


async def case_purged_at(conn: AsyncConnection, referral_id: str) -> dt.datetime | None:
    """When retention purged the case's personal data; None if not (or no such case)."""
    purged: dt.datetime | None = (await conn.execute(sa.select(cases.c.purged_at).where(
        cases.c.referral_id == referral_id))).scalar()
    return purged
