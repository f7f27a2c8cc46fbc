"""Fixtures and helpers for the transport contract suite (tests/test_transport_contract.py).

The RabbitMQ runs use a throw-away vhost per test session (made with rabbitmqctl and deleted at the
end), so they never drain or disturb `handoff.dead` / `handoff.unrouted` of anything else on the
same broker, and fresh area codes per test, so tests never see each other's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import aio_pika
import pytest

from broker.transport import Ack, Disposition, Handler, InboundMessage, Transport, intake_queue
from broker.transport_embedded import EmbeddedTransport
from broker.transport_rabbitmq import RabbitMQTransport

AMQP_URL = os.environ.get("HANDOFF_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI") == "true"

# Small tiers keep the suite fast. The names encode the delay ("handoff.retry.200ms"), and "1s"
# has the production TTL, so these never clash with queues declared by another configuration.
RETRY_TIERS_S = (0.2, 1.0)
DELIVERY_LIMIT = 5
ERROR_RETRY_DELAY_S = 0.2
WAIT_S = 10.0


def missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI=true) but is not available")
    pytest.skip(f"{what} is not available on this machine")


def rabbitmqctl() -> str:
    path = shutil.which("rabbitmqctl") or (
        "/usr/sbin/rabbitmqctl" if os.path.exists("/usr/sbin/rabbitmqctl") else None
    )
    if path is None:
        missing("rabbitmqctl")
    assert path is not None
    return path


def run_ctl(*args: str) -> str:
    done = subprocess.run(
        [rabbitmqctl(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def _reachable(url: str) -> bool:
    parsed = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5672), 1):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class RabbitEnv:
    url: str
    vhost: str | None
    """None when rabbitmqctl is missing and the tests share the URL's own vhost."""


@pytest.fixture(scope="session")
def rabbit_env() -> Iterator[RabbitEnv]:
    if not _reachable(AMQP_URL):
        missing(f"RabbitMQ at {AMQP_URL.rsplit('@', 1)[-1]}")
    ctl = shutil.which("rabbitmqctl") or (
        "/usr/sbin/rabbitmqctl" if os.path.exists("/usr/sbin/rabbitmqctl") else None
    )
    if ctl is None:
        yield RabbitEnv(AMQP_URL, None)
        return
    vhost = f"handoff-test-{uuid.uuid4().hex[:8]}"
    user = urllib.parse.urlsplit(AMQP_URL).username or "guest"
    run_ctl("add_vhost", vhost)
    try:
        run_ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        base = AMQP_URL.rsplit("/", 1)[0]
        yield RabbitEnv(f"{base}/{urllib.parse.quote(vhost, safe='')}", vhost)
    finally:
        run_ctl("delete_vhost", vhost)


def fresh_area() -> str:
    return "t" + uuid.uuid4().hex[:8]


@dataclass
class Harness:
    kind: str
    transport: Transport
    areas: list[str]
    rabbit: RabbitEnv | None = None

    @property
    def queues(self) -> list[str]:
        return [intake_queue(a) for a in self.areas]


def make_transport(kind: str, rabbit: RabbitEnv | None) -> Transport:
    if kind == "embedded":
        return EmbeddedTransport(
            delivery_limit=DELIVERY_LIMIT, error_retry_delay_s=ERROR_RETRY_DELAY_S
        )
    assert rabbit is not None
    return RabbitMQTransport(
        rabbit.url,
        delivery_limit=DELIVERY_LIMIT,
        retry_tiers_s=RETRY_TIERS_S,
        error_retry_delay_s=ERROR_RETRY_DELAY_S,
        reconnect_interval_s=0.2,
        connection_name="handoff-contract-test",
    )


async def delete_queues(url: str, names: list[str]) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def open_harness(kind: str, rabbit: RabbitEnv | None) -> AsyncIterator[Harness]:
    transport = make_transport(kind, rabbit)
    areas = [fresh_area(), fresh_area()]
    await transport.start(areas)
    try:
        yield Harness(kind, transport, areas, rabbit)
    finally:
        await transport.close()
        if rabbit is not None:
            await delete_queues(rabbit.url, [intake_queue(a) for a in areas])


@pytest.fixture(
    params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)],
)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """The contract fixture: every test that takes it runs once per transport."""
    kind: str = request.param
    rabbit: RabbitEnv | None = request.getfixturevalue("rabbit_env") if kind == "rabbitmq" else None
    async with open_harness(kind, rabbit) as opened:
        yield opened


@pytest.fixture
async def rabbit_harness(rabbit_env: RabbitEnv) -> AsyncIterator[Harness]:
    """For the few RabbitMQ-only checks (reconnects, the definitions file)."""
    async with open_harness("rabbitmq", rabbit_env) as opened:
        yield opened


class Collector:
    """A handler that records every delivery and lets the test wait for a condition over them."""

    def __init__(self, decide: Callable[[InboundMessage], Disposition] | None = None) -> None:
        self.messages: list[InboundMessage] = []
        self.times: list[float] = []
        self._decide = decide or (lambda _m: Ack())
        self._changed = asyncio.Event()

    async def __call__(self, message: InboundMessage) -> Disposition:
        self.messages.append(message)
        self.times.append(time.monotonic())
        self._changed.set()
        return self._decide(message)

    def with_id(self, event_id: str) -> list[InboundMessage]:
        return [m for m in self.messages if m.event_id == event_id]

    async def wait_for(
        self, condition: Callable[[], bool], *, timeout: float = WAIT_S, what: str = "condition"
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; got {self.messages!r}") from None

    async def wait_for_id(self, event_id: str, *, count: int = 1) -> list[InboundMessage]:
        await self.wait_for(
            lambda: len(self.with_id(event_id)) >= count, what=f"{count} x {event_id}"
        )
        return self.with_id(event_id)


class Consumers:
    """consume() tasks started by a test; cancelled and awaited when the test ends."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def start(
        self, transport: Transport, queue: str, handler: Handler, *, prefetch: int = 16
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(transport.consume(queue, handler, prefetch=prefetch))
        self.tasks.append(task)
        return task

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def consumers() -> AsyncIterator[Consumers]:
    started = Consumers()
    try:
        yield started
    finally:
        await started.stop()
