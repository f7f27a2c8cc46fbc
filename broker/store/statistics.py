"""Pseudonymous statistics per area and calendar month (DESIGN § 11).

Everything is aggregated in the database, grouped by the case's Finnish month of receipt (stored at
intake) and area; Python only assembles rows and applies small-number suppression. No identity code,
name, free text or case id can reach a row: the queries never select them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.domain.deadlines import ACKNOWLEDGE
from broker.domain.errors import InvalidInput
from broker.domain.months import month_index, month_text
from broker.domain.routing import Classification
from broker.store.ledger import Ledger, utcnow
from broker.store.percentiles import percentile_cont
from broker.store.tables import DEADLINE_COLUMNS, UTCDateTime, cases
from schemas.enums import Finding, Kind, Need, Outcome, ReferralQuality

__all__ = ["CSV_COLUMNS", "StatsQuery", "compute_statistics", "parse_stats_query", "rows_to_csv"]

MAX_MONTHS = 36
SMALL = 5  # counts 1..4 are published as null; statistics over fewer than 5 cases are null

KINDS = [k.value for k in Kind]
NEEDS = [n.value for n in Need]
OUTCOMES = [o.value for o in Outcome]
FINDINGS = [f.value for f in Finding]
QUALITIES = [q.value for q in ReferralQuality]
_COUNTS = ["referrals", "urgent", "returned", "rerouted", "unroutable", "acknowledged_on_time", "overdue"]


@dataclass(frozen=True)
class StatsQuery:
    months: list[str]
    areas: list[str]
    format: str


def _month_index(value: str | None, param: str) -> int:
    index = month_index(value)
    if index is None:
        raise InvalidInput([{"loc": ["query", param], "msg": "must be a month YYYY-MM",
                             "type": "month_format"}])
    return index


def parse_stats_query(params: dict[str, str], classification: Classification, *,
                      own_area: str | None) -> StatsQuery:
    """Validate the query parameters; an intake (own_area) sees its own area only."""
    start = _month_index(params.get("from"), "from")
    end = _month_index(params.get("to"), "to")
    if start > end:
        raise InvalidInput([{"loc": ["query", "from"], "msg": "from is after to", "type": "range"}])
    if end - start + 1 > MAX_MONTHS:
        raise InvalidInput([{"loc": ["query", "to"], "msg": f"at most {MAX_MONTHS} months at once",
                             "type": "range_too_long"}])
    fmt = params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidInput([{"loc": ["query", "format"], "msg": "format must be json or csv",
                             "type": "enum"}])
    area = params.get("area")
    if area is not None and area not in classification.areas:
        raise InvalidInput([{"loc": ["query", "area"], "msg": "unknown area code", "type": "unknown_area"}])
    areas = [area] if area else list(classification.areas)
    if own_area is not None:
        areas = [a for a in areas if a == own_area]
    months = [month_text(i) for i in range(start, end + 1)]
    return StatsQuery(months, areas, fmt)


def _hours() -> sa.ColumnElement[Any]:
    return cases.c.first_reply_s / 3600.0


def _scope(q: StatsQuery) -> sa.ColumnElement[bool]:
    return sa.and_(cases.c.received_month.in_(q.months), cases.c.area.in_(q.areas))


def _int(expr: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.func.sum(sa.case((expr, 1), else_=0))


Cell = tuple[str, str]  # (month, area)


async def _base(conn: AsyncConnection, q: StatsQuery, now: dt.datetime) -> dict[Cell, dict[str, Any]]:
    now_ = sa.literal(now, UTCDateTime())
    late = sa.or_(*(due < sa.func.coalesce(met, now_) for due, met in DEADLINE_COLUMNS.values()))
    ack_due, acknowledged = DEADLINE_COLUMNS[ACKNOWLEDGE]
    rows = await conn.execute(
        sa.select(
            cases.c.received_month, cases.c.area, sa.func.count(),
            _int(cases.c.urgency == "urgent"), _int(cases.c.return_count > 0),
            _int(cases.c.reroute_count > 0), _int(cases.c.state == "unroutable"),
            _int(sa.and_(acknowledged.is_not(None), acknowledged <= ack_due)),
            _int(sa.and_(cases.c.state.not_in(["unroutable", "failed"]), late)),
            sa.func.count(cases.c.feedback_rating), sa.func.avg(cases.c.feedback_rating),
            # One pass over the span: the enumerated breakdowns are conditional sums, not GROUP BYs.
            *(_int(column == value) for column, values in _ENUMERATED for value in values),
            *(_int(mask.op("&")(1 << i) != 0) for mask, values in _MASKS for i in range(len(values))),
        ).where(_scope(q)).group_by(cases.c.received_month, cases.c.area))
    out = {}
    for month, area, *values in rows:
        counts = dict(zip(_COUNTS, (int(v or 0) for v in values[:7]), strict=True))
        rest = iter(int(v or 0) for v in values[9:])
        breakdown = {column.name: {value: next(rest) for value in enum_values}
                     for column, enum_values in [*_ENUMERATED, *_MASKS]}
        out[(month, area)] = {**counts, "feedback_n": int(values[7] or 0),
                              "feedback_mean": float(values[8]) if values[8] is not None else None,
                              "breakdown": breakdown}
    return out


_ENUMERATED: list[tuple[sa.Column[Any], list[str]]] = [
    (cases.c.kind, KINDS), (cases.c.outcome, OUTCOMES), (cases.c.referral_quality, QUALITIES)]
_MASKS: list[tuple[sa.Column[Any], list[str]]] = [
    (cases.c.needs_mask, NEEDS), (cases.c.findings_mask, FINDINGS)]


async def _percentiles(conn: AsyncConnection, q: StatsQuery,
                       ) -> dict[tuple[str, str], tuple[int, float | None, float | None]]:
    """(n, median, p90) of hours to first reply: percentile_cont on both stores."""
    found = await percentile_cont(
        conn, _hours(), fractions=(0.5, 0.9), group_by=(cases.c.received_month, cases.c.area),
        where=(_scope(q), cases.c.first_reply_s.is_not(None)))
    return {(month, area): (n, median, p90) for (month, area), (n, (median, p90)) in found.items()}


def _suppress(value: int, hidden: list[bool]) -> int | None:
    if 0 < value < SMALL:
        hidden.append(True)
        return None
    return value


def _stat(value: float | None, n: int, hidden: list[bool], digits: int = 1) -> float | None:
    if n == 0 or value is None:
        return None
    if n < SMALL:
        hidden.append(True)
        return None
    return round(value, digits)


async def compute_statistics(ledger: Ledger, classification: Classification, q: StatsQuery, *,
                             now: dt.datetime | None = None) -> list[dict[str, Any]]:
    now = now or utcnow()
    if not q.areas:
        return []
    async with ledger.engine.connect() as conn:
        base = await _base(conn, q, now)
        latency = await _percentiles(conn, q)
    rows = []
    for month in q.months:
        for area in q.areas:
            key = (month, area)
            b = base.get(key, {})
            breakdown = b.get("breakdown", {})
            hidden: list[bool] = []

            def counts(keys: Iterable[str], source: dict[str, int], hidden: list[bool] = hidden,
                       ) -> dict[str, int | None]:
                return {k: _suppress(source.get(k, 0), hidden) for k in keys}

            n, median, p90 = latency.get(key, (0, None, None))
            feedback_n = int(b.get("feedback_n", 0))
            row: dict[str, Any] = {
                "area": area, "area_name": classification.areas[area].name_fi, "month": month,
                **{c: _suppress(int(b.get(c, 0)), hidden) for c in _COUNTS[:1]},
                "by_kind": counts(KINDS, breakdown.get("kind", {})),
                "by_need": counts(NEEDS, breakdown.get("needs_mask", {})),
                **{c: _suppress(int(b.get(c, 0)), hidden) for c in _COUNTS[1:]},
                "first_reply_hours": {"median": _stat(median, n, hidden), "p90": _stat(p90, n, hidden)},
                "outcomes": counts(OUTCOMES, breakdown.get("outcome", {})),
                "findings": counts(FINDINGS, breakdown.get("findings_mask", {})),
                "referral_quality": counts(QUALITIES, breakdown.get("referral_quality", {})),
                "client_feedback": {"responses": _suppress(feedback_n, hidden),
                                    "mean_rating": _stat(b.get("feedback_mean"), feedback_n, hidden, 2)},
            }
            row["suppressed"] = bool(hidden)
            rows.append(row)
    return rows


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _csv_columns() -> list[str]:
    sample: dict[str, Any] = {
        "area": 0, "area_name": 0, "month": 0, "referrals": 0, "by_kind": dict.fromkeys(KINDS, 0),
        "by_need": dict.fromkeys(NEEDS, 0), **dict.fromkeys(_COUNTS[1:], 0),
        "first_reply_hours": {"median": 0, "p90": 0}, "outcomes": dict.fromkeys(OUTCOMES, 0),
        "findings": dict.fromkeys(FINDINGS, 0), "referral_quality": dict.fromkeys(QUALITIES, 0),
        "client_feedback": {"responses": 0, "mean_rating": 0}, "suppressed": 0,
    }
    return list(_flatten(sample))


CSV_COLUMNS = _csv_columns()


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        flat = _flatten(row)
        writer.writerow(["" if flat.get(c) is None else
                         ("true" if flat[c] is True else "false" if flat[c] is False else flat[c])
                         for c in CSV_COLUMNS])
    return out.getvalue()
