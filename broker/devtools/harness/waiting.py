"""The one polling wait of tests, bench and demo: a condition checked until it holds, with a timeout."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["ConditionTimeout", "wait_for"]


class ConditionTimeout(AssertionError):
    """The condition did not hold in time. An AssertionError, so that a test reports it as a failed
    expectation (with what it waited for), not as an error in the test's own code."""


async def wait_for(condition: Callable[[], Any], timeout: float = 10, what: str = "condition",
                   *, interval: float = 0.01) -> Any:
    """Call `condition()` (plain or async) every `interval` seconds until it returns something truthy,
    and return that; raise `ConditionTimeout` after `timeout` seconds. Never a fixed sleep: the wait
    ends as soon as the condition holds."""

    async def poll() -> Any:
        while True:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(interval)

    try:
        return await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise ConditionTimeout(f"timed out after {timeout} s waiting for {what}") from None
