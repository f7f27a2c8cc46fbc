"""The dashboard's reads of the ledger (SQLAlchemy Core): the overview's aggregates, the case lookup and
timeline, and the statistics page's combined rows. `broker.dashboard.views` calls them; the names shown
for areas come from the dashboard (`name_of`), in the page's language.

Every figure on the overview comes from a grouped aggregate query over an existing index (each query
names its index); no page ever loads a whole case. What leaves the ledger here is ids, codes, states and
times: never an identity code, a name or free text (a dead letter's reason is cut to its code, an
event's data to the keys that are codes).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.config.settings import Settings
from broker.domain.routing import Classification
from broker.domain.workdays import working_days_between
from broker.store.ledger import Ledger, is_referral_id, utcnow
from broker.store.percentiles import percentile_cont
from broker.store.statistics import SMALL as STATS_SMALL
from broker.store.statistics import StatsQuery, compute_statistics
from broker.store.tables import DEADLINE_COLUMNS, OPEN_STATES, cases, dead_letters, events
from schemas.enums import Finding, Outcome, ReferralQuality

__all__ = [
    "BREAKDOWNS",
    "OPEN_STATES",
    "OVERDUE_LIST_LIMIT",
    "AreaRow",
    "DeadLetterItem",
    "OverdueItem",
    "Overview",
    "case_timeline",
    "find_cases",
    "is_uuid",
    "load_overview",
    "load_statistics",
]

LATENCY_WINDOW = dt.timedelta(days=30)
OVERDUE_LIST_LIMIT = 50
DEAD_LETTER_LIST_LIMIT = 50

# A code as it may be shown (a reason's head, an event's area or deadline): anything else stays in
# the ledger.
_CODE = re.compile(r"[a-z0-9_]{1,40}")


# --- overview ------------------------------------------------------------------------------------


@dataclass
class AreaRow:
    code: str
    name: str
    open: int = 0
    unanswered: int = 0
    overdue: int = 0
    oldest_unanswered_working_days: int | None = None
    first_reply_p50_h: float | None = None
    first_reply_p90_h: float | None = None
    replied_30d: int = 0
    dead_letters: int = 0


@dataclass(frozen=True)
class OverdueItem:
    referral_id: str
    area: str | None
    deadline: str
    due_at: dt.datetime


@dataclass(frozen=True)
class DeadLetterItem:
    id: int
    referral_id: str | None
    area: str | None
    reason: str
    attempts: int
    created_at: dt.datetime


@dataclass
class Overview:
    now: dt.datetime
    areas: list[AreaRow]
    overdue: list[OverdueItem]
    dead_letters: list[DeadLetterItem]
    dead_letters_total: int


def _is_open() -> sa.ColumnElement[bool]:
    """`state IN ('routed', ...)` with the values written into the SQL, as in the partial indexes'
    predicates: neither SQLite nor a generic PostgreSQL plan can prove a partial index usable
    from a bound parameter."""
    return cases.c.state.in_(sa.bindparam("open_states", list(OPEN_STATES), expanding=True,
                                          literal_execute=True, unique=True))


def _waiting_past(due: sa.ColumnElement[Any], met: sa.ColumnElement[Any], now: dt.datetime,
                  ) -> tuple[sa.ColumnElement[bool], ...]:
    """Open, past `due`, not met: the predicate of the partial index ix_cases_open_<deadline>
    (same state list, in the same order, as top-level terms, so both planners can use it)."""
    return _is_open(), met.is_(None), due < now


def _overdue_cases(now: dt.datetime, is_postgres: bool) -> sa.Subquery:
    """(pk, area) of every overdue case, once however many of its deadlines passed.

    Each deadline's terms are the predicate of its partial index. PostgreSQL combines the three
    indexes in one BitmapOr; SQLite cannot use a partial index for a term inside an OR, so there
    it is a UNION of one range scan per index."""
    terms = [_waiting_past(due, met, now) for due, met in DEADLINE_COLUMNS.values()]
    if is_postgres:
        return (sa.select(cases.c.pk, cases.c.area)
                .where(sa.or_(*[sa.and_(*t) for t in terms])).subquery("overdue"))
    return sa.union(*[sa.select(cases.c.pk, cases.c.area).where(*t) for t in terms]).subquery("overdue")


async def _areas_with_cases(conn: AsyncConnection, codes: Sequence[str]) -> set[str]:
    """One round trip, one index probe (ix_cases_area_state) per area of the classification."""
    if not codes:
        return set()
    probes = [sa.exists().where(cases.c.area == code).label(f"a{i}") for i, code in enumerate(codes)]
    row = (await conn.execute(sa.select(*probes))).one()
    return {code for code, present in zip(codes, row, strict=True) if present}


async def _first_reply_percentiles(conn: AsyncConnection, is_postgres: bool, since: dt.datetime,
                                   ) -> dict[str, tuple[int, float | None, float | None]]:
    """area -> (n, p50 hours, p90 hours) over cases received since `since` that have a reply.

    PostgreSQL: `percentile_cont` per area. SQLite has no ordered-set aggregates, so a window query
    numbers each area's latencies and returns only the (at most four) order statistics that the
    same linear interpolation needs. Either way the range scan is on `ix_cases_received` and only
    the area and two timestamps of each row are read.
    """
    # The upper bound is always true; it is there because SQLite, without statistics on values,
    # guesses a two-sided range to be small and a one-sided one to be a quarter of the table.
    where = (cases.c.received_at >= since, cases.c.received_at < since + 2 * LATENCY_WINDOW,
             cases.c.first_reply_at.is_not(None))
    if is_postgres:
        hours = sa.cast(sa.extract("epoch", cases.c.first_reply_at - cases.c.received_at),
                        sa.Float) / 3600.0
    else:
        hours = (sa.func.julianday(cases.c.first_reply_at)
                 - sa.func.julianday(cases.c.received_at)) * 24.0
    # `area || ''` rather than `area`: partitioning by the bare column tempts SQLite into walking
    # all of ix_cases_area_state (a million entries) to skip a sort of one month's rows.
    area = cases.c.area.concat("") if not is_postgres else cases.c.area
    found = await percentile_cont(conn, hours, fractions=(0.5, 0.9), group_by=(area,), where=where)
    return {key[0]: (n, p50, p90) for key, (n, (p50, p90)) in found.items() if key[0] is not None}




def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def load_overview(ledger: Ledger, settings: Settings, classification: Classification,
                        name_of: Callable[[str], str], now: dt.datetime | None = None) -> Overview:
    """Every figure of the overview, by grouped aggregate queries (see each for its index); an
    area's row is named by `name_of(code)`."""
    now = now or utcnow()
    codes = list(classification.areas)
    async with ledger.engine.connect() as conn:
        present = await _areas_with_cases(conn, codes)
        routed = {r.area for r in settings.routes if r.area in classification.areas}
        rows = {c: AreaRow(c, name_of(c)) for c in codes
                if c in present or c in routed}

        # Open cases by area: index-only on ix_cases_area_state, one seek per (area, state) pair.
        for area, n in await conn.execute(
                sa.select(cases.c.area, sa.func.count())
                .where(cases.c.area.in_(list(rows)), _is_open()).group_by(cases.c.area)):
            if area in rows:
                rows[area].open = int(n)

        # Unanswered (delivered, no first reply) and the oldest of them: the partial index
        # ix_cases_unanswered, whose predicate this is (the state written into the SQL, as there).
        for area, n, oldest in await conn.execute(
                sa.select(cases.c.area, sa.func.count(), sa.func.min(cases.c.delivered_at))
                .where(cases.c.state == sa.literal("delivered", literal_execute=True),
                       cases.c.first_reply_at.is_(None))
                .group_by(cases.c.area)):
            if area in rows:
                rows[area].unanswered = int(n)
                if oldest is not None:
                    rows[area].oldest_unanswered_working_days = working_days_between(oldest, now)

        # Overdue: each case once, whatever deadlines it missed (partial indexes, see above).
        overdue_cases = _overdue_cases(now, ledger.is_postgres)
        for area, n in await conn.execute(
                sa.select(overdue_cases.c.area, sa.func.count()).group_by(overdue_cases.c.area)):
            if area in rows:
                rows[area].overdue = int(n)

        for area, (n, p50, p90) in (await _first_reply_percentiles(
                conn, ledger.is_postgres, now - LATENCY_WINDOW)).items():
            if area in rows:
                row = rows[area]
                row.replied_30d, row.first_reply_p50_h, row.first_reply_p90_h = n, p50, p90

        dead_total = 0
        for area, n in await conn.execute(
                sa.select(dead_letters.c.area, sa.func.count())
                .where(dead_letters.c.replayed_at.is_(None)).group_by(dead_letters.c.area)):
            dead_total += int(n)
            if area in rows:
                rows[area].dead_letters = int(n)

        overdue = await _overdue_list(conn, now)
        dead = await _dead_letter_list(conn)
    return Overview(now, list(rows.values()), overdue, dead, dead_total)


async def _overdue_list(conn: AsyncConnection, now: dt.datetime) -> list[OverdueItem]:
    """Latest-due first, per deadline: the top keys come from the partial index alone (it holds
    the due time and, on SQLite, the row id), and only those rows are then read for their ids."""
    items: list[OverdueItem] = []
    for name, (due, met) in DEADLINE_COLUMNS.items():
        top = (sa.select(cases.c.pk).where(*_waiting_past(due, met, now))
               .order_by(due.desc()).limit(OVERDUE_LIST_LIMIT))
        rows = await conn.execute(sa.select(cases.c.referral_id, cases.c.area, due)
                                  .where(cases.c.pk.in_(top.scalar_subquery())))
        items += [OverdueItem(rid, area, name, at) for rid, area, at in rows]
    items.sort(key=lambda i: i.due_at, reverse=True)
    return items[:OVERDUE_LIST_LIMIT]


async def _dead_letter_list(conn: AsyncConnection) -> list[DeadLetterItem]:
    rows = await conn.execute(
        sa.select(dead_letters.c.id, dead_letters.c.referral_id, dead_letters.c.area,
                  dead_letters.c.reason, dead_letters.c.attempts, dead_letters.c.created_at)
        .where(dead_letters.c.replayed_at.is_(None))
        .order_by(dead_letters.c.id).limit(DEAD_LETTER_LIST_LIMIT))
    return [DeadLetterItem(int(i), rid, area, _reason_code(reason), int(attempts), at)
            for i, rid, area, reason, attempts, at in rows]


def _reason_code(reason: str) -> str:
    """A dead letter's reason as a code (`http_503`, `timeout`), never its free-text details."""
    head = reason.split(":", 1)[0].strip()
    return head if _CODE.fullmatch(head) else "other"


# --- case lookup ---------------------------------------------------------------------------------

_CASE_COLUMNS = (
    cases.c.referral_id, cases.c.kela_reference, cases.c.state, cases.c.area, cases.c.kind,
    cases.c.urgency, cases.c.received_at, cases.c.delivered_at, cases.c.first_reply_at,
    cases.c.closed_at, cases.c.ack_due_at, cases.c.acknowledged_at, cases.c.assessment_due_at,
    cases.c.assessment_started_at, cases.c.decision_due_at, cases.c.decided_at,
)


async def find_cases(ledger: Ledger, settings: Settings, q: str) -> list[dict[str, Any]]:
    """By referral id (unique index), else by Kela reference among the configured Kela senders
    (the unique index on (sender, kela_reference)). Never the referral body."""
    select = sa.select(*_CASE_COLUMNS)
    as_id = q.lower()
    if not is_referral_id(as_id) and _KELA_REFERENCE.fullmatch(q) is None:
        # Neither an id nor a reference could be this (a NUL byte, which PostgreSQL refuses in
        # text, any control character, spaces): nothing to look up.
        return []
    async with ledger.engine.connect() as conn:
        if is_referral_id(as_id):
            row = (await conn.execute(select.where(cases.c.referral_id == as_id))).mappings().first()
            if row is not None:
                return [dict(row)]
        senders = sorted(p.id for p in settings.parties if p.role == "kela")
        if not senders:
            return []
        rows = (await conn.execute(
            select.where(cases.c.sender.in_(senders), cases.c.kela_reference == q)
            .order_by(cases.c.received_at).limit(20))).mappings().all()
    return [dict(r) for r in rows]


# The shape of schemas.models.Key, which every stored Kela reference has.
_KELA_REFERENCE = re.compile(r"[A-Za-z0-9._:/-]{1,128}")


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# Data keys of events that are codes, shown in the timeline; anything else (a reply's message, a
# question, a reason in words, a worker's name) never leaves the ledger through this page.
_EVENT_CODE_KEYS = ("deadline", "via", "from_area", "to_area")


async def case_timeline(ledger: Ledger, referral_id: str) -> list[dict[str, Any]]:
    async with ledger.engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(events.c.type, events.c.at, events.c.area, events.c.actor, events.c.data)
            .where(events.c.referral_id == referral_id).order_by(events.c.seq))).all()
    timeline = []
    for type_, at, area, actor, raw in rows:
        data = json.loads(raw) if raw else {}
        detail: list[tuple[str, str]] = []
        reply = data.get("reply")
        if isinstance(reply, dict) and isinstance(reply.get("status"), str):
            detail.append(("reply_status", reply["status"]))
        for key in _EVENT_CODE_KEYS:
            value = data.get(key)
            if isinstance(value, str) and _CODE.fullmatch(value):
                detail.append((key, value))
        if type_ == "delivery_failed" and isinstance(data.get("reason"), str):
            detail.append(("reason", _reason_code(data["reason"])))
        if isinstance(data.get("dead_letter_id"), int):
            detail.append(("dead_letter_id", str(data["dead_letter_id"])))
        timeline.append({"type": type_, "at": at, "area": area, "actor": actor, "detail": detail})
    return timeline


# --- statistics page (all areas combined) --------------------------------------------------


def _combine(values: Iterable[int | None]) -> int | None:
    """The sum of per-area published counts, or None when any of them is hidden: a combined total
    next to the published areas would otherwise give a hidden area's count away by subtraction."""
    total = 0
    for value in values:
        if value is None:
            return None
        total += value
    return total


async def _monthly_first_reply(ledger: Ledger, query: StatsQuery,
                               ) -> dict[str, dict[str, float | None]]:
    """month -> {median, p90} hours to first reply over all the query's areas together, by the
    same percentile_cont as § 11 (index ix_cases_month_area_reply); null under five cases."""
    hours = (cases.c.first_reply_s / 3600.0).label("h")
    where = (cases.c.received_month.in_(query.months), cases.c.area.in_(query.areas),
             cases.c.first_reply_s.is_not(None))
    async with ledger.engine.connect() as conn:
        by_month = await percentile_cont(conn, hours, fractions=(0.5, 0.9),
                                         group_by=(cases.c.received_month,), where=where)
    found = {key[0]: (n, p50, p90) for key, (n, (p50, p90)) in by_month.items()}
    out: dict[str, dict[str, float | None]] = {}
    for month, (n, p50, p90) in found.items():
        shown = n >= STATS_SMALL
        out[month] = {"median": round(p50, 1) if shown and p50 is not None else None,
                      "p90": round(p90, 1) if shown and p90 is not None else None}
    return out


async def load_statistics(ledger: Ledger, classification: Classification, query: StatsQuery, *,
                          combined: bool, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One row per month: `compute_statistics`'s row itself for a single area, or, for all areas
    combined, the sums of its published counts (see `_combine`) and the percentiles over all."""
    rows = await compute_statistics(ledger, classification, query, now=now)
    if not combined:
        return rows
    by_month: dict[str, list[dict[str, Any]]] = {m: [] for m in query.months}
    for row in rows:
        by_month[row["month"]].append(row)
    latency = await _monthly_first_reply(ledger, query) if query.areas else {}
    out = []
    for month, group in by_month.items():
        out.append({
            "month": month, "area": None,
            "referrals": _combine(r["referrals"] for r in group),
            "overdue": _combine(r["overdue"] for r in group),
            "first_reply_hours": latency.get(month, {"median": None, "p90": None}),
            **{name: {key: _combine(r[name][key] for r in group) for key in keys}
               for name, keys in BREAKDOWNS},
        })
    return out


BREAKDOWNS: tuple[tuple[str, list[str]], ...] = (
    ("outcomes", [o.value for o in Outcome]),
    ("findings", [f.value for f in Finding]),
    ("referral_quality", [q.value for q in ReferralQuality]),
)
