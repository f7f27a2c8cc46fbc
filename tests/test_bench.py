"""`handoff bench`: a smoke run with tiny numbers on the real PostgreSQL and RabbitMQ.

Nothing here is timed: the figures only have to be there, positive and consistent. The run goes through
the CLI (`python -m broker.cli bench --json`), so the command's wiring and its JSON are what is tested.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from broker.bench import BenchResult, Latency, percentile, render_report
from tests.conftest import _port_open, missing_service

KEYS = ("ceiling_per_s", "end_to_end_per_s", "ratio", "p50_ms", "p95_ms", "p99_ms",
        "rss_start_mb", "rss_end_mb")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_bench_json_smoke() -> None:
    if not _port_open("127.0.0.1", 5432):
        missing_service("PostgreSQL on 127.0.0.1:5432")
    if not _port_open("127.0.0.1", 5672):
        missing_service("RabbitMQ on 127.0.0.1:5672")
    run = subprocess.run(
        [sys.executable, "-m", "broker.cli", "bench", "--json", "--count", "50", "--duration", "2",
         "--rate", "20", "--concurrency", "8"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout)
    for key in KEYS:
        assert isinstance(figures[key], int | float) and figures[key] > 0, (key, figures[key])
    assert figures["ratio"] == pytest.approx(figures["end_to_end_per_s"] / figures["ceiling_per_s"],
                                             rel=1e-3)
    assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    assert figures["http_errors"] == 0
    assert figures["undelivered"] == 0
    assert figures["processes"] == 1


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0
    lat = Latency.of([0.010, 0.020, 0.030])
    assert (lat.p50_ms, lat.p99_ms, lat.max_ms, lat.count) == pytest.approx((20.0, 30.0, 30.0, 3))


def test_report_and_json_agree() -> None:
    lat = Latency(10.0, 20.0, 30.0, 40.0, 100)
    result = BenchResult(
        ceiling_per_s=4000.0, end_to_end_per_s=1000.0, fixed=lat, fixed_post=lat, saturation=lat,
        offered_rate_per_s=200.0, fixed_rate_s=15.0, fixed_delivered_per_s=199.0, rss_boot_mb=90.0,
        rss_start_mb=100.0, rss_end_mb=105.0, rss_samples_mb=(100.0, 103.0, 105.0), count=3000,
        concurrency=32, processes=1, http_errors=0, undelivered=0, duplicate_deliveries=0)
    doc = result.as_json()
    assert list(doc)[:len(KEYS)] == list(KEYS)
    assert doc["ratio"] == 0.25 and doc["rss_growth_pct"] == 5.0
    assert doc["targets_met"] == {"ratio": False, "p99": True, "rss_growth": True}
    report = render_report(result)
    assert "0.250" in report and "MISSED" in report and "+5.0 %" in report
