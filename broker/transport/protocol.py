"""The transport seam: what the relay and the workers need from a message broker, and no more.

Two implementations pass one contract suite: `broker.transport.embedded` (in-process, the default,
driven from the ledger's outbox) and `broker.transport.rabbitmq` (aio-pika, the production path).
Whether a message is acked, retried later or dead-lettered is decided by the handler's returned
`Disposition`, and applied by the transport in exactly one place.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from broker.resilience.failures import UNAVAILABLE_MAX_DELAY_S, is_unavailable, unavailable_reason

__all__ = [
    "DEAD_LETTER_EXCHANGE", "DEAD_LETTER_QUEUE", "H_FAULTS", "H_RECEIVER_HAS_IT",
    "KELA_UPDATES_QUEUE", "REFERRALS_EXCHANGE", "REPLIES_EXCHANGE", "UNROUTED_QUEUE", "Ack",
    "DeadLetter", "Disposition", "Handler", "InboundMessage", "OutboundMessage", "PublishError",
    "Retry", "Transport", "disposition_for_error", "intake_queue", "log_handler_failure",
    "referral_routing_key", "topic_matches", "update_routing_key",
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
H_FAULTS = "x-handoff-faults"            # handler errors so far that count towards the poison limit
H_RECEIVER_HAS_IT = "x-handoff-receiver-has-it"
"""Set on a retried copy whose receiver already acknowledged it (a 2xx came back) and only the
ledger's record is missing: the next attempt records, it does not deliver again, and the message is
never given up on (a case a receiver acknowledged must not become `failed`)."""


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
    headers: Mapping[str, str | int] = field(default_factory=dict)
    """Set on the retried copy, over the original's headers."""


@dataclass(frozen=True)
class DeadLetter:
    """Give up: route to `handoff.dlx` -> `handoff.dead` with the reason, and ack the original."""

    reason: str


Disposition = Ack | Retry | DeadLetter
Handler = Callable[[InboundMessage], Awaitable[Disposition]]


def _int_header(message: InboundMessage, name: str, default: int) -> int:
    value = message.headers.get(name, default)
    if isinstance(value, int):
        return value
    return int(value) if value.isascii() and value.isdigit() else default


def disposition_for_error(
    message: InboundMessage,
    error: BaseException,
    *,
    delivery_limit: int,
    retry_delay_s: float,
    give_up_after_s: float = 24 * 3600.0,
    max_unavailable_delay_s: float = UNAVAILABLE_MAX_DELAY_S,
    now: float | None = None,
) -> Disposition:
    """The one policy for a handler that raised, shared by every transport.

    A store or transport that is unavailable (`broker.resilience.failures`) is retried with a backoff capped
    at `max_unavailable_delay_s` (short, so a recovered database is used within seconds) until
    `give_up_after_s` after the message was created, and never counts as a fault. Any other error
    is the message's fault: retried soon, and dead-lettered at the `delivery_limit`-th fault, so a
    poison message never blocks a queue. Reasons name only exception classes: messages could carry
    personal data."""
    if is_unavailable(error):
        reason = unavailable_reason(error)
        created = _int_header(message, H_CREATED_AT, 0)
        clock = time.time() if now is None else now
        if (created and clock - created >= give_up_after_s
                and not message.headers.get(H_RECEIVER_HAS_IT)):
            return DeadLetter(reason=reason)
        delay = min(max_unavailable_delay_s, retry_delay_s * 2 ** min(message.attempt - 1, 16))
        return Retry(delay_s=delay, reason=reason)
    reason = f"handler_error: {type(error).__name__}"
    faults = _int_header(message, H_FAULTS, 0) + 1
    if faults >= delivery_limit:
        return DeadLetter(reason=reason)
    return Retry(delay_s=retry_delay_s, reason=reason, headers={H_FAULTS: faults})


def log_handler_failure(logger: Any, error: BaseException, attempt: int) -> None:
    """Expected failures (a store or broker away) at warning without a traceback; the rest, which
    are bugs or poison, at error with it."""
    if is_unavailable(error):
        logger.warning("handler_unavailable", attempt=attempt, reason=unavailable_reason(error))
    else:
        logger.error("handler_failed", attempt=attempt, exc_info=True)


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
