"""The bench's options, its result and the targets it is judged by (issue 5)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"

# Targets of issue 5 on the 2-core reference machine.
TARGET_RATIO = 0.40
TARGET_P99_MS = 250.0
TARGET_RSS_GROWTH = 0.10
# How often the fixed-rate run reads the service's RSS (the report prints the samples).
_RSS_EVERY_S = 5.0


class BenchError(RuntimeError):
    """The bench could not set up or measure; the message says what to fix."""


@dataclass(frozen=True)
class BenchOptions:
    store_url: str | None = None
    """None: a fresh database on 127.0.0.1:5432, created and dropped by the bench."""
    amqp_url: str = DEFAULT_AMQP_URL
    count: int = 3000
    rate: float = 200.0
    duration_s: float = 15.0
    concurrency: int = 32
    soak_minutes: float = 0.0
    processes: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or self.concurrency < 1 or self.processes < 1:
            raise BenchError("count, concurrency and processes must be at least 1")
        if self.rate <= 0 or self.duration_s <= 0 or self.soak_minutes < 0:
            raise BenchError("rate and duration must be positive, soak not negative")

    @property
    def fixed_rate_s(self) -> float:
        return self.soak_minutes * 60 if self.soak_minutes > 0 else self.duration_s

    @property
    def warmup_count(self) -> int:
        return min(self.count, max(2 * self.concurrency, self.count // 10))


@dataclass(frozen=True)
class Latency:
    """Accept -> delivered, in milliseconds, over the referrals delivered in one phase."""

    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    count: int

    @classmethod
    def of(cls, values_s: Sequence[float]) -> Latency:
        ordered = sorted(v * 1000 for v in values_s)
        if not ordered:
            return cls(0.0, 0.0, 0.0, 0.0, 0)
        return cls(percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99),
                   ordered[-1], len(ordered))


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class BenchResult:
    ceiling_per_s: float
    end_to_end_per_s: float
    fixed: Latency
    fixed_post: Latency
    """POST -> 202 at the fixed rate: how much of accept -> delivered is spent before the 202."""
    saturation: Latency
    offered_rate_per_s: float
    fixed_rate_s: float
    fixed_delivered_per_s: float
    rss_boot_mb: float
    rss_start_mb: float
    rss_end_mb: float
    rss_samples_mb: tuple[float, ...]
    count: int
    concurrency: int
    processes: int
    http_errors: int
    undelivered: int
    duplicate_deliveries: int
    notes: tuple[str, ...] = ()
    cpu_ms_per_referral: float = 0.0
    """The service's CPU time (user + system, all processes) per referral in the saturation run:
    steadier than throughput on a machine that other work shares."""
    http_error_kinds: dict[str, int] = field(default_factory=dict)
    machine_cpu_ms_per_message: float = 0.0
    """Machine-wide CPU per message of the ceiling run."""
    machine_cpu_ms_per_referral: float = 0.0
    """Machine-wide CPU per referral of the saturation run; with both runs CPU-bound, the ratio is
    about machine_cpu_ms_per_message / machine_cpu_ms_per_referral."""
    bench_cpu_ms_per_referral: float = 0.0
    """This process (clients and webhook receiver), which shares the machine with the service."""

    @property
    def ratio(self) -> float:
        return self.end_to_end_per_s / self.ceiling_per_s if self.ceiling_per_s else 0.0

    @property
    def rss_growth(self) -> float:
        return (self.rss_end_mb - self.rss_start_mb) / self.rss_start_mb if self.rss_start_mb else 0.0

    def targets_met(self) -> dict[str, bool]:
        return {"ratio": self.ratio >= TARGET_RATIO, "p99": self.fixed.p99_ms <= TARGET_P99_MS,
                "rss_growth": self.rss_growth < TARGET_RSS_GROWTH}

    def as_json(self) -> dict[str, Any]:
        """One flat object; the keys of issue 5 first. p50/p95/p99 are at the fixed offered rate."""
        ceiling, e2e = round(self.ceiling_per_s, 2), round(self.end_to_end_per_s, 2)
        return {
            "ceiling_per_s": ceiling,
            "end_to_end_per_s": e2e,
            "ratio": round(e2e / ceiling, 6) if ceiling else 0.0,
            "p50_ms": round(self.fixed.p50_ms, 2),
            "p95_ms": round(self.fixed.p95_ms, 2),
            "p99_ms": round(self.fixed.p99_ms, 2),
            "rss_start_mb": round(self.rss_start_mb, 2),
            "rss_end_mb": round(self.rss_end_mb, 2),
            "saturation_p50_ms": round(self.saturation.p50_ms, 2),
            "saturation_p95_ms": round(self.saturation.p95_ms, 2),
            "saturation_p99_ms": round(self.saturation.p99_ms, 2),
            "fixed_max_ms": round(self.fixed.max_ms, 2),
            "fixed_post_p50_ms": round(self.fixed_post.p50_ms, 2),
            "fixed_post_p99_ms": round(self.fixed_post.p99_ms, 2),
            "saturation_max_ms": round(self.saturation.max_ms, 2),
            "offered_rate_per_s": self.offered_rate_per_s,
            "fixed_rate_s": self.fixed_rate_s,
            "fixed_delivered_per_s": round(self.fixed_delivered_per_s, 2),
            "rss_boot_mb": round(self.rss_boot_mb, 2),
            "rss_growth_pct": round(self.rss_growth * 100, 2),
            "rss_samples_mb": [round(s, 1) for s in self.rss_samples_mb],
            "count": self.count,
            "concurrency": self.concurrency,
            "processes": self.processes,
            "http_errors": self.http_errors,
            "http_error_kinds": dict(self.http_error_kinds),
            "cpu_ms_per_referral": round(self.cpu_ms_per_referral, 3),
            "machine_cpu_ms_per_message": round(self.machine_cpu_ms_per_message, 3),
            "machine_cpu_ms_per_referral": round(self.machine_cpu_ms_per_referral, 3),
            "bench_cpu_ms_per_referral": round(self.bench_cpu_ms_per_referral, 3),
            "undelivered": self.undelivered,
            "duplicate_deliveries": self.duplicate_deliveries,
            "targets_met": self.targets_met(),
            "notes": list(self.notes),
        }
