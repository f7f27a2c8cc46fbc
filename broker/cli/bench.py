"""`handoff bench`: benchmarks, reported as ratios and figures (never as timed tests)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Benchmarks (reported as ratios and figures, never as timed tests).")


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    store_url: Annotated[str | None, typer.Option(
        help="Ledger store; default: a fresh database on postgres@127.0.0.1:5432, dropped after.")] = None,
    amqp_url: Annotated[str, typer.Option(
        help="RabbitMQ; its default vhost is replaced by a throw-away one when rabbitmqctl works.")
    ] = "amqp://guest:guest@127.0.0.1:5672/",
    count: Annotated[int, typer.Option(min=1, help="Messages for the ceiling and saturation runs.")] = 3000,
    rate: Annotated[float, typer.Option(min=0.1, help="Offered referrals/s of the fixed-rate run.")] = 200.0,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds of the fixed-rate run (not with --soak).")
                        ] = 15.0,
    concurrency: Annotated[int, typer.Option(min=1, help="HTTP clients at saturation.")] = 32,
    soak: Annotated[float, typer.Option(min=0, help="Minutes of fixed-rate soak (0 = off).")] = 0.0,
    processes: Annotated[str, typer.Option(
        help="Service processes sharing the load; a list such as 1,2 runs the bench once per count "
             "and reports how throughput grows.")] = "1",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Measure the RabbitMQ ceiling and the end-to-end referral path in one run (issue 5).

    `handoff bench metrics` and `handoff bench statistics` time the ledger-backed reads instead.
    """
    import sys

    if ctx.invoked_subcommand is not None:
        return

    from broker.devtools.bench import (
        BenchError,
        BenchOptions,
        parse_process_counts,
        render_report,
        render_scaling,
        run_bench,
        run_scaling,
    )
    from broker.observability.logs import configure_logging

    configure_logging("warning", "console")

    def started(pids: list[int]) -> None:
        typer.echo(f"service pid(s): {' '.join(map(str, pids))}", err=True)

    try:
        counts = parse_process_counts(processes)
        options = BenchOptions(store_url=store_url, amqp_url=amqp_url, count=count, rate=rate,
                               duration_s=duration, concurrency=concurrency, soak_minutes=soak,
                               processes=counts[0])
        if len(counts) == 1:
            result = asyncio.run(run_bench(options, show_progress=sys.stderr.isatty(), on_started=started))
            typer.echo(json.dumps(result.as_json()) if as_json else render_report(result))
            return
        scaling = asyncio.run(run_scaling(options, counts, show_progress=sys.stderr.isatty(),
                                          on_started=started))
    except BenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(scaling.as_json()) if as_json else render_scaling(scaling))


StoreOpt = Annotated[str, typer.Option(help="Ledger to seed and measure (a dedicated database!).")]


def _ledger_bench(store_url: str, cases: int, job: Any) -> Any:
    from broker.devtools.bench_metrics import seed_cases
    from broker.store.ledger import Ledger

    async def main() -> Any:
        ledger = Ledger.from_url(store_url)
        try:
            await ledger.migrate()

            def progress(done: int, total: int) -> None:
                typer.echo(f"\rseeding {done}/{total}", nl=False, err=True)

            added = await seed_cases(ledger, cases, progress=progress)
            if added:
                typer.echo("", err=True)
            return await job(ledger)
        finally:
            await ledger.dispose()

    return asyncio.run(main())


@bench_app.command("metrics")
def bench_metrics(
    store_url: StoreOpt = "postgresql+asyncpg://postgres@127.0.0.1:5432/handoff_bench",
    cases: Annotated[int, typer.Option(min=0, help="Seed the ledger up to this many cases.")] = 1_000_000,
    scrapes: Annotated[int, typer.Option(min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Seed synthetic, personal-data-free cases and time a /metrics scrape (target: 100 ms on PG)."""
    import dataclasses

    from broker.devtools.bench_metrics import bench_scrape

    result = _ledger_bench(store_url, cases, lambda ledger: bench_scrape(ledger, scrapes=scrapes))
    data = dataclasses.asdict(result)
    typer.echo(json.dumps(data) if as_json else
               f"{data['store']}: {data['cases']} cases, scrape median {data['median_ms']} ms, "
               f"p95 {data['p95_ms']} ms, max {data['max_ms']} ms ({data['series']} series)")


@bench_app.command("statistics")
def bench_statistics_cmd(
    store_url: StoreOpt = "postgresql+asyncpg://postgres@127.0.0.1:5432/handoff_bench",
    cases: Annotated[int, typer.Option(min=0, help="Seed the ledger up to this many cases.")] = 1_000_000,
    months: Annotated[int, typer.Option(min=1, max=36)] = 12,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Time § 11 statistics over the last months, every area (target: under 2 s at a million cases)."""
    import dataclasses

    from broker.devtools.bench_metrics import bench_statistics

    result = _ledger_bench(store_url, cases, lambda ledger: bench_statistics(ledger, months=months))
    data = dataclasses.asdict(result)
    typer.echo(json.dumps(data) if as_json else
               f"{data['store']}: {data['cases']} cases, {data['months']} months x every area "
               f"({data['rows']} rows): median {data['median_ms']} ms, max {data['max_ms']} ms")
