"""`handoff bench`: the raw RabbitMQ ceiling and the end-to-end referral path, measured in one run.

One module per part: `results` (options, result, targets), `progress` (the terminal's progress bar),
`ceiling` (a), `load` (the clients), `environment` (the throw-away database and vhost), `end_to_end`
(b, and the whole run), `report` and `scaling` (`--processes 1,2`). `end_to_end` says how it measures.
Here: the names that `broker.cli.bench` and the tests import.
"""

from broker.devtools.bench.end_to_end import run_bench
from broker.devtools.bench.report import render_report
from broker.devtools.bench.results import BenchError, BenchOptions, BenchResult, Latency, percentile
from broker.devtools.bench.scaling import (
    Scaling,
    parse_process_counts,
    render_scaling,
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
