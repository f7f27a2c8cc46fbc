"""One webhook receiver for tests, bench and demo: the partner's end of a signed webhook.

It verifies every signature, counts accepted envelopes per event and first arrivals per referral, and
answers as it is told (a status per request, a hang, a delay, a gate), on any POST path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from adapters.municipal.envelope import EVENT_ID_HEADER, SIGNATURE_HEADER, verify

__all__ = ["HANG_S", "WebhookReceiver"]

HANG_S = 30.0
"""How long a "hang" answer holds the request: longer than any delivery timeout of a test config."""


def _always_204(_n: int) -> int | str:
    return 204


@dataclass(eq=False)
class WebhookReceiver:
    secret: bytes
    behaviour: Callable[[int], int | str] = _always_204
    """The answer to the n-th request (1-based): an HTTP status, or "hang"."""
    delay_s: float = 0.0
    """A slow partner: every answer waits this long."""
    gate: asyncio.Event | None = None
    """When given, every request waits until it is set (a partner holding every request)."""
    on_accepted: Callable[[web.Request, dict[str, Any]], Awaitable[None]] | None = None
    """Called with each envelope answered 2xx, before the answer (the demo's intake teams)."""
    on_new_referral: Callable[[str], None] | None = None
    """Called with the referral id of each referral envelope seen for the first time."""
    port: int = 0
    """0: any free port, known after `start()`."""
    backlog: int = 128

    requests: int = field(default=0, init=False)
    bad_signatures: int = field(default=0, init=False)
    bad_event_ids: int = field(default=0, init=False)
    """Requests whose event-id header differs from the envelope's `event_id`."""
    attempts: list[str] = field(default_factory=list, init=False)
    """The event id of every signed request, whatever it was answered (retries included)."""
    by_event: Counter[str] = field(default_factory=Counter, init=False)
    """Accepted (2xx) deliveries per event id."""
    envelopes: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    """The last accepted envelope per event id."""
    first_seen: dict[str, float] = field(default_factory=dict, init=False)
    """referral_id -> `time.perf_counter()` at the arrival of its first accepted referral envelope."""
    duplicates: int = field(default=0, init=False)
    """Accepted referral envelopes of a referral that had already arrived."""
    accepted: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    """Set by the first accepted envelope."""

    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)
    _waiting: set[str] = field(default_factory=set, init=False, repr=False)
    _complete: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        self.requests += 1
        n = self.requests
        body = await request.read()
        if not verify(self.secret, body, request.headers.get(SIGNATURE_HEADER, ""), now=int(time.time())):
            self.bad_signatures += 1
            return web.Response(status=401)
        env: dict[str, Any] = await request.json()
        if request.headers.get(EVENT_ID_HEADER) != env.get("event_id"):
            self.bad_event_ids += 1
            return web.Response(status=400)
        self.attempts.append(str(env.get("event_id")))
        answer = self.behaviour(n)
        if self.gate is not None:
            await self.gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if answer == "hang":
            await asyncio.sleep(HANG_S)
            return web.Response(status=504)
        assert isinstance(answer, int), answer
        if 200 <= answer < 300:
            self._record(env, arrived)
            if self.on_accepted is not None:
                await self.on_accepted(request, env)
        return web.Response(status=answer)

    def _record(self, env: dict[str, Any], arrived: float) -> None:
        self.by_event[env["event_id"]] += 1
        self.envelopes[env["event_id"]] = env
        self.accepted.set()
        referral_id = env.get("referral_id")
        if env.get("type") != "referral" or not isinstance(referral_id, str):
            return
        if referral_id in self.first_seen:
            self.duplicates += 1
            return
        self.first_seen[referral_id] = arrived
        if self.on_new_referral is not None:
            self.on_new_referral(referral_id)
        if referral_id in self._waiting:
            self._waiting.discard(referral_id)
            if not self._waiting:
                self._complete.set()

    def referral_ids(self) -> Counter[str]:
        """Accepted referral envelopes per referral id (distinct events: a redelivery of one event
        counts once here; `by_event` counts every delivery)."""
        return Counter(e["referral_id"] for e in self.envelopes.values() if e["type"] == "referral")

    async def wait_for_referrals(self, referral_ids: Iterable[str], within_s: float) -> set[str]:
        """Wait until every referral has arrived; returns the ids still missing at the timeout."""
        self._waiting = {r for r in referral_ids if r not in self.first_seen}
        if self._waiting:
            self._complete.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._complete.wait(), within_s)
        missing, self._waiting = self._waiting, set()
        return missing

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock, backlog=self.backlog).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
