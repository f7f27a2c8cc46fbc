"""The transport contract: one suite, run on the embedded transport and on the real RabbitMQ.

Tests wait on conditions (a Collector seeing a message, a handler reaching a count), never on
sleeps. The few RabbitMQ-only checks (reconnect after the broker drops connections, the
definitions file accepted by the server) come last.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aio_pika
import pytest
from structlog.testing import capture_logs

from broker.rabbitmq_topology import (
    build_topology,
    pick_retry_tier,
    retry_tier_queue,
    topology_definitions,
)
from broker.transport import (
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
    InboundMessage,
    OutboundMessage,
    PublishError,
    Retry,
    Transport,
    intake_queue,
    referral_routing_key,
    update_routing_key,
)
from transport_fixtures import (  # noqa: F401  (fixtures are found by name)
    DELIVERY_LIMIT,
    RETRY_TIERS_S,
    WAIT_S,
    Collector,
    Consumers,
    Harness,
    RabbitEnv,
    consumers,
    delete_queues,
    fresh_area,
    harness,
    make_transport,
    missing,
    rabbit_env,
    rabbit_harness,
    run_ctl,
)


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
    assert {"handoff.retry.200ms", "handoff.retry.1s", "handoff.retry.300s"} <= names
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
    rabbit_env: RabbitEnv, tmp_path: Path
) -> None:
    if rabbit_env.vhost is None:
        missing("rabbitmqctl (to import definitions)")
    areas = [fresh_area(), fresh_area(), "kela"]
    definitions = topology_definitions(
        areas, delivery_limit=DELIVERY_LIMIT, retry_tiers_s=RETRY_TIERS_S, vhost=rabbit_env.vhost
    )
    assert {"exchanges", "queues", "bindings"} <= definitions.keys()
    path = tmp_path / "definitions.json"
    path.write_text(json.dumps(definitions, indent=2))
    intakes = [intake_queue(a) for a in areas if a != "kela"]
    try:
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
