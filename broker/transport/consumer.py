"""The consumer core both transports share: a consume() session, the attempt header, and running a
handler under the one failure policy (`disposition_for_error`).

What differs per transport (where a message comes from, how a Disposition is applied) stays in
`embedded.py` and `rabbitmq.py`; what a handler's answer or error means is decided here, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from broker.transport.protocol import (
    H_ATTEMPT,
    Ack,
    DeadLetter,
    Disposition,
    Handler,
    InboundMessage,
    Retry,
    disposition_for_error,
    log_handler_failure,
)

__all__ = ["ConsumerSession", "HandlerPolicy", "attempt_of"]

_log = structlog.get_logger(__name__)

T = TypeVar("T")


def attempt_of(headers: Mapping[str, str | int]) -> int:
    """The delivery attempt a message is on (1 for a first delivery or a garbled header)."""
    try:
        return max(1, int(headers.get(H_ATTEMPT, 1)))
    except ValueError:
        return 1


@dataclass(eq=False)
class ConsumerSession:
    """One running consume(): `stop()` makes it take no new message and wakes its idle workers;
    the transport's close() then waits on `done` while running handlers finish."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    idle: set[asyncio.Task[None]] = field(default_factory=set)
    setting_up: asyncio.Task[None] | None = None
    """The consume() task while it sets up (RabbitMQ: opening its channel, which waits as long as
    a reconnect takes); stop() cancels it."""
    interrupted_setup: bool = False

    def stop(self) -> None:
        self.stopping.set()
        if self.setting_up is not None:
            self.interrupted_setup = True
            self.setting_up.cancel()
        for task in self.idle:
            task.cancel()

    async def take(self, source: asyncio.Queue[T]) -> T:
        """The next message of `source`; while waiting for it the worker is idle, so stop()
        cancels the wait (never a running handler)."""
        me = asyncio.current_task()
        assert me is not None
        self.idle.add(me)
        try:
            return await source.get()
        finally:
            self.idle.discard(me)


@dataclass(frozen=True)
class HandlerPolicy:
    """Runs a handler and returns its Disposition; what it raised becomes the one policy's answer."""

    delivery_limit: int
    error_retry_delay_s: float
    give_up_after_s: float

    async def handle(self, message: InboundMessage, handler: Handler) -> Disposition:
        try:
            disposition = await handler(message)
            if not isinstance(disposition, Ack | Retry | DeadLetter):
                raise TypeError(f"handler returned {type(disposition).__name__}")
        except Exception as exc:
            log_handler_failure(_log, exc, message.attempt)
            return disposition_for_error(
                message,
                exc,
                delivery_limit=self.delivery_limit,
                retry_delay_s=self.error_retry_delay_s,
                give_up_after_s=self.give_up_after_s,
            )
        return disposition
