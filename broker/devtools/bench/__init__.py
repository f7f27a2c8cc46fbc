"""`handoff bench`, moved whole into `end_to_end` on the way to one module per part (issue 16)."""

from broker.devtools.bench.end_to_end import (
    BenchError,
    BenchOptions,
    BenchResult,
    Latency,
    Scaling,
    parse_process_counts,
    percentile,
    render_report,
    render_scaling,
    run_bench,
    run_scaling,
)

__all__ = [
    "BenchError",
    "BenchOptions",
    "BenchResult",
    "Latency",
    "Scaling",
    "parse_process_counts",
    "percentile",
    "render_report",
    "render_scaling",
    "run_bench",
    "run_scaling",
]
