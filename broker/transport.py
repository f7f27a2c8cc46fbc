"""The transport seam: what the relay and the workers need from a message broker, and no more.

Two implementations pass one contract suite: `broker.transport_embedded` (in-process, the default,
driven from the ledger's outbox) and `broker.transport_rabbitmq` (aio-pika, the production path).
Whether a message is acked, retried later or dead-lettered is decided by the handler's returned
`Disposition`, and applied by the transport in exactly one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "DEAD_LETTER_EXCHANGE", "DEAD_LETTER_QUEUE", "KELA_UPDATES_QUEUE", "REFERRALS_EXCHANGE",
    "REPLIES_EXCHANGE", "UNROUTED_QUEUE", "Ack", "DeadLetter", "Disposition", "Handler",
    "InboundMessage", "OutboundMessage", "PublishError", "Retry", "Transport",
    "disposition_for_error", "intake_queue", "referral_routing_key", "topic_matches",
    "update_routing_key",
]

REFERRALS_EXCHANGE = "handoff.referrals"
REPLIES_EXCHANGE = "handoff.replies"
DEAD_LETTER_EXCHANGE = "handoff.dlx"
DEAD_LETTER_QUEUE = "handoff.dead"
UNROUTED_EXCHANGE = "handoff.unrouted"
UNROUTED_QUEUE = "handoff.unrouted"
KELA_UPDATES_QUEUE = "handoff.kela.updates"

# Header names carried on every message.
H_ATTEMPT = "x-handoff-attempt"          # 1 on the first delivery, +1 on each Retry
H_CREATED_AT = "x-handoff-created-at"    # unix seconds when the outbox row was written
H_DEATH_REASON = "x-handoff-death-reason"
H_SOURCE_QUEUE = "x-handoff-source-queue"


def intake_queue(area: str) -> str:
    return f"handoff.intake.{area}"


def referral_routing_key(area: str, kind: str) -> str:
    """`referral.<area>.<kind>`; kind is a referral kind or `answer` / `escalation` for follow-ups."""
    return f"referral.{area}.{kind}"


def update_routing_key(update_type: str) -> str:
    return f"update.{update_type}"


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching (`*` one word, `#` zero or more), for the embedded transport."""
    pw, kw = pattern.split("."), key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(pw):
            return j == len(kw)
        if pw[i] == "#":
            return any(match(i + 1, k) for k in range(j, len(kw) + 1))
        if j == len(kw):
            return False
        return (pw[i] == "*" or pw[i] == kw[j]) and match(i + 1, j + 1)

    return match(0, 0)


@dataclass(frozen=True)
class OutboundMessage:
    """A message to publish. `event_id` becomes the AMQP `message_id` so consumers can drop repeats."""

    event_id: str
    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, str | int] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(frozen=True)
class InboundMessage:
    event_id: str
    queue: str
    routing_key: str
    body: bytes
    headers: Mapping[str, str | int]
    redelivered: bool
    attempt: int


@dataclass(frozen=True)
class Ack:
    """Done: the handler's effect is committed (or the message was a duplicate)."""


@dataclass(frozen=True)
class Retry:
    """Redeliver to the same queue after about `delay_s` seconds, with the attempt counter raised."""

    delay_s: float
    reason: str


@dataclass(frozen=True)
class DeadLetter:
    """Give up: route to `handoff.dlx` -> `handoff.dead` with the reason, and ack the original."""

    reason: str


Disposition = Ack | Retry | DeadLetter
Handler = Callable[[InboundMessage], Awaitable[Disposition]]


def disposition_for_error(
    message: InboundMessage, error: BaseException, *, delivery_limit: int, retry_delay_s: float
) -> Disposition:
    """The one policy for a handler that raised, shared by every transport: retry soon, and
    dead-letter once `attempt` reaches `delivery_limit`, so a poison message never blocks a queue.
    The reason names only the exception class: its message could carry personal data."""
    reason = f"handler_error: {type(error).__name__}"
    if message.attempt >= delivery_limit:
        return DeadLetter(reason=reason)
    return Retry(delay_s=retry_delay_s, reason=reason)


class PublishError(RuntimeError):
    """The broker did not confirm the message; the outbox row stays pending."""


@runtime_checkable
class Transport(Protocol):
    name: str
    durable: bool
    """True when a confirmed message survives a crash of this process (RabbitMQ); False for embedded,
    whose unfinished outbox rows are re-published from the ledger at start."""

    async def start(self, areas: Sequence[str]) -> None:
        """Connect and declare the topology for these intake areas (idempotent)."""

    async def publish(self, message: OutboundMessage) -> None:
        """Return only once the broker has confirmed the message; raise PublishError otherwise."""

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16) -> None:
        """Deliver messages of `queue` to `handler` until cancelled or closed.

        At most `prefetch` handlers run at once. A handler that raises is treated as
        `Retry` until the delivery limit, then `DeadLetter` (a poison message never blocks the queue).
        """

    async def is_ready(self) -> bool:
        """Whether publish would currently reach the broker (for /readyz)."""

    async def close(self) -> None:
        """Stop consuming and close connections; in-flight handlers finish first."""
