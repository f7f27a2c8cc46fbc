"""Scale-out: the same bench once per process count, and its table."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from broker.devtools.bench.end_to_end import run_bench
from broker.devtools.bench.report import render_report
from broker.devtools.bench.results import BenchError, BenchOptions, BenchResult


def parse_process_counts(text: str) -> tuple[int, ...]:
    """`2` or `1,2`: the process counts to measure, in the order given (the first is the baseline)."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BenchError(f"--processes takes a count or a list such as 1,2, not {text!r}") from None
    if any(n < 1 for n in counts):
        raise BenchError("every process count must be at least 1")
    if len(set(counts)) != len(counts):
        raise BenchError(f"--processes lists a count twice: {text!r}")
    return counts


@dataclass(frozen=True)
class Scaling:
    """The same bench once per process count: does a second process add throughput on this machine?"""

    runs: tuple[BenchResult, ...]

    def speedup(self, result: BenchResult) -> float:
        """Throughput at saturation relative to the first count's run."""
        base = self.runs[0].end_to_end_per_s
        return result.end_to_end_per_s / base if base else 0.0

    @staticmethod
    def cores_busy(result: BenchResult) -> float:
        """How many CPUs the whole machine kept busy at saturation (service, PostgreSQL, RabbitMQ and
        this bench together): near the CPU count, a further process can only share, not add."""
        return result.machine_cpu_ms_per_referral * result.end_to_end_per_s / 1000

    def as_json(self) -> dict[str, Any]:
        return {
            "scaling": [{
                "processes": r.processes,
                "end_to_end_per_s": round(r.end_to_end_per_s, 2),
                "speedup": round(self.speedup(r), 3),
                "cpu_ms_per_referral": round(r.cpu_ms_per_referral, 3),
                "machine_cpu_ms_per_referral": round(r.machine_cpu_ms_per_referral, 3),
                "machine_cores_busy": round(self.cores_busy(r), 2),
                "http_errors": r.http_errors,
                "undelivered": r.undelivered,
            } for r in self.runs],
            "cpus": os.cpu_count(),
            "runs": [r.as_json() for r in self.runs],
        }


async def run_scaling(options: BenchOptions, counts: Sequence[int], *, show_progress: bool = False,
                      on_started: Callable[[list[int]], None] = lambda _pids: None) -> Scaling:
    """One full bench per count, one after the other, so that the runs never share the machine."""
    if not counts:
        raise BenchError("no process count given")
    if max(counts) > 1 and options.store_url and options.store_url.startswith("sqlite"):
        # Before the first run, not after it: the same check as run_bench's.
        raise BenchError("several service processes need PostgreSQL (SQLite has one writer)")
    runs = [await run_bench(dataclasses.replace(options, processes=n), show_progress=show_progress,
                            on_started=on_started) for n in counts]
    return Scaling(tuple(runs))


def render_scaling(scaling: Scaling) -> str:
    first = scaling.runs[0]
    base = f"{first.processes} process{'es' if first.processes > 1 else ''}"
    lines = [f"scale-out: end to end at saturation ({first.count} referrals, {first.concurrency} clients,"
             f" {os.cpu_count()} CPUs), each run on a fresh database and vhost"]
    for r in scaling.runs:
        procs = f"{r.processes} process{'es' if r.processes > 1 else ''}"
        growth = scaling.speedup(r)
        lines.append(
            f"  {procs:<12} {r.end_to_end_per_s:9.1f} referrals/s   x{growth:.2f} vs {base}"
            f" ({(growth - 1) * 100:+.0f} %)   service CPU {r.cpu_ms_per_referral:.2f} ms/referral,"
            f" machine busy {scaling.cores_busy(r):.1f} CPUs")
    return "\n\n".join([*(render_report(r) for r in scaling.runs), "\n".join(lines)])
