"""What the SLA clock reads and marks in the ledger; when to escalate, and what an escalation
writes, are in `broker.jobs.sla_clock`.

A case records the deadlines it escalated in `cases.escalated`, comma-separated, so neither a
restart nor a second process escalates one twice. A concurrent escalation of the same deadline
fails on the event's dedupe key with `IntegrityError`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from broker.store.ledger import CaseRow, Connection, Ledger
from broker.store.tables import DEADLINE_COLUMNS, OPEN_STATES, cases, waiting

__all__ = [
    "DEADLINES", "OPEN_STATES", "IntegrityError", "deadline_of", "is_escalated", "mark_escalated",
    "overdue",
]

DEADLINES: tuple[str, ...] = tuple(DEADLINE_COLUMNS)
"""The names of the deadlines a case has (`broker.domain.deadlines`)."""


async def overdue(conn: Connection, name: str, now: dt.datetime, batch: int) -> Sequence[str]:
    """Up to `batch` open cases whose deadline `name` passed unmet and was not escalated yet,
    earliest first (an indexed range query)."""
    due, met = DEADLINE_COLUMNS[name]
    return (await conn.execute(
        sa.select(cases.c.referral_id)
        .where(waiting(met.name), due < now, sa.not_(cases.c.escalated.contains(name)))
        .order_by(due).limit(batch))).scalars().all()


def deadline_of(case: CaseRow, name: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(due, met) of the case's deadline `name`."""
    due_col, met_col = DEADLINE_COLUMNS[name]
    due: dt.datetime | None = getattr(case, due_col.name)
    met: dt.datetime | None = getattr(case, met_col.name)
    return due, met


def is_escalated(case: CaseRow, name: str) -> bool:
    return name in case.escalated.split(",")


async def mark_escalated(conn: Connection, case: CaseRow, name: str) -> None:
    """Record on the case that its deadline `name` was escalated."""
    escalated = ",".join([*[e for e in case.escalated.split(",") if e], name])
    await Ledger.set_case(conn, case.pk, None, escalated=escalated)
