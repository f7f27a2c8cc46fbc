"""Faults on the production pair (RabbitMQ + PostgreSQL): connections closed by the broker, a broker
restart, and a SIGKILLed process next to a live one, each injected mid-stream.

The restart stops and starts a RabbitMQ node of the test's own (`private_rabbitmq`, on other
ports), never the machine's shared broker, which other runs use meanwhile (issue 15). The other
faults stay on the shared broker: closing the connections of the test's own vhost touches nobody
else.

Each test runs the real `handoff run` as subprocesses, streams a few hundred referrals, injects the
fault when the N-th referral has been accepted, and then waits (on conditions, with timeouts) until the
system is quiet. It then checks the promise of a 202: every accepted referral reached the webhook, is
`delivered` exactly once in the ledger, and nothing became a dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.devtools.harness import wait_for
from broker.store.ledger import Ledger, utcnow
from tests.helpers.private_services import PrivateRabbitMQ
from tests.helpers.processes import (
    LedgerAudit,
    assert_delivered_once,
    delivered_count,
    production_pair,
    rabbitmqctl,
    send,
    send_until_all_accepted,
    service_process,
    vhost_of,
    wait_quiet,
)
from tests.helpers.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.rabbitmq]


REFERRALS = 300
FAULT_AT = 100  # inject the fault once this many referrals have been accepted


# --- RabbitMQ observation (the shared helpers are in tests/helpers/processes.py) -------------------------


async def _connection_pids(vhost: str) -> set[str]:
    """The connections into `vhost` (list_connections is server-wide: it has no -p)."""
    out = await rabbitmqctl("list_connections", "vhost", "pid", "--no-table-headers")
    rows = (line.split("\t") for line in out.splitlines())
    return {row[1].strip() for row in rows if len(row) == 2 and row[0] == vhost}


async def _readyz(base: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
            http.get(f"{base}/readyz") as r:
        body: dict[str, Any] = await r.json()
        return r.status, body


# --- the faults ---------------------------------------------------------------------------------


@production_pair
async def test_broker_closes_all_connections_mid_stream(tmp_path: Path, store_url: str,
                                                        transport_url: str) -> None:
    vhost = vhost_of(transport_url)
    receiver = await Receiver().start()
    service = service_process(tmp_path, "svc", store_url=store_url, transport_url=transport_url,
                              hook_url=receiver.url)
    ledger = LedgerAudit(store_url)
    try:
        await service.start()
        before = await _connection_pids(vhost)
        assert before, "the service holds no connection in the test vhost"
        refs = [f"CLOSE-{i}" for i in range(REFERRALS)]
        trigger = asyncio.Event()
        seen = 0

        def on_accepted(n: int) -> None:
            nonlocal seen
            seen = n
            if n >= FAULT_AT:
                trigger.set()

        async def fault() -> int:
            await trigger.wait()
            await rabbitmqctl("close_all_connections", "-p", vhost, "fault test")
            return seen

        first_accepted: dict[str, str] = {}

        async def stream() -> None:
            # The ledger accepts throughout: every POST is answered 202.
            first_accepted.update(await send([service.base], refs, on_accepted=on_accepted,
                                             all_accepted=True))

        accepted_at_fault, _ = await asyncio.gather(fault(), stream())
        assert trigger.is_set()
        assert accepted_at_fault < REFERRALS, "the fault came after the stream"

        async def reconnected() -> bool:
            now = await _connection_pids(vhost)
            status, body = await _readyz(service.base)
            return bool(now) and not (now & before) and status == 200 and body["status"] == "ready"

        await wait_for(reconnected, 20, "the service reconnected with new connections", interval=0.3)
        await wait_quiet(receiver, ledger, vhost, set(first_accepted.values()))
        await assert_delivered_once(receiver, ledger, service.base, first_accepted)
        assert service.terminate() == 0
    finally:
        service.kill()
        await receiver.stop()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_rabbitmq_restart_mid_stream(tmp_path: Path, store_url: str,
                                           private_rabbitmq: PrivateRabbitMQ) -> None:
    """A full stop and start of the broker's node (durable queues and persistent messages kept on
    its disk); the test's own node, so the default vhost is the test's alone."""
    rabbit = private_rabbitmq
    receiver = await Receiver().start()
    service = service_process(tmp_path, "svc", store_url=store_url, transport_url=rabbit.url,
                              hook_url=receiver.url)
    ledger = LedgerAudit(store_url)
    refs = [f"RESTART-{i}" for i in range(REFERRALS)]
    # Sent while RabbitMQ runs (the fault lands in the middle), while it is down, after it is back.
    streamed, while_down, after = refs[:200], refs[200:250], refs[250:]
    try:
        await service.start()
        trigger = asyncio.Event()

        def on_accepted(n: int) -> None:
            if n >= FAULT_AT:
                trigger.set()

        async def stop_broker() -> None:
            await trigger.wait()
            await rabbit.stop()

        accepted: dict[str, str] = {}

        async def stream() -> None:
            accepted.update(await send([service.base], streamed, on_accepted=on_accepted,
                                       all_accepted=True))

        await asyncio.gather(stop_broker(), stream())

        async def transport_down() -> bool:
            status, body = await _readyz(service.base)
            # Still ready for intake (the outbox absorbs it), but degraded.
            return status == 200 and body["transport"] is False and body["status"] == "degraded"

        await wait_for(transport_down, 15, "/readyz reports the transport degraded")
        down = await send([service.base], while_down, all_accepted=True)  # the ledger accepts
        accepted.update(down)
        status, body = await _readyz(service.base)  # still down: those were accepted meanwhile
        assert status == 200 and body["degraded"] == ["transport"]
        assert body["transport"] is False and body["store"] is True and body["accepting"] is True
        await rabbit.start()  # the same node, port and data directory

        async def transport_up() -> bool:
            status, body = await _readyz(service.base)
            return status == 200 and body["status"] == "ready"

        await wait_for(transport_up, 30, "/readyz is ready again after the restart", interval=0.2)
        accepted.update(await send([service.base], after, all_accepted=True))
        assert set(accepted) == set(refs)
        await wait_quiet(receiver, ledger, "/", set(accepted.values()), ctl=rabbit.rabbitmqctl)
        await assert_delivered_once(receiver, ledger, service.base, accepted)
        assert service.terminate() == 0
    finally:
        service.kill()
        await receiver.stop()


@production_pair
async def test_sigkill_one_of_two_processes_mid_stream(tmp_path: Path, store_url: str,
                                                       transport_url: str) -> None:
    vhost = vhost_of(transport_url)
    receiver = await Receiver().start()
    survivor = service_process(tmp_path, "survivor", store_url=store_url,
                               transport_url=transport_url, hook_url=receiver.url)
    victim = service_process(tmp_path, "victim", store_url=store_url, transport_url=transport_url,
                             hook_url=receiver.url)
    ledger = LedgerAudit(store_url)
    refs = [f"KILL-{i}" for i in range(REFERRALS)]
    try:
        await survivor.start()
        await victim.start()  # one after the other: both migrate the same database at start
        bases = [survivor.base, victim.base]
        victim_delivered = 0.0
        killed_at: int | None = None

        async def watch_victim() -> None:
            """Load spread: the victim must have delivered some before it dies."""
            nonlocal victim_delivered
            while killed_at is None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    victim_delivered = await delivered_count(victim.base)
                await asyncio.sleep(0.05)

        def on_accepted(n: int) -> None:
            nonlocal killed_at
            if n >= FAULT_AT and killed_at is None and victim_delivered > 0:
                killed_at = n
                victim.kill()

        watcher = asyncio.create_task(watch_victim())
        try:
            first = await send(bases, refs, on_accepted=on_accepted)
        finally:
            if killed_at is None:
                killed_at = -1
            await watcher
        assert killed_at >= FAULT_AT, "the victim was not killed mid-stream"
        assert victim_delivered > 0
        assert len(first) < REFERRALS, "requests to the killed process should have failed"

        await victim.start()
        accepted = await send_until_all_accepted(bases, refs, first)
        await wait_quiet(receiver, ledger, vhost, set(accepted.values()))
        await assert_delivered_once(receiver, ledger, survivor.base, accepted)
        assert await delivered_count(survivor.base) > 0
        assert victim.terminate() == 0
        assert survivor.terminate() == 0
    finally:
        victim.kill()
        survivor.kill()
        await receiver.stop()


# --- what the faults brought up -----------------------------------------------------------------


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_concurrent_duplicate_is_a_repeat_not_an_error(store_url: str) -> None:
    """After a fault the same event often arrives twice at once (a republished outbox row, a
    redelivery to the other process). Two consumers then record it concurrently: the second must
    be told "already processed" (False), not fail with a unique violation that the transport logs
    as `handler_failed` with a traceback and answers with a Retry. Seen in the fault tests above."""
    ledger = Ledger.from_url(store_url, pool_size=2)
    event_id = "00000000-0000-4000-8000-00000000fa17"
    try:
        await ledger.migrate()

        async def second() -> bool:
            async with ledger.transaction() as conn:
                return await Ledger.mark_processed(conn, "intake", event_id, utcnow())

        async with ledger.transaction() as first:
            assert await Ledger.mark_processed(first, "intake", event_id, utcnow())
            racer = asyncio.create_task(second())

            async def racer_waits_for_first() -> bool:
                rows = await LedgerAudit(store_url).fetch(
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")
                return int(rows[0]["n"]) > 0 or racer.done()

            await wait_for(racer_waits_for_first, 10, "the second insert waits for the first")
        # The first commits here; the second then learns that the event was already processed.
        assert await asyncio.wait_for(racer, 10) is False
    finally:
        await ledger.dispose()
