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
import dataclasses
import datetime as dt
import math
import os
import random
import secrets
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from broker.config.settings import load_settings
from broker.devtools.demo_data import make_referral
from broker.devtools.harness import (
    RabbitmqctlError,
    ServiceProcess,
    ServiceStartError,
    WebhookReceiver,
    free_port,
    party,
    rabbitmqctl_path,
    service_config,
    throwaway_vhost,
    webhook_route,
    write_config,
)

__all__ = [
    "DEFAULT_AMQP_URL",
    "BenchError",
    "BenchOptions",
    "BenchResult",
    "Ceiling",
    "Latency",
    "Scaling",
    "machine_busy_s",
    "measure_ceiling",
    "parse_process_counts",
    "percentile",
    "render_report",
    "render_scaling",
    "run_bench",
    "run_scaling",
]

log = structlog.get_logger(__name__)

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
_PG_SERVER = "postgres@127.0.0.1:5432"
_PG_ADMIN_URL = f"postgresql+asyncpg://{_PG_SERVER}/postgres"

# Targets of issue 5 on the 2-core reference machine.
TARGET_RATIO = 0.40
TARGET_P99_MS = 250.0
TARGET_RSS_GROWTH = 0.10

# The ceiling publishes the way the relay does (a batch of confirms in flight) and consumes with the
# prefetch the service's consumers use.
_CEILING_WINDOW = 200
_CEILING_PREFETCH = 64
# Tampere (area 08) and Helsinki (area 90): two intake queues, both delivered by webhook.
_MUNICIPALITIES = ("837", "091")
_AREAS = ("08", "90")
_SECRET_ENV = "HANDOFF_BENCH_WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a secret
_RSS_EVERY_S = 5.0
_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 20.0


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


# --- progress on the terminal -------------------------------------------------------------------


class _Progress:
    """A rich progress bar on stderr when it is a terminal; otherwise nothing."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=False)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None,
                 _tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def phase(self, description: str, total: int) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=n)


# --- (a) the ceiling ------------------------------------------------------------------------------


async def measure_ceiling(amqp_url: str, count: int, *, progress: _Progress | None = None,
                          window: int = _CEILING_WINDOW, prefetch: int = _CEILING_PREFETCH) -> Ceiling:
    """Messages per second through one quorum queue: persistent publishes with confirms (at most
    `window` unconfirmed) and a consumer acking each message (`prefetch` unacked)."""
    import aio_pika
    from aio_pika.abc import AbstractIncomingMessage
    from pamqp.commands import Basic

    connection = await aio_pika.connect(amqp_url)
    try:
        publisher = await connection.channel(publisher_confirms=True)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=prefetch)
        name = f"bench.ceiling.{uuid.uuid4().hex[:10]}"
        queue = await consumer.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        received = 0
        expected = 0
        done = asyncio.Event()
        body = _sample_envelope()

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if progress is not None:
                progress.advance()
            if received >= expected:
                done.set()

        async def send(n: int) -> None:
            async with gate:
                confirmation = await publisher.default_exchange.publish(
                    aio_pika.Message(body, message_id=f"ceiling-{n}", content_type="application/json",
                                     headers={"x-handoff-attempt": 1},
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=name)
            if not isinstance(confirmation, Basic.Ack):
                raise BenchError("RabbitMQ did not confirm a ceiling message")

        async def run(n: int, first: int) -> float:
            nonlocal expected
            done.clear()
            expected = first + n
            started = time.perf_counter()
            await asyncio.gather(*(send(first + i) for i in range(n)))
            await asyncio.wait_for(done.wait(), timeout=max(60.0, n / 100))
            return time.perf_counter() - started

        gate = asyncio.Semaphore(window)
        tag = await queue.consume(on_message)
        try:
            warmup = min(200, count)
            await run(warmup, 0)  # the queue's first writes and the channel's first confirms
            if progress is not None:
                progress.phase("ceiling (aio-pika)", count)
            busy_before = machine_busy_s()
            elapsed = await run(count, warmup)
            busy = machine_busy_s() - busy_before
        finally:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
            with contextlib.suppress(Exception):
                await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return Ceiling(per_s=count / elapsed, machine_cpu_ms_per_message=busy * 1000 / count)


@dataclass(frozen=True)
class Ceiling:
    per_s: float
    machine_cpu_ms_per_message: float


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all CPUs; user, system, interrupts), from
    /proc/stat: what a message costs everyone, this process, RabbitMQ and PostgreSQL included."""
    fields = [int(v) for v in Path("/proc/stat").read_text("utf-8").split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _sample_envelope() -> bytes:
    """The size and shape of the relay's thin referral envelope."""
    from adapters.municipal.envelope import envelope, render_envelope

    return render_envelope(envelope(event_id=str(uuid.uuid4()), type_="referral",
                                    referral_id=str(uuid.uuid4()), area="08",
                                    occurred_at=dt.datetime.now(dt.UTC), data={}))


# --- (b) the end-to-end path ----------------------------------------------------------------------


@dataclass
class _Phase:
    started: float = 0.0
    accepted: dict[str, float] = field(default_factory=dict)
    """referral_id -> when its POST started."""
    answered_s: list[float] = field(default_factory=list)
    """How long each accepted POST took to be answered (the 202 comes after the ledger commit)."""


class _Load:
    """Kela's handlers: POST /v1/referrals round-robin over the service processes."""

    def __init__(self, http: aiohttp.ClientSession, bases: Sequence[str], token: str) -> None:
        self._http = http
        self._urls = [f"{b}/v1/referrals" for b in bases]
        self._headers = {"Authorization": f"Bearer {token}"}
        self._run = uuid.uuid4().hex[:8]
        self._rng = random.Random(self._run)
        self._sent = 0
        self.errors: Counter[str] = Counter()

    async def _post(self, phase: _Phase) -> None:
        n = self._sent
        self._sent += 1
        body = make_referral(self._rng, kela_reference=f"BENCH-{self._run}-{n}",
                             municipality_code=_MUNICIPALITIES[n % len(_MUNICIPALITIES)])
        started = time.perf_counter()
        try:
            async with self._http.post(self._urls[n % len(self._urls)], json=body,
                                       headers=self._headers) as resp:
                if resp.status == 202:
                    phase.accepted[(await resp.json())["referral_id"]] = started
                    phase.answered_s.append(time.perf_counter() - started)
                else:
                    await resp.read()
                    self.errors[f"http_{resp.status}"] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[type(exc).__name__] += 1

    async def closed_loop(self, count: int, concurrency: int) -> _Phase:
        """`concurrency` clients, each sending its next referral as soon as the last was accepted."""
        phase = _Phase(started=time.perf_counter())
        remaining = count

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await self._post(phase)

        await asyncio.gather(*(client() for _ in range(min(concurrency, count))))
        return phase

    async def open_loop(self, rate: float, duration_s: float) -> _Phase:
        """Referrals sent on a fixed schedule, whether or not earlier ones have been answered."""
        loop = asyncio.get_running_loop()
        total = max(1, round(rate * duration_s))
        phase = _Phase(started=time.perf_counter())
        begin = loop.time()
        async with asyncio.TaskGroup() as group:
            for i in range(total):
                delay = begin + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                group.create_task(self._post(phase))
        return phase


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


# --- throw-away database and vhost ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def _bench_database(store_url: str | None) -> AsyncIterator[str]:
    if store_url is not None:
        yield store_url
        return
    name = f"handoff_bench_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://{_PG_SERVER}/{name}"
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _pg_admin(statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE) on the server's `postgres` db."""
    await _pg_scalar(_PG_ADMIN_URL, statement)


async def _pg_scalar(url: str, statement: str) -> Any:
    """One statement on its own autocommit connection; its first column of the first row, if any."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool,
                                 hide_parameters=True)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.text(statement))
            return result.scalar() if result.returns_rows else None
    except (OSError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise BenchError(f"PostgreSQL is not reachable at {urlsplit(url).hostname} "
                         f"({type(exc).__name__}); start it or pass --store-url") from None
    finally:
        await engine.dispose()


async def _vacuum_if_autovacuum_off(store_url: str) -> None:
    if store_url.startswith("postgresql") and await _pg_scalar(store_url, "SHOW autovacuum") == "off":
        await _pg_scalar(store_url, "VACUUM (ANALYZE)")


async def _store_notes(store_url: str) -> list[str]:
    """What about the store makes the figures less representative of production."""
    if not store_url.startswith("postgresql"):
        return ["the store is SQLite: one writer, not the production store"]
    notes = []
    if await _pg_scalar(store_url, "SHOW autovacuum") == "off":
        notes.append("PostgreSQL autovacuum is off on this server: the bench runs VACUUM (ANALYZE) "
                     "before the fixed-rate run, but the dead rows of a long soak pile up")
    return notes


@contextlib.asynccontextmanager
async def _bench_vhost(amqp_url: str) -> AsyncIterator[str]:
    """A throw-away vhost when the URL names the default vhost of a local broker. Without
    rabbitmqctl (a remote broker) the URL is used as given, and its vhost holds the bench's queues;
    a rabbitmqctl that fails stops the bench rather than putting them in the default vhost."""
    parts = urlsplit(amqp_url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    ctl = rabbitmqctl_path()
    if parts.path not in ("", "/") or not local or ctl is None:
        if ctl is None and local:
            log.warning("bench_without_vhost", reason="rabbitmqctl not found", vhost=parts.path or "/")
        yield amqp_url
        return
    try:
        async with throwaway_vhost(amqp_url, "handoff-bench") as url:
            yield url
    except RabbitmqctlError as exc:
        raise BenchError(str(exc)) from None


async def _check_broker(amqp_url: str) -> None:
    import aio_pika

    try:
        connection = await aio_pika.connect(amqp_url, timeout=10)
    except Exception as exc:
        raise BenchError(f"RabbitMQ is not reachable at {urlsplit(amqp_url).hostname} "
                         f"({type(exc).__name__}); start it or pass --amqp-url") from None
    await connection.close()


# --- the run --------------------------------------------------------------------------------------


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


# --- the report -----------------------------------------------------------------------------------


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


# --- scale-out: one run per process count ----------------------------------------------------------


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
