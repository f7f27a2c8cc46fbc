"""`handoff bench`: the raw RabbitMQ ceiling and the end-to-end referral path, measured in one run.

(a) Ceiling: aio-pika persistent publishes with publisher confirms into a fresh quorum queue, consumed
    with acks over the same connection, and no application code in between.
(b) End to end: the real service (`python -m broker.cli run`, one or more subprocesses, so that their
    RSS can be read from /proc) on PostgreSQL and RabbitMQ. Concurrent clients here POST referrals;
    the webhook receiver here records when each referral arrives. Latency is the receipt of the
    webhook minus the start of the POST, both on this process's monotonic clock, joined on the
    envelope's `referral_id`.

`--processes 1,2` runs (a) and (b) once per process count, each on its own fresh database and vhost,
and adds a scale-out table: throughput at saturation per count and its growth over the first count.

Phases: ceiling, service start, warm-up, saturation (`count` referrals from `concurrency` clients), then
the fixed offered rate (`rate`/s for `duration_s`, or `soak_minutes`) with the RSS sampled throughout.
`rss_start_mb` is read when the fixed-rate phase starts, after warm-up and saturation have grown the
pools to their working size, so the start-to-end growth is what a steady load does to memory; the RSS
right after start-up is reported as `rss_boot_mb`.

The service gets a generated config, a fresh PostgreSQL database and (with `rabbitmqctl`) a throw-away
vhost, all removed afterwards; `HANDOFF_*` variables of this shell are not passed on, so the bench can
never reach a store or a broker that its options did not name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from broker.config.settings import load_settings
from broker.devtools.bench.ceiling import Ceiling, machine_busy_s, measure_ceiling
from broker.devtools.bench.environment import (
    _bench_database,
    _bench_vhost,
    _check_broker,
    _store_notes,
    _vacuum_if_autovacuum_off,
)
from broker.devtools.bench.load import _Load, _Phase
from broker.devtools.bench.progress import _Progress
from broker.devtools.bench.results import _RSS_EVERY_S, BenchError, BenchOptions, BenchResult, Latency
from broker.devtools.harness import (
    ServiceProcess,
    ServiceStartError,
    WebhookReceiver,
    free_port,
    party,
    service_config,
    webhook_route,
    write_config,
)

log = structlog.get_logger(__name__)

# Tampere (area 08) and Helsinki (area 90): two intake queues, both delivered by webhook.
_AREAS = ("08", "90")
_SECRET_ENV = "HANDOFF_BENCH_WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a secret
_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 20.0


def _config(*, port: int, store_url: str, amqp_url: str, hook_url: str, token: str) -> dict[str, Any]:
    """The product defaults, with logging at warning; one token sends the whole saturation load, so
    the rate limit (not what it is for) is off."""
    return service_config(port=port, store_url=store_url, transport_url=amqp_url, shutdown_timeout_s=10,
                          parties=[party("kela-bench", "kela", token)],
                          routes=[webhook_route(area, hook_url, _SECRET_ENV) for area in _AREAS])


def _child_env(secret: str) -> dict[str, str]:
    """This process's environment for the service, without any `HANDOFF_*` override: the generated
    config is the whole configuration, so the bench never reaches a store it was not given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env[_SECRET_ENV] = secret
    return env


async def run_bench(options: BenchOptions, *, show_progress: bool = False,
                    on_started: Callable[[list[int]], None] = lambda _pids: None) -> BenchResult:
    """Set up, measure (a) and (b), tear down. `on_started` gets the service pids (for py-spy)."""
    if options.processes > 1 and options.store_url and options.store_url.startswith("sqlite"):
        raise BenchError("several service processes need PostgreSQL (SQLite has one writer)")
    # SIGTERM (e.g. from `timeout`) cancels the run, so that the services, the database and the
    # vhost are still removed; Ctrl-C does the same through asyncio.run.
    me, loop = asyncio.current_task(), asyncio.get_running_loop()
    assert me is not None
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        me.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        with _Progress(show_progress) as progress:
            async with contextlib.AsyncExitStack() as stack:
                amqp_url = await stack.enter_async_context(_bench_vhost(options.amqp_url))
                await _check_broker(amqp_url)
                store_url = await stack.enter_async_context(_bench_database(options.store_url))
                ceiling = await measure_ceiling(amqp_url, options.count, progress=progress)
                return await _end_to_end(options, stack, store_url, amqp_url, ceiling, progress,
                                         on_started)
    except asyncio.CancelledError:
        if terminated and me.uncancel() == 0:
            raise BenchError("stopped by SIGTERM (services stopped, database and vhost removed)") from None
        raise
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGTERM)
    raise AssertionError("unreachable")


async def _end_to_end(options: BenchOptions, stack: contextlib.AsyncExitStack, store_url: str,
                      amqp_url: str, ceiling: Ceiling, progress: _Progress,
                      on_started: Callable[[list[int]], None]) -> BenchResult:
    token, secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    receiver = WebhookReceiver(secret.encode(), on_new_referral=lambda _rid: progress.advance(),
                               backlog=1024)
    await receiver.start()
    stack.push_async_callback(receiver.stop)
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="handoff-bench-")))
    env = _child_env(secret)
    services: list[ServiceProcess] = []
    for i in range(options.processes):
        port = free_port()
        config = write_config(workdir / f"handoff-{i}.toml", _config(
            port=port, store_url=store_url, amqp_url=amqp_url, hook_url=receiver.url, token=token))
        load_settings(config, env={_SECRET_ENV: secret})  # a bad option fails here, not in the child
        services.append(ServiceProcess(config, port, workdir / f"service-{i}.log", env))

    async def stop_all() -> None:
        codes = await asyncio.gather(*(s.stop(_STOP_TIMEOUT_S) for s in services))
        for s, code in zip(services, codes, strict=True):
            if code == -signal.SIGKILL:
                log.warning("bench_service_killed", pid=s.pid)

    connector = aiohttp.TCPConnector(limit=max(options.concurrency, 256))
    http = await stack.enter_async_context(aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)))
    stack.push_async_callback(stop_all)
    # One at a time: each runs the migrations under PostgreSQL's advisory lock anyway.
    for service in services:
        try:
            await service.start(_READY_TIMEOUT_S, wait_for_status=None)
        except ServiceStartError as exc:
            raise BenchError(str(exc)) from None
    on_started([s.pid for s in services])
    rss_boot = _total_rss(services)
    load = _Load(http, [s.base for s in services], token)
    drain_s = 120.0

    async def measured(description: str, total: int, send: Callable[[], Any]) -> tuple[_Phase, set[str]]:
        progress.phase(description, total)
        phase: _Phase = await send()
        missing = await receiver.wait_for_referrals(phase.accepted, drain_s)
        _check_alive(services)
        return phase, missing

    warmup_total = options.warmup_count
    _phase, warm_missing = await measured(
        "warm-up", warmup_total, lambda: load.closed_loop(warmup_total, options.concurrency))
    cpu_before, busy_before, own_before = _total_cpu_s(services), machine_busy_s(), time.process_time()
    saturation, sat_missing = await measured(
        f"saturation ({options.concurrency} clients)", options.count,
        lambda: load.closed_loop(options.count, options.concurrency))
    sat_cpu_s = _total_cpu_s(services) - cpu_before
    sat_busy_s, own_s = machine_busy_s() - busy_before, time.process_time() - own_before
    sat_times = [receiver.first_seen[r] for r in saturation.accepted if r in receiver.first_seen]
    sat_elapsed = (max(sat_times) - saturation.started) if sat_times else float("inf")
    end_to_end = len(sat_times) / sat_elapsed

    # What autovacuum would have done after the saturation run's updates (when the server has it
    # off, as this build machine's does): the fixed-rate run measures the service, not the bloat.
    await _vacuum_if_autovacuum_off(store_url)
    rss_start = _total_rss(services)
    samples = [rss_start]
    fixed_total = max(1, round(options.rate * options.fixed_rate_s))

    async def fixed_run() -> _Phase:
        sampling = asyncio.Event()

        async def sample() -> None:
            while not sampling.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sampling.wait(), _RSS_EVERY_S)
                samples.append(_total_rss(services))

        async with asyncio.TaskGroup() as group:
            group.create_task(sample())
            try:
                return await load.open_loop(options.rate, options.fixed_rate_s)
            finally:
                sampling.set()

    label = f"soak {options.soak_minutes:g} min" if options.soak_minutes else f"{options.rate:g}/s offered"
    fixed, fixed_missing = await measured(label, fixed_total, fixed_run)
    rss_end = _total_rss(services)
    fixed_times = [receiver.first_seen[r] for r in fixed.accepted if r in receiver.first_seen]
    fixed_elapsed = (max(fixed_times) - fixed.started) if fixed_times else float("inf")
    if receiver.bad_signatures:
        raise BenchError(f"{receiver.bad_signatures} webhook(s) failed signature verification")
    return BenchResult(
        ceiling_per_s=ceiling.per_s,
        end_to_end_per_s=end_to_end,
        fixed=Latency.of([receiver.first_seen[r] - t for r, t in fixed.accepted.items()
                          if r in receiver.first_seen]),
        fixed_post=Latency.of(fixed.answered_s),
        saturation=Latency.of([receiver.first_seen[r] - t for r, t in saturation.accepted.items()
                               if r in receiver.first_seen]),
        offered_rate_per_s=options.rate,
        fixed_rate_s=options.fixed_rate_s,
        fixed_delivered_per_s=len(fixed_times) / fixed_elapsed,
        rss_boot_mb=rss_boot,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        rss_samples_mb=tuple(samples),
        count=options.count,
        concurrency=options.concurrency,
        processes=options.processes,
        http_errors=load.errors.total(),
        http_error_kinds=dict(load.errors),
        cpu_ms_per_referral=sat_cpu_s * 1000 / max(1, len(sat_times)),
        machine_cpu_ms_per_message=ceiling.machine_cpu_ms_per_message,
        machine_cpu_ms_per_referral=sat_busy_s * 1000 / max(1, len(sat_times)),
        bench_cpu_ms_per_referral=own_s * 1000 / max(1, len(sat_times)),
        notes=tuple(await _store_notes(store_url)),
        undelivered=len(warm_missing) + len(sat_missing) + len(fixed_missing),
        duplicate_deliveries=receiver.duplicates,
    )


def _total_rss(services: Sequence[ServiceProcess]) -> float:
    return sum(s.rss_mb() for s in services)


def _total_cpu_s(services: Sequence[ServiceProcess]) -> float:
    return sum(s.cpu_s() for s in services)


def _check_alive(services: Sequence[ServiceProcess]) -> None:
    for s in services:
        if s.proc is not None and not s.running():
            raise BenchError(f"a service process exited during the run:\n{s.log_tail()}")
