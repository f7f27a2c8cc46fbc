"""The production transport: RabbitMQ through aio-pika, with publisher confirms and quorum queues.

A message is acked only after the handler has returned its Disposition and, for Retry and
DeadLetter, only after the broker confirmed the copy that carries it on; a crash anywhere in
between leaves the original unacked, so RabbitMQ delivers it again (at least once; consumers drop
repeats by `message_id`). The queues' `x-delivery-limit` stays as the server-side backstop for a
message that kills the process before any Disposition can be applied.

The topology comes from `broker.transport.topology`, the same specs that produce the definitions
file, so what is declared here and what is deployed cannot disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import cast

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    HeadersType,
)
from pamqp.commands import Basic

from broker.transport.consumer import ConsumerSession, HandlerPolicy, attempt_of
from broker.transport.protocol import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    H_ATTEMPT,
    H_DEATH_REASON,
    H_SOURCE_QUEUE,
    DeadLetter,
    Disposition,
    Handler,
    InboundMessage,
    OutboundMessage,
    PublishError,
    Retry,
)
from broker.transport.topology import (
    RETRY_EXCHANGE,
    Topology,
    build_topology,
    pick_retry_tier,
    retry_routing_key,
)

__all__ = ["RabbitMQTransport"]

_log = structlog.get_logger(__name__)

# A retried copy travels with the retry tier's routing key; the original key rides in this header
# so that the handler sees the same routing key on every attempt.
_H_ROUTING_KEY = "x-handoff-routing-key"
# Headers RabbitMQ adds on its own (dead-lettering, quorum redelivery, CC/BCC); handlers never
# see them, and a republished copy does not carry them on.
_BROKER_HEADERS = frozenset(
    {
        _H_ROUTING_KEY,
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-received-from",
        "CC",
        "BCC",
    }
)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _inbound(queue: str, incoming: AbstractIncomingMessage) -> InboundMessage:
    raw = dict(incoming.headers or {})
    headers: dict[str, str | int] = {}
    for key, value in raw.items():
        if key not in _BROKER_HEADERS and isinstance(value, str | int):
            headers[key] = value
    if queue == DEAD_LETTER_QUEUE and H_DEATH_REASON not in headers:
        # Dead-lettered by RabbitMQ itself (e.g. the delivery limit after crashes), not by a
        # DeadLetter disposition: name the broker's reason so the dead letters explain themselves.
        deaths = raw.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            reason = _text(deaths[0].get("reason")) or "unknown"
            headers[H_DEATH_REASON] = f"broker: {reason}"
            source = _text(deaths[0].get("queue"))
            if source:
                headers.setdefault(H_SOURCE_QUEUE, source)
    attempt = attempt_of(headers)
    headers[H_ATTEMPT] = attempt
    return InboundMessage(
        event_id=incoming.message_id or "",
        queue=queue,
        routing_key=_text(raw.get(_H_ROUTING_KEY)) or incoming.routing_key or "",
        body=incoming.body,
        headers=headers,
        redelivered=bool(incoming.redelivered),
        attempt=attempt,
    )


def _amqp_message(
    *, event_id: str, body: bytes, headers: Mapping[str, str | int], content_type: str | None
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        headers=cast(HeadersType, dict(headers)),
        message_id=event_id or None,
        content_type=content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


class RabbitMQTransport:
    name = "rabbitmq"
    durable = True

    def __init__(
        self,
        url: str,
        *,
        delivery_limit: int = 5,
        retry_tiers_s: Sequence[float] = (1, 5, 30, 120, 300),
        error_retry_delay_s: float = 1.0,
        give_up_after_s: float = 24 * 3600.0,
        publish_timeout_s: float = 10.0,
        reconnect_interval_s: float = 2.0,
        connection_name: str = "kela-handoff",
    ) -> None:
        if not retry_tiers_s:
            raise ValueError("at least one retry tier is needed")
        # Fails early on a bad configuration, before any connection is made.
        build_topology((), delivery_limit=delivery_limit, retry_tiers_s=retry_tiers_s)
        self._url = url
        self._delivery_limit = delivery_limit
        self._retry_tiers_s = tuple(retry_tiers_s)
        self._policy = HandlerPolicy(delivery_limit, error_retry_delay_s, give_up_after_s)
        self._publish_timeout_s = publish_timeout_s
        self._reconnect_interval_s = reconnect_interval_s
        self._connection_name = connection_name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._areas: set[str] = set()
        self._topology: Topology | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._queues: dict[str, AbstractQueue] = {}
        self._bound: set[tuple[str, str, str]] = set()
        self._sessions: set[ConsumerSession] = set()
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, areas: Sequence[str]) -> None:
        if self._closed:
            raise RuntimeError("transport is closed")
        topology = build_topology(
            {*self._areas, *areas},
            delivery_limit=self._delivery_limit,
            retry_tiers_s=self._retry_tiers_s,
        )
        if self._connection is None:
            self._connection = await aio_pika.connect_robust(
                self._url,
                reconnect_interval=self._reconnect_interval_s,
                client_properties={"connection_name": self._connection_name},
            )
            self._channel = await self._connection.channel(publisher_confirms=True)
        await self._declare(topology)
        self._areas.update(areas)
        self._topology = topology
        _log.info("transport_started", transport=self.name, queues=len(topology.queues))

    async def _declare(self, topology: Topology) -> None:
        """Declares what this connection has not declared yet; the robust channel re-declares it
        all after a reconnect. A PRECONDITION_FAILED here means the server holds the same name
        with other arguments: an operator must reconcile it, so it is raised, not papered over."""
        channel = self._channel
        assert channel is not None
        for ex in topology.exchanges:
            if ex.name not in self._exchanges:
                self._exchanges[ex.name] = await channel.declare_exchange(
                    ex.name, type=ex.type, durable=True, arguments=dict(ex.arguments)
                )
        for q in topology.queues:
            if q.name not in self._queues:
                self._queues[q.name] = await channel.declare_queue(
                    q.name, durable=True, arguments=dict(q.arguments)
                )
        for b in topology.bindings:
            key = (b.exchange, b.queue, b.routing_key)
            if key not in self._bound:
                await self._queues[b.queue].bind(
                    self._exchanges[b.exchange],
                    routing_key=b.routing_key,
                    arguments=dict(b.arguments) or None,
                )
                self._bound.add(key)

    async def is_ready(self) -> bool:
        connection, channel = self._connection, self._channel
        return (
            not self._closed
            and connection is not None
            and channel is not None
            and not connection.is_closed
            and connection.connected.is_set()
            and not channel.is_closed
        )

    async def close(self) -> None:
        """Stops every consumer, waits for its running handlers to settle their messages, then
        closes the channel and the connection."""
        if self._closed:
            return
        self._closed = True
        sessions = list(self._sessions)
        for session in sessions:
            session.stop()
        for session in sessions:
            await session.done.wait()
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await connection.close()
        _log.info("transport_closed", transport=self.name)

    # -- publishing ----------------------------------------------------------------------------

    async def publish(self, message: OutboundMessage) -> None:
        exchange = self._exchange(message.exchange)
        amqp_message = _amqp_message(
            event_id=message.event_id,
            body=message.body,
            headers=message.headers,
            content_type=message.content_type,
        )
        await self._confirmed(exchange, amqp_message, message.routing_key)

    def _exchange(self, name: str, *, settling: bool = False) -> AbstractExchange:
        """`settling`: a handler finishing during close() may still carry its message on."""
        if self._closed and not settling:
            raise PublishError("transport is closed")
        if self._channel is None:
            raise PublishError("transport is not started")
        if not name:
            return self._channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            # Publishing to an undeclared exchange would make RabbitMQ close the channel.
            raise PublishError(f"unknown exchange {name!r}")
        return exchange

    async def _confirmed(
        self, exchange: AbstractExchange, message: aio_pika.Message, routing_key: str
    ) -> None:
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                # mandatory=False: unroutable messages go to the alternate exchange instead.
                result = await exchange.publish(message, routing_key, mandatory=False)
        except Exception as exc:
            raise PublishError(
                f"publish to {exchange.name or '(default)'!r} not confirmed: {type(exc).__name__}"
            ) from exc
        if not isinstance(result, Basic.Ack):
            raise PublishError(f"publish to {exchange.name or '(default)'!r} not confirmed")

    # -- consuming -----------------------------------------------------------------------------

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        if self._closed or self._connection is None or self._topology is None:
            raise RuntimeError("transport is not started or already closed")
        spec = self._topology.queue(queue)
        if spec is None or not spec.consumable:
            raise ValueError(f"unknown queue {queue!r}")
        connection = self._connection
        me = asyncio.current_task()
        assert me is not None
        session = ConsumerSession(setting_up=me)
        self._sessions.add(session)
        channel: AbstractRobustChannel | None = None
        try:
            try:
                await connection.ready()
                # A channel per consumer: its QoS is the prefetch bound, and the robust channel
                # restores QoS, queue and consumer after a reconnect.
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=prefetch)
                amqp_queue = await channel.declare_queue(
                    queue, durable=True, arguments=dict(spec.arguments)
                )
                # RabbitMQ sends at most `prefetch` unacked messages to `prefetch` workers.
                deliveries: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
                consumer_tag = await amqp_queue.consume(deliveries.put)
            except asyncio.CancelledError:
                # close() interrupted the setup: return quietly unless our caller cancelled too.
                if session.interrupted_setup and me.uncancel() == 0:
                    return
                raise
            finally:
                session.setting_up = None
            try:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(prefetch):
                        tg.create_task(self._work(queue, deliveries, handler, session))
                    await session.stopping.wait()
                    # Closing: no new deliveries while the running handlers finish.
                    await self._cancel_consumer(amqp_queue, consumer_tag)
            finally:
                # Messages still in `deliveries` are unacked: closing the channel returns them.
                await self._cancel_consumer(amqp_queue, consumer_tag)
        finally:
            self._sessions.discard(session)
            if channel is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(channel.close(), timeout=5)
            session.done.set()

    @staticmethod
    async def _cancel_consumer(amqp_queue: AbstractQueue, consumer_tag: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(amqp_queue.cancel(consumer_tag), timeout=5)

    async def _work(
        self,
        queue: str,
        deliveries: asyncio.Queue[AbstractIncomingMessage],
        handler: Handler,
        session: ConsumerSession,
    ) -> None:
        while not session.stopping.is_set():
            incoming = await session.take(deliveries)
            message = _inbound(queue, incoming)
            with structlog.contextvars.bound_contextvars(event_id=message.event_id, queue=queue):
                disposition = await self._policy.handle(message, handler)
                await self._settle(incoming, message, disposition)

    async def _settle(
        self, incoming: AbstractIncomingMessage, message: InboundMessage, disposition: Disposition
    ) -> None:
        """Applies the Disposition: the copy that carries the message on is confirmed before the
        original is acked, so there is no moment at which neither exists."""
        try:
            if isinstance(disposition, Retry):
                await self._publish_retry(message, disposition, incoming.content_type)
            elif isinstance(disposition, DeadLetter):
                await self._publish_dead_letter(message, disposition, incoming.content_type)
        except PublishError as exc:
            _log.warning("disposition_not_confirmed", attempt=message.attempt, error=str(exc))
            # Back to the queue now; the quorum queue's delivery limit bounds how often.
            with contextlib.suppress(Exception):
                await incoming.nack(requeue=True)
            return
        try:
            await incoming.ack()
        except Exception as exc:
            # The channel went away; RabbitMQ redelivers it and the consumer drops the repeat.
            _log.info("ack_failed", error_type=type(exc).__name__)

    async def _publish_retry(
        self, message: InboundMessage, retry: Retry, content_type: str | None
    ) -> None:
        tier = pick_retry_tier(self._retry_tiers_s, retry.delay_s)
        attempt = message.attempt + 1
        copy = _amqp_message(
            event_id=message.event_id,
            body=message.body,
            headers={
                **message.headers,
                **retry.headers,
                H_ATTEMPT: attempt,
                _H_ROUTING_KEY: message.routing_key,
            },
            content_type=content_type,
        )
        await self._confirmed(
            self._exchange(RETRY_EXCHANGE, settling=True),
            copy,
            retry_routing_key(tier, message.queue),
        )
        _log.info(
            "message_retry_scheduled",
            attempt=message.attempt,
            delay_s=tier,
            reason=retry.reason,
        )

    async def _publish_dead_letter(
        self, message: InboundMessage, dead: DeadLetter, content_type: str | None
    ) -> None:
        copy = _amqp_message(
            event_id=message.event_id,
            body=message.body,
            headers={
                **message.headers,
                H_DEATH_REASON: dead.reason,
                H_SOURCE_QUEUE: message.queue,
            },
            content_type=content_type,
        )
        await self._confirmed(
            self._exchange(DEAD_LETTER_EXCHANGE, settling=True), copy, message.routing_key
        )
        _log.warning("message_dead_lettered", attempt=message.attempt, reason=dead.reason)
