"""In-process transport: the RabbitMQ topology emulated with asyncio queues, so a laptop runs the
whole relay -> worker path without a broker.

Nothing here survives the process (`durable = False`): the ledger's outbox is the durable copy and
the relay re-publishes unfinished rows at start. Routing follows the same exchange/binding specs as
RabbitMQ (`broker.transport.topology`), including the alternate exchange for unroutable messages, so
the contract suite holds both transports to the same behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import structlog

from broker.transport.consumer import ConsumerSession, HandlerPolicy, attempt_of
from broker.transport.protocol import (
    DEAD_LETTER_EXCHANGE,
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
    topic_matches,
)
from broker.transport.topology import Topology, build_topology

__all__ = ["EmbeddedTransport"]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Envelope:
    event_id: str
    routing_key: str
    body: bytes
    headers: Mapping[str, str | int]
    content_type: str
    attempt: int
    redelivered: bool = False


class EmbeddedTransport:
    name = "embedded"
    durable = False

    def __init__(self, *, delivery_limit: int = 5, error_retry_delay_s: float = 1.0,
                 give_up_after_s: float = 24 * 3600.0) -> None:
        if delivery_limit < 1:
            raise ValueError(f"delivery_limit must be at least 1, got {delivery_limit}")
        self._delivery_limit = delivery_limit
        self._policy = HandlerPolicy(delivery_limit, error_retry_delay_s, give_up_after_s)
        self._areas: set[str] = set()
        self._topology: Topology | None = None
        self._queues: dict[str, asyncio.Queue[_Envelope]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._sessions: set[ConsumerSession] = set()
        self._closed = False

    async def start(self, areas: Sequence[str]) -> None:
        if self._closed:
            raise RuntimeError("transport is closed")
        self._areas.update(areas)
        self._topology = build_topology(
            self._areas, delivery_limit=self._delivery_limit, retry_tiers_s=()
        )
        for spec in self._topology.queues:
            self._queues.setdefault(spec.name, asyncio.Queue())

    async def publish(self, message: OutboundMessage) -> None:
        if self._closed:
            raise PublishError("transport is closed")
        if self._topology is None:
            raise PublishError("transport is not started")
        if message.exchange and self._topology.exchange(message.exchange) is None:
            raise PublishError(f"unknown exchange {message.exchange!r}")
        envelope = _Envelope(
            event_id=message.event_id,
            routing_key=message.routing_key,
            body=message.body,
            headers=dict(message.headers),
            content_type=message.content_type,
            attempt=attempt_of(message.headers),
        )
        for queue in self._route(message.exchange, message.routing_key):
            self._queues[queue].put_nowait(envelope)

    def _route(self, exchange: str, routing_key: str) -> set[str]:
        """AMQP routing over the shared specs; an exchange that routes nowhere hands the message
        to its alternate exchange, as RabbitMQ does."""
        assert self._topology is not None
        if not exchange:  # the default exchange: a queue by name, or nowhere
            return {routing_key} if routing_key in self._queues else set()
        spec = self._topology.exchange(exchange)
        if spec is None:
            return set()
        targets: set[str] = set()
        for binding in self._topology.bindings:
            if binding.exchange != exchange:
                continue
            if (
                spec.type == "fanout"
                or (spec.type == "topic" and topic_matches(binding.routing_key, routing_key))
                or (spec.type == "direct" and binding.routing_key == routing_key)
            ):
                targets.add(binding.queue)
        alternate = spec.arguments.get("alternate-exchange")
        if not targets and isinstance(alternate, str) and alternate != exchange:
            return self._route(alternate, routing_key)
        return targets

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        if self._closed:
            raise RuntimeError("transport is closed")
        if self._topology is None or queue not in self._topology.consumable_queues:
            raise ValueError(f"unknown queue {queue!r}")
        source = self._queues[queue]
        session = ConsumerSession()
        self._sessions.add(session)
        try:
            # One worker per prefetch slot bounds the handlers running at once.
            async with asyncio.TaskGroup() as tg:
                for _ in range(prefetch):
                    tg.create_task(self._work(queue, source, handler, session))
        finally:
            self._sessions.discard(session)
            session.done.set()

    async def _work(
        self, queue: str, source: asyncio.Queue[_Envelope], handler: Handler,
        session: ConsumerSession,
    ) -> None:
        while not session.stopping.is_set():
            envelope = await session.take(source)
            try:
                disposition = await self._handle(queue, envelope, handler)
            except asyncio.CancelledError:
                # Not acked: give it back, as a broker does when a consumer goes away.
                source.put_nowait(replace(envelope, redelivered=True))
                raise
            self._apply(queue, envelope, disposition)

    async def _handle(self, queue: str, envelope: _Envelope, handler: Handler) -> Disposition:
        message = InboundMessage(
            event_id=envelope.event_id,
            queue=queue,
            routing_key=envelope.routing_key,
            body=envelope.body,
            headers={**envelope.headers, H_ATTEMPT: envelope.attempt},
            redelivered=envelope.redelivered,
            attempt=envelope.attempt,
        )
        with structlog.contextvars.bound_contextvars(event_id=envelope.event_id, queue=queue):
            return await self._policy.handle(message, handler)

    def _apply(self, queue: str, envelope: _Envelope, disposition: Disposition) -> None:
        """Synchronous on purpose: no await between the handler's answer and its effect, so a
        cancellation can never leave a message half-settled."""
        if isinstance(disposition, Retry):
            attempt = envelope.attempt + 1
            again = replace(
                envelope,
                attempt=attempt,
                redelivered=False,
                headers={**envelope.headers, **disposition.headers, H_ATTEMPT: attempt},
            )
            self._schedule(max(0.0, disposition.delay_s), queue, again)
            _log.info(
                "message_retry_scheduled",
                event_id=envelope.event_id,
                queue=queue,
                attempt=envelope.attempt,
                delay_s=disposition.delay_s,
                reason=disposition.reason,
            )
        elif isinstance(disposition, DeadLetter):
            dead = replace(
                envelope,
                redelivered=False,
                headers={
                    **envelope.headers,
                    H_DEATH_REASON: disposition.reason,
                    H_SOURCE_QUEUE: queue,
                },
            )
            for target in self._route(DEAD_LETTER_EXCHANGE, envelope.routing_key):
                self._queues[target].put_nowait(dead)
            _log.warning(
                "message_dead_lettered",
                event_id=envelope.event_id,
                queue=queue,
                attempt=envelope.attempt,
                reason=disposition.reason,
            )

    def _schedule(self, delay_s: float, queue: str, envelope: _Envelope) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self._queues[queue].put_nowait(envelope)

        handle = loop.call_later(delay_s, fire)
        self._timers.add(handle)

    async def is_ready(self) -> bool:
        return self._topology is not None and not self._closed

    async def close(self) -> None:
        """Lets running handlers finish; messages waiting in queues or retry timers are dropped,
        which is safe only because the outbox re-publishes them at the next start."""
        self._closed = True
        sessions = list(self._sessions)
        for session in sessions:
            session.stop()
        for session in sessions:
            await session.done.wait()
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
