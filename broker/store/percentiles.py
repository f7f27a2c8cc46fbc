"""`percentile_cont` on both stores: PostgreSQL's own, and the same interpolation on SQLite.

SQLite has no ordered-set aggregates. There a window query numbers each group's values and
returns only the (at most two per fraction) order statistics that percentile_cont interpolates
between; `interpolate` does the rest in Python with PostgreSQL's formula: for n values in order
and a fraction p, the position is p * (n - 1) counted from 0, and the result lies on the straight
line between the values at floor and ceil of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["GroupPercentiles", "interpolate", "percentile_cont"]

# group key (the values of `group_by`, in order) -> (n, one value per fraction)
GroupPercentiles = dict[tuple[Any, ...], tuple[int, tuple[float, ...]]]


def interpolate(by_rank: Mapping[int, float], n: int, p: float) -> float:
    """percentile_cont of n ordered values, given at least those at the 1-based ranks around
    1 + p * (n - 1). A missing lower rank is a query that fetched the wrong rows: LookupError, never
    a quiet null. A missing upper rank is fine (the position is the last value)."""
    if n < 1 or not 0.0 <= p <= 1.0:
        raise ValueError("percentile_cont needs n >= 1 and 0 <= p <= 1")
    pos = (n - 1) * p
    low = math.floor(pos)
    if low + 1 not in by_rank:
        raise LookupError(f"rank {low + 1} of {n} was not fetched")
    a = by_rank[low + 1]
    b = by_rank.get(low + 2, a)
    return a + (pos - low) * (b - a)


async def percentile_cont(conn: AsyncConnection, value: sa.ColumnElement[Any], *,
                          fractions: Sequence[float], group_by: Sequence[sa.ColumnElement[Any]] = (),
                          where: Sequence[sa.ColumnElement[bool]] = ()) -> GroupPercentiles:
    """(n, percentile_cont(p) WITHIN GROUP (ORDER BY value) for each p) per group of `group_by`
    over the rows `where` selects; groups with no row are absent. `value` must not be null."""
    if conn.dialect.name == "postgresql":
        rows = await conn.execute(
            sa.select(*group_by, sa.func.count(),
                      *(sa.func.percentile_cont(p).within_group(value) for p in fractions))
            .where(*where).group_by(*group_by))
        out: GroupPercentiles = {}
        for row in rows:
            key, (n, *values) = tuple(row[:len(group_by)]), row[len(group_by):]
            if n:  # without group_by, no rows still make one row of nulls
                out[key] = (int(n), tuple(float(v) for v in values))
        return out
    # Both windows share one definition, so each group's values are sorted once.
    selected = sa.select(*(g.label(f"g{i}") for i, g in enumerate(group_by)), value.label("v")) \
        .where(*where).subquery("selected")
    keys = [selected.c[f"g{i}"] for i in range(len(group_by))]
    window: dict[str, Any] = {"partition_by": keys or None, "order_by": selected.c.v}
    ranked = sa.select(
        *keys, selected.c.v,
        sa.func.row_number().over(**window).label("rn"),
        sa.func.count().over(**window, rows=(None, None)).label("n"),
    ).subquery("ranked")
    wanted = []
    for p in fractions:
        low = sa.cast((ranked.c.n - 1) * p, sa.Integer) + 1  # 1-based rank of floor(p * (n - 1))
        wanted += [ranked.c.rn == low, ranked.c.rn == low + 1]
    ranked_keys = [ranked.c[f"g{i}"] for i in range(len(group_by))]
    rows = await conn.execute(sa.select(*ranked_keys, ranked.c.n, ranked.c.rn, ranked.c.v)
                              .where(sa.or_(*wanted)))
    ranks: dict[tuple[Any, ...], tuple[int, dict[int, float]]] = {}
    for row in rows:
        key, (n, rn, v) = tuple(row[:len(group_by)]), row[len(group_by):]
        ranks.setdefault(key, (int(n), {}))[1][int(rn)] = float(v)
    return {key: (n, tuple(interpolate(by_rank, n, p) for p in fractions))
            for key, (n, by_rank) in ranks.items()}
