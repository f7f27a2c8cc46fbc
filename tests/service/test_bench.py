"""`handoff bench`: a smoke run with tiny numbers on the real PostgreSQL and RabbitMQ.

Nothing here is timed: the figures only have to be there, positive and consistent. The run goes through
the CLI (`python -m broker.cli bench --json`), so the command's wiring and its JSON are what is tested.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from broker.devtools.bench import (
    BenchError,
    BenchResult,
    Latency,
    Scaling,
    parse_process_counts,
    percentile,
    render_report,
    render_scaling,
)
from broker.devtools.harness import port_open
from tests.helpers.app import missing_service

KEYS = ("ceiling_per_s", "end_to_end_per_s", "ratio", "p50_ms", "p95_ms", "p99_ms",
        "rss_start_mb", "rss_end_mb")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_bench_json_smoke() -> None:
    if not port_open("127.0.0.1", 5432):
        missing_service("PostgreSQL on 127.0.0.1:5432")
    if not port_open("127.0.0.1", 5672):
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


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_bench_scaling_json_smoke() -> None:
    """`--processes 1,2`: one run per count, and the growth of the second over the first."""
    if not port_open("127.0.0.1", 5432):
        missing_service("PostgreSQL on 127.0.0.1:5432")
    if not port_open("127.0.0.1", 5672):
        missing_service("RabbitMQ on 127.0.0.1:5672")
    run = subprocess.run(
        [sys.executable, "-m", "broker.cli", "bench", "--json", "--processes", "1,2", "--count", "40",
         "--duration", "1", "--rate", "20", "--concurrency", "8"],
        capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(run.stdout)
    assert [row["processes"] for row in doc["scaling"]] == [1, 2]
    assert [r["processes"] for r in doc["runs"]] == [1, 2]
    one, two = doc["scaling"]
    assert one["speedup"] == 1.0
    assert two["end_to_end_per_s"] > 0 and one["end_to_end_per_s"] > 0
    assert two["speedup"] == pytest.approx(two["end_to_end_per_s"] / one["end_to_end_per_s"], rel=1e-2)
    for row, full in zip(doc["scaling"], doc["runs"], strict=True):
        assert row["end_to_end_per_s"] == full["end_to_end_per_s"]
        assert row["http_errors"] == full["http_errors"] == 0
        assert row["undelivered"] == full["undelivered"] == 0
        assert row["machine_cores_busy"] > 0


def test_process_counts_parse() -> None:
    assert parse_process_counts("2") == (2,)
    assert parse_process_counts("1,2") == (1, 2)
    assert parse_process_counts(" 1, 2 ,4") == (1, 2, 4)
    for bad in ("", "0", "1,1", "one", "1,,2"):
        with pytest.raises(BenchError):
            parse_process_counts(bad)


def _result(processes: int, per_s: float, machine_cpu_ms: float) -> BenchResult:
    lat = Latency(10.0, 20.0, 30.0, 40.0, 100)
    return BenchResult(
        ceiling_per_s=4000.0, end_to_end_per_s=per_s, fixed=lat, fixed_post=lat, saturation=lat,
        offered_rate_per_s=200.0, fixed_rate_s=15.0, fixed_delivered_per_s=199.0, rss_boot_mb=90.0,
        rss_start_mb=100.0, rss_end_mb=105.0, rss_samples_mb=(100.0, 105.0), count=3000,
        concurrency=32, processes=processes, http_errors=0, undelivered=0, duplicate_deliveries=0,
        cpu_ms_per_referral=3.9, machine_cpu_ms_per_referral=machine_cpu_ms)


def test_scaling_report_and_json_agree() -> None:
    scaling = Scaling((_result(1, 250.0, 6.0), _result(2, 300.0, 6.4)))
    doc = scaling.as_json()
    assert [(r["processes"], r["end_to_end_per_s"], r["speedup"]) for r in doc["scaling"]] == [
        (1, 250.0, 1.0), (2, 300.0, 1.2)]
    assert [r["machine_cores_busy"] for r in doc["scaling"]] == [1.5, 1.92]
    assert [r["processes"] for r in doc["runs"]] == [1, 2]
    report = render_scaling(scaling)
    assert report.count("handoff bench:") == 2  # both full reports, then the table
    table = report.rsplit("scale-out:", 1)[1]
    assert "1 process " in table and "x1.00 vs 1 process" in table and "(+0 %)" in table
    assert "2 processes" in table and "x1.20 vs 1 process" in table and "(+20 %)" in table
    assert "machine busy 1.5 CPUs" in table and "machine busy 1.9 CPUs" in table


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
