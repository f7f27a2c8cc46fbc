"""Faults on the production pair (RabbitMQ + PostgreSQL): connections closed by the broker, a broker
restart, and a SIGKILLed process next to a live one, each injected mid-stream.

Each test runs the real `handoff run` as subprocesses, streams a few hundred referrals, injects the
fault when the N-th referral has been accepted, and then waits (on conditions, with timeouts) until the
system is quiet. It then checks the promise of a 202: every accepted referral reached the webhook, is
`delivered` exactly once in the ledger, and nothing became a dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import asyncpg
import pytest

from broker.ledger import Ledger, utcnow
from tests.conftest import ADMIN_TOKEN, IN_CI, missing_service
from tests.processes import ServiceProcess, case_events, free_port, send_referrals, write_config
from tests.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.rabbitmq]

# The production pair: the shared fixtures, pinned to their PostgreSQL and RabbitMQ parameters
# (`transport_url` = the session's throw-away vhost, with the test queues deleted first).
production_pair = pytest.mark.parametrize(
    ("store_url", "transport_url"), [("postgresql", "rabbitmq")], indirect=True)

REFERRALS = 300
FAULT_AT = 100  # inject the fault once this many referrals have been accepted
QUIET_TIMEOUT_S = 40.0


# --- RabbitMQ control ---------------------------------------------------------------------------


def _ctl() -> str:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    if not os.path.exists(ctl):
        missing_service("rabbitmqctl (to inject RabbitMQ faults)")
    return ctl


def _vhost_of(amqp_url: str) -> str:
    vhost = unquote(urlsplit(amqp_url).path.lstrip("/"))
    if not vhost or vhost == "/":
        # The vhost fixture fell back to the default vhost: faults would hit every other user.
        if IN_CI:
            pytest.fail("fault tests need the throw-away vhost of `amqp_vhost_url`")
        pytest.skip("no throw-away RabbitMQ vhost (rabbitmqctl add_vhost failed)")
    return vhost


async def _rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """rabbitmqctl without blocking the loop, which also serves the webhook receiver."""
    proc = await asyncio.create_subprocess_exec(
        _ctl(), "-q", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:  # timed out, or the waiting test gave up: leave no rabbitmqctl behind
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {err.decode()[-500:]}")
    return out.decode()


def _ensure_rabbit_app_running() -> None:
    """Blocking on purpose: runs from `finally:` even when the test's loop is being torn down."""
    ctl = _ctl()
    subprocess.run([ctl, "-q", "start_app"], check=True, capture_output=True, timeout=60)
    subprocess.run([ctl, "-q", "await_startup"], check=True, capture_output=True, timeout=60)


async def _connection_pids(vhost: str) -> set[str]:
    """The connections into `vhost` (list_connections is server-wide: it has no -p)."""
    out = await _rabbitmqctl("list_connections", "vhost", "pid", "--no-table-headers")
    rows = (line.split("\t") for line in out.splitlines())
    return {row[1].strip() for row in rows if len(row) == 2 and row[0] == vhost}


async def _queue_depths(vhost: str) -> dict[str, int]:
    out = await _rabbitmqctl("list_queues", "-p", vhost, "name", "messages", "--no-table-headers")
    depths: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            depths[parts[0]] = int(parts[1])
    return depths


# --- waiting and observing ----------------------------------------------------------------------


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str,
                 interval: float = 0.1) -> None:
    async def poll() -> None:
        while not await check():
            await asyncio.sleep(interval)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting until {what}") from None


async def _readyz(base: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
            http.get(f"{base}/readyz") as r:
        body: dict[str, Any] = await r.json()
        return r.status, body


async def _delivered_count(base: str) -> float:
    """The process's own count of successful deliveries (`handoff_deliveries_total`)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
            http.get(f"{base}/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("handoff_deliveries_total{") and 'outcome="delivered"' in line)


async def _dead_letters_api(base: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(
            f"{base}/v1/admin/dead-letters", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        items: list[dict[str, Any]] = body["items"]
        return items


class LedgerAudit:
    """Reads the ledger tables directly, as an auditor would."""

    def __init__(self, store_url: str) -> None:
        self.dsn = store_url.replace("postgresql+asyncpg://", "postgresql://")

    async def fetch(self, sql: str) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    async def delivered_events(self) -> dict[str, int]:
        rows = await self.fetch(
            "SELECT referral_id, count(*) AS n FROM events WHERE type = 'delivered' GROUP BY 1")
        return {r["referral_id"]: int(r["n"]) for r in rows}

    async def case_states(self) -> dict[str, str]:
        return {r["referral_id"]: r["state"] for r in await self.fetch(
            "SELECT referral_id, state FROM cases")}

    async def unfinished_outbox(self) -> int:
        rows = await self.fetch("SELECT count(*) AS n FROM outbox WHERE status <> 'done'")
        return int(rows[0]["n"])

    async def dead_letters(self) -> int:
        return int((await self.fetch("SELECT count(*) AS n FROM dead_letters"))[0]["n"])


async def _wait_quiet(receiver: Receiver, ledger: LedgerAudit, vhost: str, referral_ids: set[str],
                      timeout: float = QUIET_TIMEOUT_S) -> None:
    """Until every accepted referral reached the webhook and is `delivered` in the ledger, the outbox
    is finished and the vhost's queues (intake, retry, dead) are empty: no duplicate is in flight."""

    async def at_receiver() -> bool:
        return referral_ids <= set(receiver.referral_ids())

    async def delivered_in_ledger() -> bool:
        states = await ledger.case_states()
        return all(states.get(rid) == "delivered" for rid in referral_ids)

    async def settled() -> bool:
        if await ledger.unfinished_outbox():
            return False
        return not any((await _queue_depths(vhost)).values())

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await _until(at_receiver, timeout, "every accepted referral reached the webhook")
    await _until(delivered_in_ledger, max(1.0, deadline - loop.time()),
                 "every accepted case is delivered in the ledger", interval=0.2)
    await _until(settled, max(1.0, deadline - loop.time()),
                 "the outbox is finished and the queues are empty", interval=0.2)


async def _assert_delivered_once(receiver: Receiver, ledger: LedgerAudit, base: str,
                                 accepted: dict[str, str]) -> None:
    ids = set(accepted.values())
    assert len(ids) == len(accepted)  # one referral id per kela_reference
    at_hook = receiver.referral_ids()
    assert set(at_hook) == ids  # all reached the webhook, nothing that was not accepted
    assert receiver.bad_signatures == 0
    delivered = await ledger.delivered_events()
    twice = {rid: n for rid, n in delivered.items() if n != 1}
    assert not twice, f"{len(twice)} cases delivered more than once: {list(twice.items())[:5]}"
    assert set(delivered) == ids
    states = await ledger.case_states()
    assert set(states) == ids and set(states.values()) == {"delivered"}
    for rid in sorted(ids)[:: max(1, len(ids) // 10)]:  # the API tells the same story
        case = await case_events(base, rid)
        assert case["state"] == "delivered"
        assert [e["type"] for e in case["events"]].count("delivered") == 1
    assert await ledger.dead_letters() == 0
    assert await _dead_letters_api(base) == []


def _service(tmp_path: Path, name: str, *, store_url: str, transport_url: str,
             hook_url: str) -> ServiceProcess:
    port = free_port()
    config = write_config(tmp_path / f"{name}.toml", port=port, store_url=store_url,
                          transport_url=transport_url, hook_url=hook_url)
    return ServiceProcess(config, port, tmp_path / f"{name}.log")


def _municipality(ref: str) -> str:
    """From the reference alone: a resend is the identical body (else it is, rightly, a 409)."""
    return "837" if int(ref.rsplit("-", 1)[1]) % 2 else "091"  # Tampere -> 08, Helsinki -> 90


async def _send(bases: list[str], refs: list[str], *, on_accepted: Callable[[int], None] | None = None,
                all_accepted: bool = False) -> dict[str, str]:
    """POSTs round-robin over `bases`; returns kela_reference -> referral_id of the 202/200s."""
    rejected: dict[str, int | str] = {}
    accepted = await send_referrals(bases, refs, on_accepted=on_accepted,
                                    municipality_of=_municipality, rejected=rejected)
    if all_accepted:
        assert not rejected, f"{len(rejected)} not accepted: {sorted(rejected.items())[:5]}"
    return accepted


async def _send_until_all_accepted(bases: list[str], refs: list[str],
                                   accepted: dict[str, str]) -> dict[str, str]:
    """Re-sends what got no 202/200 (a lost answer is a 200 with the same id on resend)."""
    rest = [r for r in refs if r not in accepted]
    merged = {**accepted, **await _send(bases, rest, all_accepted=True)}
    assert set(merged) == set(refs)
    return merged


# --- the faults ---------------------------------------------------------------------------------


@production_pair
async def test_broker_closes_all_connections_mid_stream(tmp_path: Path, store_url: str,
                                                        transport_url: str) -> None:
    vhost = _vhost_of(transport_url)
    receiver = await Receiver().start()
    service = _service(tmp_path, "svc", store_url=store_url, transport_url=transport_url,
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
            await _rabbitmqctl("close_all_connections", "-p", vhost, "fault test")
            return seen

        first_accepted: dict[str, str] = {}

        async def stream() -> None:
            # The ledger accepts throughout: every POST is answered 202.
            first_accepted.update(await _send([service.base], refs, on_accepted=on_accepted,
                                              all_accepted=True))

        accepted_at_fault, _ = await asyncio.gather(fault(), stream())
        assert trigger.is_set()
        assert accepted_at_fault < REFERRALS, "the fault came after the stream"

        async def reconnected() -> bool:
            now = await _connection_pids(vhost)
            return bool(now) and not (now & before) and (await _readyz(service.base))[0] == 200

        await _until(reconnected, 20, "the service reconnected with new connections", interval=0.3)
        await _wait_quiet(receiver, ledger, vhost, set(first_accepted.values()))
        await _assert_delivered_once(receiver, ledger, service.base, first_accepted)
        assert service.terminate() == 0
    finally:
        service.kill()
        await receiver.stop()


@production_pair
async def test_rabbitmq_restart_mid_stream(tmp_path: Path, store_url: str, transport_url: str) -> None:
    vhost = _vhost_of(transport_url)
    receiver = await Receiver().start()
    service = _service(tmp_path, "svc", store_url=store_url, transport_url=transport_url,
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
            await _rabbitmqctl("stop_app")

        accepted: dict[str, str] = {}

        async def stream() -> None:
            accepted.update(await _send([service.base], streamed, on_accepted=on_accepted,
                                        all_accepted=True))

        try:
            await asyncio.gather(stop_broker(), stream())

            async def transport_down() -> bool:
                status, body = await _readyz(service.base)
                return status == 503 and body["transport"] is False

            await _until(transport_down, 15, "/readyz reports the transport down")
            down = await _send([service.base], while_down, all_accepted=True)  # the ledger accepts
            accepted.update(down)
            status, body = await _readyz(service.base)  # still down: those were accepted meanwhile
            assert status == 503
            assert body["transport"] is False and body["store"] is True and body["accepting"] is True
            await _rabbitmqctl("start_app")
            await _rabbitmqctl("await_startup")
        finally:
            _ensure_rabbit_app_running()

        async def transport_up() -> bool:
            return (await _readyz(service.base))[0] == 200

        await _until(transport_up, 30, "/readyz is ready again after the restart", interval=0.2)
        accepted.update(await _send([service.base], after, all_accepted=True))
        assert set(accepted) == set(refs)
        await _wait_quiet(receiver, ledger, vhost, set(accepted.values()))
        await _assert_delivered_once(receiver, ledger, service.base, accepted)
        assert service.terminate() == 0
    finally:
        service.kill()
        await receiver.stop()


@production_pair
async def test_sigkill_one_of_two_processes_mid_stream(tmp_path: Path, store_url: str,
                                                       transport_url: str) -> None:
    vhost = _vhost_of(transport_url)
    receiver = await Receiver().start()
    survivor = _service(tmp_path, "survivor", store_url=store_url, transport_url=transport_url,
                        hook_url=receiver.url)
    victim = _service(tmp_path, "victim", store_url=store_url, transport_url=transport_url,
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
                    victim_delivered = await _delivered_count(victim.base)
                await asyncio.sleep(0.05)

        def on_accepted(n: int) -> None:
            nonlocal killed_at
            if n >= FAULT_AT and killed_at is None and victim_delivered > 0:
                killed_at = n
                victim.kill()

        watcher = asyncio.create_task(watch_victim())
        try:
            first = await _send(bases, refs, on_accepted=on_accepted)
        finally:
            if killed_at is None:
                killed_at = -1
            await watcher
        assert killed_at >= FAULT_AT, "the victim was not killed mid-stream"
        assert victim_delivered > 0
        assert len(first) < REFERRALS, "requests to the killed process should have failed"

        await victim.start()
        accepted = await _send_until_all_accepted(bases, refs, first)
        await _wait_quiet(receiver, ledger, vhost, set(accepted.values()))
        await _assert_delivered_once(receiver, ledger, survivor.base, accepted)
        assert await _delivered_count(survivor.base) > 0
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

            await _until(racer_waits_for_first, 10, "the second insert waits for the first")
        # The first commits here; the second then learns that the event was already processed.
        assert await asyncio.wait_for(racer, 10) is False
    finally:
        await ledger.dispose()
