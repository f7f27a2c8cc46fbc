"""The bench's report on the terminal."""

from __future__ import annotations

import os
from collections.abc import Sequence

from broker.devtools.bench.results import (
    _RSS_EVERY_S,
    TARGET_P99_MS,
    TARGET_RATIO,
    TARGET_RSS_GROWTH,
    BenchResult,
)


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def render_report(result: BenchResult) -> str:
    met = result.targets_met()
    procs = f"{result.processes} service process{'es' if result.processes > 1 else ''}"
    f, s = result.fixed, result.saturation
    lines = [
        f"handoff bench: {procs}, PostgreSQL + RabbitMQ, {os.cpu_count()} CPUs",
        f"  ceiling (aio-pika, confirms, quorum, acks)  {result.ceiling_per_s:9.1f} msg/s",
        f"  end to end at saturation                    {result.end_to_end_per_s:9.1f} referrals/s"
        f"   ({result.count} referrals, {result.concurrency} clients)",
        f"  ratio                                       {result.ratio:9.3f}"
        f"   target >= {TARGET_RATIO:.2f}  {_mark(met['ratio'])}",
        f"  accept -> delivered at {result.offered_rate_per_s:g}/s offered"
        f" ({result.fixed_rate_s:g} s, {result.fixed_delivered_per_s:.1f}/s delivered)",
        f"      p50 {f.p50_ms:7.1f} ms   p95 {f.p95_ms:7.1f} ms   p99 {f.p99_ms:7.1f} ms"
        f"   max {f.max_ms:7.1f} ms   target p99 <= {TARGET_P99_MS:g} ms  {_mark(met['p99'])}",
        f"      POST -> 202 p50 {result.fixed_post.p50_ms:7.1f} ms   p99 {result.fixed_post.p99_ms:7.1f} ms",
        "  accept -> delivered at saturation",
        f"      p50 {s.p50_ms:7.1f} ms   p95 {s.p95_ms:7.1f} ms   p99 {s.p99_ms:7.1f} ms"
        f"   max {s.max_ms:7.1f} ms",
        f"  service RSS   boot {result.rss_boot_mb:.1f} MB   start {result.rss_start_mb:.1f} MB"
        f"   end {result.rss_end_mb:.1f} MB   ({result.rss_growth * 100:+.1f} %,"
        f" target < {TARGET_RSS_GROWTH * 100:.0f} %  {_mark(met['rss_growth'])})",
        f"  CPU per referral at saturation   service {result.cpu_ms_per_referral:.2f} ms,"
        f" this bench {result.bench_cpu_ms_per_referral:.2f} ms,"
        f" whole machine {result.machine_cpu_ms_per_referral:.2f} ms"
        f" (ceiling: {result.machine_cpu_ms_per_message:.2f} ms per message)",
    ]
    if len(result.rss_samples_mb) > 2:
        shown = " ".join(f"{v:.0f}" for v in _thin(result.rss_samples_mb, 24))
        lines.append(f"  RSS every {_RSS_EVERY_S:g} s (MB): {shown}")
    problems = []
    if result.http_errors:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(result.http_error_kinds.items()))
        problems.append(f"{result.http_errors} POSTs not accepted ({kinds})")
    if result.undelivered:
        problems.append(f"{result.undelivered} accepted referrals not delivered in time")
    if result.duplicate_deliveries:
        problems.append(f"{result.duplicate_deliveries} duplicate webhook deliveries")
    if problems:
        lines.append("  ! " + "; ".join(problems))
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)


def _thin(values: Sequence[float], most: int) -> list[float]:
    if len(values) <= most:
        return list(values)
    step = (len(values) - 1) / (most - 1)
    return [values[round(i * step)] for i in range(most)]
