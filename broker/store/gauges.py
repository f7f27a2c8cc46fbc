"""The ledger's numbers behind the Prometheus gauges (`broker.observability.metrics.LedgerGauges`).

Read at scrape time by indexed aggregate queries, so several processes never double count and a
restart loses nothing. Areas and deadline names only: never personal data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa

from broker.store.ledger import Ledger, utcnow
from broker.store.tables import DEADLINE_COLUMNS, cases, outbox, unanswered, waiting

__all__ = ["GaugeSnapshot", "read_gauges"]


@dataclass
class GaugeSnapshot:
    unanswered: dict[tuple[str, str], int] = field(default_factory=dict)
    overdue: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_unanswered: dict[str, float] = field(default_factory=dict)
    outbox_pending: int = 0


async def read_gauges(ledger: Ledger, now: dt.datetime | None = None) -> GaugeSnapshot:
    """Unanswered cases by (area, urgency) and the oldest one's age by area, overdue cases by
    (area, deadline), pending outbox rows."""
    now = now or utcnow()
    snap = GaugeSnapshot()
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(cases.c.area, cases.c.urgency, sa.func.count(), sa.func.min(cases.c.delivered_at))
            .where(unanswered())
            .group_by(cases.c.area, cases.c.urgency)
            # SQLite's planner prefers the (state, received_at) index on sampled statistics.
            .with_hint(cases, "INDEXED BY ix_cases_unanswered", "sqlite"))
        for area, urgency, n, oldest in rows:
            snap.unanswered[(area or "", urgency)] = int(n)
            if oldest is not None:
                if oldest.tzinfo is None:
                    oldest = oldest.replace(tzinfo=dt.UTC)
                age = (now - oldest).total_seconds()
                snap.oldest_unanswered[area or ""] = max(snap.oldest_unanswered.get(area or "", 0), age)
        for name, (due, met) in DEADLINE_COLUMNS.items():
            rows = await conn.execute(
                sa.select(cases.c.area, sa.func.count())
                .where(waiting(met.name), due < now)
                .group_by(cases.c.area))
            for area, n in rows:
                snap.overdue[(area or "", name)] = int(n)
        snap.outbox_pending = int((await conn.execute(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.status == "pending")
        )).scalar_one())
    return snap
