"""A local webhook receiver for tests: checks signatures and counts deliveries by event id."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from adapters.municipal.envelope import EVENT_ID_HEADER, SIGNATURE_HEADER, verify

SECRET = "test-webhook-secret"


@dataclass
class Receiver:
    """`behaviour(n)` decides the answer to the n-th request (1-based): a status, or "hang"."""

    behaviour: Callable[[int], int | str] = lambda _n: 204
    delay_s: float = 0.0
    """A slow receiver: every answer waits this long (a backlog builds up in the queues)."""
    gate: asyncio.Event | None = None
    """While set and not open, requests wait for it (a receiver that holds every request)."""
    secret: bytes = SECRET.encode()
    requests: int = 0
    bad_signatures: int = 0
    by_event: Counter[str] = field(default_factory=Counter)
    envelopes: dict[str, dict[str, Any]] = field(default_factory=dict)
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if not verify(self.secret, body, request.headers.get(SIGNATURE_HEADER, ""), now=int(time.time())):
            self.bad_signatures += 1
            return web.Response(status=401)
        env = await request.json()
        assert request.headers[EVENT_ID_HEADER] == env["event_id"]
        answer = self.behaviour(self.requests)
        if self.gate is not None:
            await self.gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if answer == "hang":
            await asyncio.sleep(30)
            return web.Response(status=504)
        assert isinstance(answer, int)
        if 200 <= answer < 300:
            self.by_event[env["event_id"]] += 1
            self.envelopes[env["event_id"]] = env
            self.accepted.set()
        return web.Response(status=answer)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def referral_ids(self) -> Counter[str]:
        return Counter(e["referral_id"] for e in self.envelopes.values() if e["type"] == "referral")
