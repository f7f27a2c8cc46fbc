"""The loop of the service's periodic jobs (SLA clock, retention, reply-file scanner).

One place decides what a failed round means: it is logged with its traceback under the job's own
event name and the job carries on at the next interval, so one bad round never stops a job for the
life of the process (the supervisor would otherwise tear every job down with it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

__all__ = ["run_periodically"]

log = structlog.get_logger(__name__)


async def run_periodically(tick: Callable[[], Awaitable[Any]], interval_s: float, *,
                           failure_event: str, wait_first: bool = False) -> None:
    """Call `tick` every `interval_s` seconds until cancelled; `wait_first` sleeps before the first."""
    if wait_first:
        await asyncio.sleep(interval_s)
    while True:
        try:
            await tick()
        except Exception:
            log.exception(failure_event)
        await asyncio.sleep(interval_s)
