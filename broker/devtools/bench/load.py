"""The load generator: Kela's handlers POSTing referrals, closed-loop (saturation) or open-loop (a
fixed offered rate)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from broker.devtools.demo_data import make_referral

# Tampere (area 08) and Helsinki (area 90): two intake queues, both delivered by webhook.
_MUNICIPALITIES = ("837", "091")


@dataclass
class _Phase:
    started: float = 0.0
    accepted: dict[str, float] = field(default_factory=dict)
    """referral_id -> when its POST started."""
    answered_s: list[float] = field(default_factory=list)
    """How long each accepted POST took to be answered (the 202 comes after the ledger commit)."""


class _Load:
    """Kela's handlers: POST /v1/referrals round-robin over the service processes."""

    def __init__(self, http: aiohttp.ClientSession, bases: Sequence[str], token: str) -> None:
        self._http = http
        self._urls = [f"{b}/v1/referrals" for b in bases]
        self._headers = {"Authorization": f"Bearer {token}"}
        self._run = uuid.uuid4().hex[:8]
        self._rng = random.Random(self._run)
        self._sent = 0
        self.errors: Counter[str] = Counter()

    async def _post(self, phase: _Phase) -> None:
        n = self._sent
        self._sent += 1
        body = make_referral(self._rng, kela_reference=f"BENCH-{self._run}-{n}",
                             municipality_code=_MUNICIPALITIES[n % len(_MUNICIPALITIES)])
        started = time.perf_counter()
        try:
            async with self._http.post(self._urls[n % len(self._urls)], json=body,
                                       headers=self._headers) as resp:
                if resp.status == 202:
                    phase.accepted[(await resp.json())["referral_id"]] = started
                    phase.answered_s.append(time.perf_counter() - started)
                else:
                    await resp.read()
                    self.errors[f"http_{resp.status}"] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[type(exc).__name__] += 1

    async def closed_loop(self, count: int, concurrency: int) -> _Phase:
        """`concurrency` clients, each sending its next referral as soon as the last was accepted."""
        phase = _Phase(started=time.perf_counter())
        remaining = count

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await self._post(phase)

        await asyncio.gather(*(client() for _ in range(min(concurrency, count))))
        return phase

    async def open_loop(self, rate: float, duration_s: float) -> _Phase:
        """Referrals sent on a fixed schedule, whether or not earlier ones have been answered."""
        loop = asyncio.get_running_loop()
        total = max(1, round(rate * duration_s))
        phase = _Phase(started=time.perf_counter())
        begin = loop.time()
        async with asyncio.TaskGroup() as group:
            for i in range(total):
                delay = begin + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                group.create_task(self._post(phase))
        return phase
