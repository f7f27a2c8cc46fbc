"""The transport contract: one suite, run on the embedded transport and on the real RabbitMQ.

Tests wait on conditions (a Collector seeing a message, a handler reaching a count), never on
sleeps. The RabbitMQ runs use a throw-away vhost per test session (made with rabbitmqctl and
deleted at the end), so they never drain `handoff.dead` / `handoff.unrouted` of anything else on
the same broker, and fresh area codes per test, so tests never see each other's messages. Without
RabbitMQ the rabbitmq runs skip, except in CI (CI=true), where they fail. The few RabbitMQ-only
checks (reconnect after the broker drops connections, the definitions file accepted by the
server) come last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import aio_pika
import pytest
from structlog.testing import capture_logs

from broker.transport.embedded import EmbeddedTransport
from broker.transport.protocol import (
    DEAD_LETTER_QUEUE,
    H_ATTEMPT,
    H_CREATED_AT,
    H_DEATH_REASON,
    H_SOURCE_QUEUE,
    KELA_UPDATES_QUEUE,
    REFERRALS_EXCHANGE,
    REPLIES_EXCHANGE,
    UNROUTED_QUEUE,
    Ack,
    DeadLetter,
    Disposition,
    Handler,
    InboundMessage,
    OutboundMessage,
    PublishError,
    Retry,
    Transport,
    intake_queue,
    referral_routing_key,
    update_routing_key,
)
from broker.transport.rabbitmq import RabbitMQTransport
from broker.transport.topology import (
    build_topology,
    pick_retry_tier,
    retry_tier_queue,
    topology_definitions,
)

# -- fixtures and helpers ----------------------------------------------------------------------

AMQP_URL = os.environ.get("HANDOFF_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI") == "true"

# Small tiers keep the suite fast. The names encode the delay ("handoff.delay.200ms"), and "1s"
# has the production TTL, so these never clash with queues declared by another configuration.
RETRY_TIERS_S = (0.2, 1.0)
DELIVERY_LIMIT = 5
ERROR_RETRY_DELAY_S = 0.2
WAIT_S = 10.0


def missing(what: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI=true) but is not available")
    pytest.skip(f"{what} is not available on this machine")


def _rabbitmqctl_path() -> str | None:
    # root's PATH has /usr/sbin, other users' often do not.
    if found := shutil.which("rabbitmqctl"):
        return found
    return "/usr/sbin/rabbitmqctl" if os.path.exists("/usr/sbin/rabbitmqctl") else None


def rabbitmqctl() -> str:
    path = _rabbitmqctl_path()
    if path is None:
        missing("rabbitmqctl")
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
    if _rabbitmqctl_path() is None:
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


def referral(
    area: str,
    *,
    kind: str = "support_need",
    body: bytes | None = None,
    headers: dict[str, str | int] | None = None,
) -> OutboundMessage:
    event_id = str(uuid.uuid4())
    return OutboundMessage(
        event_id=event_id,
        exchange=REFERRALS_EXCHANGE,
        routing_key=referral_routing_key(area, kind),
        body=body if body is not None else json.dumps({"event_id": event_id}).encode(),
        headers=headers or {H_CREATED_AT: 1_700_000_000},
    )


# -- the contract, on both transports ----------------------------------------------------------


async def test_roundtrip_preserves_id_headers_and_body(
    harness: Harness, consumers: Consumers
) -> None:
    area = harness.areas[0]
    body = json.dumps({"viesti": "Hyvää päivää", "n": 1}).encode()
    message = referral(area, body=body, headers={H_CREATED_AT: 1_700_000_123, "trace": "abc"})
    collector = Collector()
    consumers.start(harness.transport, intake_queue(area), collector)

    await harness.transport.publish(message)

    (got,) = await collector.wait_for_id(message.event_id)
    assert got.body == body
    assert got.queue == intake_queue(area)
    assert got.routing_key == message.routing_key
    assert got.attempt == 1
    assert got.redelivered is False
    assert got.headers[H_CREATED_AT] == 1_700_000_123
    assert got.headers["trace"] == "abc"
    assert got.headers[H_ATTEMPT] == 1


async def test_topic_routing_reaches_only_the_areas_queue(
    harness: Harness, consumers: Consumers
) -> None:
    first, second = harness.areas
    to_second = referral(second, kind="urgent_assistance")
    to_first = referral(first)
    got_first, got_second = Collector(), Collector()
    # Published before the first area's message: had it been misrouted, it would arrive first.
    await harness.transport.publish(to_second)
    await harness.transport.publish(to_first)

    consumers.start(harness.transport, intake_queue(first), got_first)
    consumers.start(harness.transport, intake_queue(second), got_second)

    await got_first.wait_for_id(to_first.event_id)
    await got_second.wait_for_id(to_second.event_id)
    assert [m.event_id for m in got_first.messages] == [to_first.event_id]
    assert [m.event_id for m in got_second.messages] == [to_second.event_id]


async def test_updates_reach_the_kela_queue(harness: Harness, consumers: Consumers) -> None:
    update = OutboundMessage(
        event_id=str(uuid.uuid4()),
        exchange=REPLIES_EXCHANGE,
        routing_key=update_routing_key("reply"),
        body=b"{}",
    )
    collector = Collector()
    consumers.start(harness.transport, KELA_UPDATES_QUEUE, collector)

    await harness.transport.publish(update)

    (got,) = await collector.wait_for_id(update.event_id)
    assert got.routing_key == "update.reply"


async def test_unroutable_messages_land_in_unrouted(
    harness: Harness, consumers: Consumers
) -> None:
    no_such_area = referral(fresh_area())
    no_such_update = OutboundMessage(
        event_id=str(uuid.uuid4()), exchange=REPLIES_EXCHANGE, routing_key="nonsense", body=b"{}"
    )
    collector = Collector()
    consumers.start(harness.transport, UNROUTED_QUEUE, collector)

    await harness.transport.publish(no_such_area)
    await harness.transport.publish(no_such_update)

    (got,) = await collector.wait_for_id(no_such_area.event_id)
    assert got.routing_key == no_such_area.routing_key
    assert got.body == no_such_area.body
    await collector.wait_for_id(no_such_update.event_id)


async def test_retry_redelivers_after_the_delay_with_attempt_raised(
    harness: Harness, consumers: Consumers
) -> None:
    area = harness.areas[0]
    message = referral(area, headers={H_CREATED_AT: 5, "trace": "keep-me"})

    def decide(m: InboundMessage) -> Disposition:
        return Retry(delay_s=0.2, reason="receiver_busy") if m.attempt == 1 else Ack()

    collector = Collector(decide)
    consumers.start(harness.transport, intake_queue(area), collector)

    await harness.transport.publish(message)

    first, second = await collector.wait_for_id(message.event_id, count=2)
    assert (first.attempt, second.attempt) == (1, 2)
    assert second.headers[H_ATTEMPT] == 2
    assert second.headers["trace"] == "keep-me"
    assert second.body == message.body
    assert second.routing_key == message.routing_key
    assert second.queue == intake_queue(area)
    gap = collector.times[collector.messages.index(second)] - collector.times[0]
    assert gap >= 0.15, f"redelivered after {gap:.3f} s, asked for 0.2 s"


async def test_dead_letter_lands_in_dead_queue_with_the_reason(
    harness: Harness, consumers: Consumers
) -> None:
    area = harness.areas[0]
    message = referral(area, headers={H_CREATED_AT: 7, "trace": "dead"})
    handler = Collector(lambda _m: DeadLetter(reason="schema_invalid"))
    dead = Collector()
    consumers.start(harness.transport, intake_queue(area), handler)
    consumers.start(harness.transport, DEAD_LETTER_QUEUE, dead)

    await harness.transport.publish(message)

    (got,) = await dead.wait_for_id(message.event_id)
    assert got.headers[H_DEATH_REASON] == "schema_invalid"
    assert got.headers[H_SOURCE_QUEUE] == intake_queue(area)
    assert got.headers["trace"] == "dead"
    assert got.body == message.body
    assert got.routing_key == message.routing_key
    assert len(handler.with_id(message.event_id)) == 1


async def test_raising_handler_is_dead_lettered_after_the_limit_and_blocks_nothing(
    harness: Harness, consumers: Consumers
) -> None:
    area = harness.areas[0]
    secret = "010101-900R"  # stands in for personal data in the exception and the body
    poison = referral(area, body=f'{{"personal_id": "{secret}"}}'.encode())
    good = [referral(area) for _ in range(3)]

    def decide(m: InboundMessage) -> Disposition:
        if m.event_id == poison.event_id:
            raise ValueError(f"cannot parse {secret}")
        return Ack()

    handler, dead = Collector(decide), Collector()
    with capture_logs() as logs:
        # prefetch=1: the good messages get through only if the poison one lets go of the slot.
        consumers.start(harness.transport, intake_queue(area), handler, prefetch=1)
        consumers.start(harness.transport, DEAD_LETTER_QUEUE, dead)
        for message in [poison, *good]:
            await harness.transport.publish(message)

        for message in good:
            await handler.wait_for_id(message.event_id)
        (got,) = await dead.wait_for_id(poison.event_id)

    attempts = [m.attempt for m in handler.with_id(poison.event_id)]
    assert attempts == list(range(1, DELIVERY_LIMIT + 1))
    last_good = max(handler.messages.index(handler.with_id(m.event_id)[0]) for m in good)
    second_try = handler.messages.index(handler.with_id(poison.event_id)[1])
    assert last_good < second_try, "later messages waited for the failing one"
    assert got.headers[H_DEATH_REASON] == "handler_error: ValueError"
    assert got.headers[H_SOURCE_QUEUE] == intake_queue(area)
    assert secret not in json.dumps([str(v) for v in got.headers.values()])
    assert any(e["event"] == "handler_failed" and e["log_level"] == "error" for e in logs)
    assert secret not in repr(logs)


async def test_prefetch_bounds_the_handlers_running_at_once(
    harness: Harness, consumers: Consumers
) -> None:
    area, prefetch, total = harness.areas[0], 3, 10
    running = peak = finished = 0
    saturated, overflowed, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    all_done = asyncio.Event()

    async def handler(_m: InboundMessage) -> Disposition:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        if running == prefetch:
            saturated.set()
        if running > prefetch:
            overflowed.set()
        await release.wait()
        running -= 1
        finished += 1
        if finished == total:
            all_done.set()
        return Ack()

    for _ in range(total):
        await harness.transport.publish(referral(area))
    consumers.start(harness.transport, intake_queue(area), handler, prefetch=prefetch)

    await asyncio.wait_for(saturated.wait(), WAIT_S)
    # Waiting for something that must not happen needs a bound; 0.3 s is plenty for a broker that
    # would over-deliver to do so.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(overflowed.wait(), 0.3)
    release.set()
    await asyncio.wait_for(all_done.wait(), WAIT_S)
    assert peak == prefetch


async def test_close_lets_running_handlers_finish(harness: Harness, consumers: Consumers) -> None:
    area = harness.areas[0]
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def handler(m: InboundMessage) -> Disposition:
        started.set()
        await release.wait()
        finished.append(m.event_id)
        return Ack()

    message = referral(area)
    consume_task = consumers.start(harness.transport, intake_queue(area), handler)
    await harness.transport.publish(message)
    await asyncio.wait_for(started.wait(), WAIT_S)

    closing = asyncio.create_task(harness.transport.close())
    done, _ = await asyncio.wait({closing}, timeout=0.2)
    assert not done, "close() returned while a handler was still running"
    release.set()
    await asyncio.wait_for(closing, WAIT_S)

    assert finished == [message.event_id]
    await asyncio.wait_for(consume_task, WAIT_S)  # consume() returns once closed


async def test_publish_after_close_raises_and_readiness_follows(harness: Harness) -> None:
    assert isinstance(harness.transport, Transport)
    assert await harness.transport.is_ready()

    await harness.transport.close()

    assert not await harness.transport.is_ready()
    with pytest.raises(PublishError):
        await harness.transport.publish(referral(harness.areas[0]))


async def test_unknown_exchange_is_a_publish_error(harness: Harness) -> None:
    message = OutboundMessage(
        event_id=str(uuid.uuid4()), exchange="handoff.nope", routing_key="x", body=b"{}"
    )
    with pytest.raises(PublishError):
        await harness.transport.publish(message)
    assert await harness.transport.is_ready()


async def test_consume_refuses_an_unknown_queue(harness: Harness) -> None:
    with pytest.raises(ValueError, match="unknown queue"):
        await harness.transport.consume(intake_queue(fresh_area()), Collector())


# -- topology as data (no server needed) -------------------------------------------------------


def test_topology_skips_kela_and_names_tiers_by_delay() -> None:
    topology = build_topology(["08", "kela", "91"], delivery_limit=5, retry_tiers_s=(1, 0.2, 300))
    names = {q.name for q in topology.queues}
    assert {"handoff.intake.08", "handoff.intake.91"} <= names
    assert "handoff.intake.kela" not in names
    assert {"handoff.delay.200ms", "handoff.delay.1s", "handoff.delay.300s"} <= names
    assert retry_tier_queue(0.2) not in topology.consumable_queues
    assert pick_retry_tier((1, 5, 30), 0) == 1
    assert pick_retry_tier((1, 5, 30), 2) == 5
    assert pick_retry_tier((1, 5, 30), 3600) == 30
    with pytest.raises(ValueError):
        build_topology(["0#"], delivery_limit=5, retry_tiers_s=(1,))


# -- RabbitMQ only -----------------------------------------------------------------------------


async def _publish_eventually(transport: Transport, message: OutboundMessage) -> None:
    """Publishing while the robust connection reconnects fails fast with PublishError; the relay
    retries the outbox row, and so does this."""
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                await transport.publish(message)
                return
            except PublishError:
                await asyncio.sleep(0.1)


@pytest.mark.rabbitmq
async def test_consumers_and_publishing_resume_after_the_broker_drops_connections(
    rabbit_harness: Harness, consumers: Consumers
) -> None:
    env = rabbit_harness.rabbit
    assert env is not None
    if env.vhost is None:
        missing("rabbitmqctl (to drop the connections)")
    area = rabbit_harness.areas[0]
    collector = Collector()
    consumers.start(rabbit_harness.transport, intake_queue(area), collector)
    before = referral(area)
    await rabbit_harness.transport.publish(before)
    await collector.wait_for_id(before.event_id)

    await asyncio.to_thread(run_ctl, "close_all_connections", "-p", env.vhost, "test")

    after = referral(area)
    await _publish_eventually(rabbit_harness.transport, after)
    # The old consumer channel is gone, so this arrives only through the restored consumer.
    await collector.wait_for_id(after.event_id)
    assert await rabbit_harness.transport.is_ready()


@pytest.mark.rabbitmq
async def test_definitions_are_accepted_by_the_server_and_match_the_declarer(
    rabbit_env: RabbitEnv,
) -> None:
    if rabbit_env.vhost is None:
        missing("rabbitmqctl (to import definitions)")
    areas = [fresh_area(), fresh_area(), "kela"]
    definitions = topology_definitions(
        areas, delivery_limit=DELIVERY_LIMIT, retry_tiers_s=RETRY_TIERS_S, vhost=rabbit_env.vhost
    )
    assert {"exchanges", "queues", "bindings"} <= definitions.keys()
    intakes = [intake_queue(a) for a in areas if a != "kela"]
    try:
        # The packaged rabbitmqctl runs as the rabbitmq user (`su rabbitmq`), who cannot read
        # pytest's private tmp_path, and RabbitMQ 3.10 refuses "-" (stdin): a readable copy it is.
        with tempfile.TemporaryDirectory(prefix="handoff-definitions-") as shared:
            Path(shared).chmod(0o755)
            path = Path(shared) / "definitions.json"
            path.write_text(json.dumps(definitions, indent=2))
            path.chmod(0o644)
            await asyncio.to_thread(run_ctl, "import_definitions", str(path))

        listed = await asyncio.to_thread(
            run_ctl, "list_queues", "-p", rabbit_env.vhost, "--quiet", "name", "arguments"
        )
        listed_names = {line.split("\t", 1)[0] for line in listed.splitlines()}
        assert {q["name"] for q in definitions["queues"]} <= listed_names
        connection = await aio_pika.connect(rabbit_env.url)
        try:
            channel = await connection.channel()
            for exchange in definitions["exchanges"]:
                await channel.declare_exchange(exchange["name"], passive=True)
            for queue in definitions["queues"]:
                await channel.declare_queue(queue["name"], passive=True)
        finally:
            await connection.close()

        # The declarer must agree with the file to the last argument, or RabbitMQ refuses it
        # with PRECONDITION_FAILED.
        transport = make_transport("rabbitmq", rabbit_env)
        try:
            await transport.start(areas)
            assert await transport.is_ready()
        finally:
            await transport.close()
    finally:
        await delete_queues(rabbit_env.url, intakes)
