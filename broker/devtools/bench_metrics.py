"""`handoff bench metrics`: seed a ledger with many cases and time a /metrics scrape.

The gauges are computed from the ledger at scrape time (DESIGN § 8), so what must stay cheap is the
aggregate queries at a million cases. Seeding writes synthetic, personal-data-free rows straight into
the cases table (no referral body), with a realistic mix: most cases long closed, a tail still open.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from prometheus_client import generate_latest

from broker.domain.workdays import helsinki_date
from broker.observability.metrics import Metrics
from broker.store.ledger import Ledger
from broker.store.tables import cases

__all__ = ["MetricsBenchResult", "StatsBenchResult", "bench_scrape", "bench_statistics", "seed_cases"]

AREAS = [f"{i:02d}" for i in range(1, 22)] + ["90", "91"]
# (state, share): what a ledger looks like after a few years of traffic.
STATE_MIX = [("closed", 0.86), ("in_progress", 0.05), ("acknowledged", 0.03), ("delivered", 0.03),
             ("info_requested", 0.01), ("routed", 0.005), ("unroutable", 0.005), ("failed", 0.01)]
OUTCOMES = ["services_arranged", "client_declined", "no_need", "unreachable", "moved", "other"]
QUALITY = ["sufficient", "sufficient", "insufficient_information", "not_needed"]
KINDS = ["support_need", "support_need_without_consent", "application_transfer",
         "basic_amount_reduction", "urgent_assistance"]


@dataclass(frozen=True)
class MetricsBenchResult:
    store: str
    cases: int
    scrapes: int
    median_ms: float
    p95_ms: float
    max_ms: float
    series: int


def _rows(n: int, start: int, rng: random.Random, now: dt.datetime, *, sender: str = "bench",
          history_days: int = 3 * 365) -> list[dict[str, Any]]:
    states, weights = zip(*STATE_MIX, strict=True)
    rows = []
    for i in range(start, start + n):
        state = rng.choices(states, weights)[0]
        # Closed cases span three years; cases still open arrived in the last six weeks.
        span = history_days * 86400 if state in ("closed", "failed", "unroutable") else 42 * 86400
        received = now - dt.timedelta(seconds=rng.randint(0, span))
        delivered = received + dt.timedelta(seconds=rng.randint(1, 600)) if state != "routed" else None
        replied = (delivered + dt.timedelta(hours=rng.randint(1, 200))
                   if delivered and state not in ("delivered", "failed", "unroutable") else None)
        rows.append({
            "referral_id": str(uuid.UUID(int=rng.getrandbits(128))), "sender": sender,
            "kela_reference": f"{sender.upper()}-{i}", "body_sha256": "0" * 64, "kind": rng.choice(KINDS),
            "urgency": "urgent" if rng.random() < 0.1 else "normal", "state": state,
            "area": rng.choice(AREAS), "municipality_code": "837", "received_at": received,
            "state_changed_at": received, "delivered_at": delivered, "first_reply_at": replied,
            "acknowledged_at": replied, "assessment_started_at": replied if state == "closed" else None,
            "decided_at": replied if state == "closed" else None,
            "closed_at": replied if state == "closed" else None,
            "ack_due_at": received + dt.timedelta(days=4),
            "assessment_due_at": received + dt.timedelta(days=9),
            "decision_due_at": None, "escalated": "", "return_count": 0, "areas_tried": "",
            "received_month": f"{helsinki_date(received):%Y-%m}", "reroute_count": 0,
            "first_reply_s": int((replied - received).total_seconds()) if replied else None,
            "needs_mask": rng.getrandbits(4) | 1,
            "findings_mask": rng.getrandbits(3) if state == "closed" else 0,
            "outcome": rng.choice(OUTCOMES) if state == "closed" else None,
            "referral_quality": rng.choice(QUALITY) if replied else None,
            "feedback_rating": rng.randint(1, 5) if state == "closed" and rng.random() < 0.4 else None,
            "unroutable_reason": None, "referral_json": None,
        })
    return rows


async def seed_cases(ledger: Ledger, count: int, *, batch: int = 20_000, seed: int = 1,
                     progress: Any = None, sender: str = "bench", history_days: int = 3 * 365) -> int:
    """Add synthetic cases until the ledger holds at least `count`; returns how many were added."""
    async with ledger.engine.connect() as conn:
        have = int((await conn.execute(sa.select(sa.func.count()).select_from(cases))).scalar_one())
    rng = random.Random(seed + have)
    now = dt.datetime.now(dt.UTC)
    added = 0
    while have + added < count:
        n = min(batch, count - have - added)
        async with ledger.transaction() as conn:
            await conn.execute(cases.insert(), _rows(n, have + added, rng, now, sender=sender,
                                                     history_days=history_days))
        added += n
        if progress is not None:
            progress(have + added, count)
    if not ledger.is_postgres and added:
        async with ledger.transaction() as conn:
            await conn.exec_driver_sql("ANALYZE")
    if ledger.is_postgres and added:
        # What autovacuum does on a live system: statistics, and the visibility map that lets the
        # gauge queries run as index-only scans over the partial indexes.
        async with ledger.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("VACUUM ANALYZE cases"))
    return added


async def bench_scrape(ledger: Ledger, *, scrapes: int = 20) -> MetricsBenchResult:
    """Time what a scrape does: the ledger aggregates plus rendering the exposition text."""
    metrics = Metrics()
    timings = []
    body = b""
    for _ in range(scrapes):
        started = time.perf_counter()
        await metrics.gauges.refresh(ledger)
        body = generate_latest(metrics.registry)
        timings.append((time.perf_counter() - started) * 1000)
    async with ledger.engine.connect() as conn:
        total = int((await conn.execute(sa.select(sa.func.count()).select_from(cases))).scalar_one())
    timings.sort()
    series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    return MetricsBenchResult(
        store="postgresql" if ledger.is_postgres else "sqlite", cases=total, scrapes=scrapes,
        median_ms=round(statistics.median(timings), 2),
        p95_ms=round(timings[min(len(timings) - 1, int(len(timings) * 0.95))], 2),
        max_ms=round(timings[-1], 2), series=series)


@dataclass(frozen=True)
class StatsBenchResult:
    store: str
    cases: int
    months: int
    runs: int
    median_ms: float
    max_ms: float
    rows: int


async def bench_statistics(ledger: Ledger, *, months: int = 12, runs: int = 5) -> StatsBenchResult:
    """Time `GET /v1/statistics` over the last `months` months, every area (the § 11 target)."""
    from broker.domain.routing import Classification
    from broker.store.statistics import compute_statistics, parse_stats_query

    classification = Classification.load()
    today = helsinki_date(dt.datetime.now(dt.UTC))
    end = today.year * 12 + today.month - 1
    start = end - months + 1
    params = {"from": f"{start // 12:04d}-{start % 12 + 1:02d}", "to": f"{end // 12:04d}-{end % 12 + 1:02d}"}
    query = parse_stats_query(params, classification, own_area=None)
    timings, rows = [], []
    for _ in range(runs):
        started = time.perf_counter()
        rows = await compute_statistics(ledger, classification, query)
        timings.append((time.perf_counter() - started) * 1000)
    async with ledger.engine.connect() as conn:
        total = int((await conn.execute(sa.select(sa.func.count()).select_from(cases))).scalar_one())
    return StatsBenchResult("postgresql" if ledger.is_postgres else "sqlite", total, months, runs,
                            round(statistics.median(timings), 1), round(max(timings), 1), len(rows))
