"""The one percentile_cont stand-in (`broker.store.percentiles`) against PostgreSQL's own.

The same rows go into SQLite and PostgreSQL; the helper answers from SQLite (window query plus
`interpolate`) and must give what `percentile_cont` gives on PostgreSQL, group by group.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from broker.store.percentiles import interpolate, percentile_cont

FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.9, 0.99, 1.0)

_rng = random.Random(16)
GROUPS: dict[str, list[float]] = {
    "one": [7.5],
    "two": [1.0, 2.0],
    "three": [10.0, 1.0, 2.0],
    "five": [10.0, 11.0, 12.0, 13.0, 14.0],
    "ties": [3.0, 3.0, 3.0, 1.0, 9.0, 9.0],
    "eleven": [float(h) for h in (10, 11, 12, 13, 14, 15, 10, 11, 12, 13, 14)],
    "random": [round(_rng.uniform(0, 500), 3) for _ in range(257)],
}


def test_interpolate_is_linear_between_the_ranks_around_p_times_n_minus_1() -> None:
    ranks = {1: 10.0, 2: 11.0, 3: 12.0, 4: 13.0, 5: 14.0}
    assert interpolate(ranks, 5, 0.5) == 12.0
    assert interpolate(ranks, 5, 0.9) == pytest.approx(13.6)
    assert interpolate(ranks, 5, 1.0) == 14.0  # no rank 6: the last value itself
    assert interpolate({1: 7.5}, 1, 0.9) == 7.5


def test_interpolate_refuses_a_missing_lower_rank_and_bad_arguments() -> None:
    with pytest.raises(LookupError):
        interpolate({4: 13.0}, 5, 0.5)  # rank 3 was not fetched: a query bug, not a null
    with pytest.raises(ValueError):
        interpolate({}, 0, 0.5)
    with pytest.raises(ValueError):
        interpolate({1: 1.0}, 1, 1.5)


_table = sa.Table(f"pct_{uuid.uuid4().hex[:8]}", sa.MetaData(),
                  sa.Column("grp", sa.String(16), nullable=False),
                  sa.Column("v", sa.Float, nullable=False))


async def _filled(url: str) -> AsyncEngine:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_table.metadata.create_all)
        await conn.execute(_table.insert(), [{"grp": g, "v": v} for g, vs in GROUPS.items() for v in vs])
    return engine


@pytest.fixture
async def engines(tmp_path: Path, pg_database: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    sqlite = await _filled(f"sqlite+aiosqlite:///{tmp_path / 'pct.db'}")
    postgres = await _filled(pg_database)
    yield sqlite, postgres
    async with postgres.begin() as conn:
        await conn.run_sync(_table.metadata.drop_all)
    await sqlite.dispose()
    await postgres.dispose()


async def test_sqlite_stand_in_matches_postgresql_percentile_cont(engines) -> None:
    sqlite, postgres = engines
    async with sqlite.connect() as conn:
        mine = await percentile_cont(conn, _table.c.v, fractions=FRACTIONS, group_by=(_table.c.grp,))
    async with postgres.connect() as conn:
        theirs = await percentile_cont(conn, _table.c.v, fractions=FRACTIONS, group_by=(_table.c.grp,))
        # and PostgreSQL's own, written out, so the helper's PostgreSQL branch is pinned too
        native = {row[0]: row[1:] for row in await conn.execute(sa.select(
            _table.c.grp, *(sa.func.percentile_cont(p).within_group(_table.c.v) for p in FRACTIONS),
        ).group_by(_table.c.grp))}
    assert set(mine) == set(theirs) == {(g,) for g in GROUPS}
    for (group,), (n, values) in mine.items():
        assert n == len(GROUPS[group]) == theirs[(group,)][0]
        assert values == pytest.approx(theirs[(group,)][1], rel=1e-12), group
        assert values == pytest.approx(tuple(native[group]), rel=1e-12), group


async def test_no_groups_and_a_filter(engines) -> None:
    sqlite, postgres = engines
    answers = []
    for engine in (sqlite, postgres):
        async with engine.connect() as conn:
            answers.append(await percentile_cont(conn, _table.c.v, fractions=(0.5, 0.9),
                                                 where=(_table.c.grp.in_(["five", "ties"]),)))
            assert await percentile_cont(conn, _table.c.v, fractions=(0.5,),
                                         where=(_table.c.grp == "none",)) == {}
    assert set(answers[0]) == {()}
    assert answers[0][()][0] == answers[1][()][0] == 11
    assert answers[0][()][1] == pytest.approx(answers[1][()][1], rel=1e-12)
