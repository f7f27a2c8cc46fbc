"""(a) The ceiling: aio-pika persistent publishes with publisher confirms into a fresh quorum queue,
consumed with acks over the same connection, and no application code in between."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from broker.devtools.bench.progress import _Progress
from broker.devtools.bench.results import BenchError

# The ceiling publishes the way the relay does (a batch of confirms in flight) and consumes with the
# prefetch the service's consumers use.
_CEILING_WINDOW = 200
_CEILING_PREFETCH = 64


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
