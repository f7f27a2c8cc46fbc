"""The purge statements of retention (issue 8); what a purge keeps, and the scheduled job, are in
`broker.jobs.retention`.

A batch takes its cases with `FOR UPDATE SKIP LOCKED` on PostgreSQL (`take_batch`), clears their
referrals (`clear_referrals`, the predicate again in the write), then rewrites the personal columns
of their rows (`EVENT_DATA`, `UPDATE_DATA`, `OUTBOX_BODIES`, `DEAD_LETTER_BODIES`), all in the
caller's transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from broker.store.ledger import Connection
from broker.store.tables import PURGEABLE_SQL, cases, dead_letters, events, outbox, updates

__all__ = [
    "DEAD_LETTER_BODIES", "EVENT_DATA", "OUTBOX_BODIES", "UPDATE_DATA", "Rewritable",
    "clear_referrals", "purgeable_cases", "take_batch",
]


def _purgeable(before: dt.datetime) -> sa.ColumnElement[bool]:
    # Literal predicate: SQLite uses the partial index ix_cases_purgeable only when the WHERE
    # repeats the index's predicate term for term.
    return sa.and_(sa.text(PURGEABLE_SQL), cases.c.closed_at < before)


async def purgeable_cases(conn: Connection, before: dt.datetime) -> list[tuple[str, dt.datetime]]:
    """(referral id, closed at) of every case a purge would take now, oldest closing first."""
    rows = (await conn.execute(
        sa.select(cases.c.referral_id, cases.c.closed_at)
        .where(_purgeable(before))
        .order_by(cases.c.closed_at, cases.c.pk))).all()
    return [(r[0], r[1]) for r in rows]


async def take_batch(conn: Connection, before: dt.datetime, batch: int) -> Sequence[int]:
    """The keys of up to `batch` purgeable cases, oldest closing first, locked until commit on
    PostgreSQL (skipping those another transaction holds)."""
    return (await conn.execute(
        sa.select(cases.c.pk).where(_purgeable(before))
        .order_by(cases.c.closed_at, cases.c.pk).limit(batch)
        .with_for_update(skip_locked=True))).scalars().all()


async def clear_referrals(conn: Connection, pks: Sequence[int], now: dt.datetime) -> list[str]:
    """Drop the referral of those cases still purgeable and mark them purged; their referral ids.

    The predicate again, in the write: on SQLite the read of `take_batch` is not part of the write
    transaction, so another engine may have purged some of these cases in between.
    """
    return [str(r) for r in (await conn.execute(
        sa.update(cases).where(cases.c.pk.in_(pks), sa.text(PURGEABLE_SQL))
        .values(referral_json=None, purged_at=now).returning(cases.c.referral_id))).scalars()]


class Rewritable:
    """A column holding personal data: its rows of some cases (the key and the value first), and
    the one prebuilt statement that sets new values by key."""

    def __init__(self, read: Callable[[Sequence[str]], sa.Select[Any]], write: sa.Update) -> None:
        self._read = read
        self._write = write

    async def rows(self, conn: Connection, referral_ids: Sequence[str]) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]] = (await conn.execute(self._read(referral_ids))).all()
        return rows

    async def write(self, conn: Connection, changes: Iterable[tuple[Any, str]]) -> None:
        """Set each (key, new value); nothing runs when there is nothing to change."""
        params = [{"k": key, "v": value} for key, value in changes]
        if params:
            await conn.execute(self._write, params)


_SET_EVENT = (sa.update(events).where(events.c.seq == sa.bindparam("k"))
              .values(data=sa.bindparam("v")))
_SET_UPDATE = (sa.update(updates).where(updates.c.seq == sa.bindparam("k"))
               .values(data=sa.bindparam("v")))
_SET_OUTBOX = (sa.update(outbox).where(outbox.c.id == sa.bindparam("k"))
               .values(body=sa.bindparam("v")))
_SET_DEAD = (sa.update(dead_letters).where(dead_letters.c.id == sa.bindparam("k"))
             .values(body=sa.bindparam("v")))

# Rows: (seq, data).
EVENT_DATA = Rewritable(lambda ids: sa.select(events.c.seq, events.c.data).where(
    events.c.referral_id.in_(ids), events.c.data.is_not(None)), _SET_EVENT)
UPDATE_DATA = Rewritable(lambda ids: sa.select(updates.c.seq, updates.c.data).where(
    updates.c.referral_id.in_(ids)), _SET_UPDATE)
# Rows: (id, body, event_id, referral_id).
OUTBOX_BODIES = Rewritable(lambda ids: sa.select(
    outbox.c.id, outbox.c.body, outbox.c.event_id, outbox.c.referral_id).where(
    outbox.c.referral_id.in_(ids)), _SET_OUTBOX)
DEAD_LETTER_BODIES = Rewritable(lambda ids: sa.select(
    dead_letters.c.id, dead_letters.c.body, dead_letters.c.event_id, dead_letters.c.referral_id).where(
    dead_letters.c.referral_id.in_(ids)), _SET_DEAD)
