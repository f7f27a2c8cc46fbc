"""Running `handoff run` as real subprocesses for durability, fault and scale-out tests, and
observing them from outside: their /metrics, the ledger's tables, the RabbitMQ vhost's queues."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import asyncpg
import pytest

from broker.devtools import harness
from broker.devtools.harness import free_port, wait_for
from tests.helpers.app import ADMIN_TOKEN, IN_CI, KELA_TOKEN, PG_DSN_ADMIN, missing_service
from tests.helpers.receiver import SECRET, SECRET_ENV, Receiver

# The production pair: the shared fixtures, pinned to their PostgreSQL and RabbitMQ parameters
# (`transport_url` = the session's throw-away vhost, with the test queues deleted first).
production_pair = pytest.mark.parametrize(
    ("store_url", "transport_url"), [("postgresql", "rabbitmq")], indirect=True)
# A resend after a crash must be the identical body, or it is (rightly) a 409.
SENT_AT = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)
QUIET_TIMEOUT_S = 40.0


def webhook_route(area: str, hook_url: str) -> dict[str, Any]:
    return harness.webhook_route(area, hook_url, SECRET_ENV)


def write_config(path: Path, *, port: int, store_url: str, transport_url: str, hook_url: str,
                 give_up_after_s: float = 120, log_level: str = "warning",
                 file_scan_interval_s: float = 1.0, relay_poll_s: float = 0.1,
                 retry_tiers_s: tuple[float, ...] = (0.2, 1, 5),
                 backoff_s: tuple[float, float] = (0.1, 0.5), prefetch: int = 32,
                 routes: list[dict[str, Any]] | None = None, parties: Sequence[dict[str, Any]] = (),
                 **sections: dict[str, Any]) -> Path:
    """A `handoff run` config for the process tests: short retries and timeouts, JSON logs, the
    test parties (Kela, admin) and `parties`; `routes` replaces the default (webhooks for 08 and 90);
    `sections` adds keys or sections (`store={"connect_timeout_s": 2}`, `reconcile={...}`)."""
    if routes is None:
        routes = [webhook_route("08", hook_url), webhook_route("90", hook_url)]
    config = harness.service_config(
        port=port, store_url=store_url, transport_url=transport_url, log_level=log_level,
        parties=[harness.party("kela-1", "kela", KELA_TOKEN), harness.party("admin-1", "admin", ADMIN_TOKEN),
                 *parties],
        routes=routes,
        transport={"retry_tiers_s": retry_tiers_s, "prefetch": prefetch},
        delivery={"initial_backoff_s": backoff_s[0], "max_backoff_s": backoff_s[1],
                  "give_up_after_s": give_up_after_s, "timeout_s": 2,
                  "file_scan_interval_s": file_scan_interval_s},
        relay={"poll_interval_s": relay_poll_s})
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return harness.write_config(path, config)


class ServiceProcess(harness.ServiceProcess):
    """`handoff run` with the tests' webhook secret in its environment."""

    def __init__(self, config: Path, port: int, log_path: Path) -> None:
        super().__init__(config, port, log_path, env={**os.environ, SECRET_ENV: SECRET})


@contextlib.asynccontextmanager
async def backend_storm(store_url: str, kills: list[int], every_s: float = 0.005) -> AsyncIterator[None]:
    """A `pg_terminate_backend` storm: from an admin connection on another database, end every
    backend of `store_url`'s database (a test's own throw-away database only) every few
    milliseconds until the block ends; `kills` gets the count of each round."""
    database = urlsplit(store_url).path.lstrip("/")
    assert database.startswith("handoff_test_"), "a storm only on a test's own database"
    admin = await asyncpg.connect(PG_DSN_ADMIN)
    stop = asyncio.Event()

    async def run() -> None:
        while not stop.is_set():
            rows = await admin.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
            kills.append(len(rows))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        stop.set()
        await task
        await admin.close()


async def send_referrals(base_urls: list[str], refs: list[str], *, concurrency: int = 8,
                         on_accepted: Any = None,
                         municipality_of: Callable[[str], str] | None = None,
                         rejected: dict[str, int | str] | None = None) -> dict[str, str]:
    """POST referrals round-robin over the services; returns kela_reference -> referral_id for 202/200.

    `base_urls` is read again for every request, so a caller may drop a dead process from the list
    mid-stream, as a load balancer would, and the rest of the stream goes round-robin over the others.
    `municipality_of(ref)`, if given, picks the municipality from the reference alone, so that a resend
    of a sub-list is the identical body (by default it alternates with the position in `refs`).
    `rejected`, if given, collects the other answers: the status, or the client error's class name."""
    import random

    from broker.devtools.demo_data import make_referral

    accepted: dict[str, str] = {}
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for i, ref in enumerate(refs):
        queue.put_nowait((i, ref))
    headers = {"Authorization": f"Bearer {KELA_TOKEN}"}

    async def worker(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i, ref = queue.get_nowait()
            # From the reference alone: a resend after a crash must be the identical body.
            municipality = (municipality_of(ref) if municipality_of is not None
                            else "837" if sum(map(ord, ref)) % 2 else "091")
            body = make_referral(random.Random(ref), kela_reference=ref, sent_at=SENT_AT,
                                 municipality_code=municipality)
            try:
                async with http.post(f"{base_urls[i % len(base_urls)]}/v1/referrals", json=body,
                                     headers=headers) as r:
                    if r.status in (200, 202):
                        accepted[ref] = (await r.json())["referral_id"]
                        if on_accepted is not None:
                            on_accepted(len(accepted))
                    elif rejected is not None:
                        rejected[ref] = r.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                # the process was killed mid-request: no 202, no promise
                if rejected is not None:
                    rejected[ref] = type(exc).__name__

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return accepted


async def case_events(base: str, referral_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(
            f"{base}/v1/referrals/{referral_id}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
        body: dict[str, Any] = await r.json()
        return body


# --- RabbitMQ, read-only here (the shared broker's vhost; a test that stops or kills a broker uses
# its own, tests/helpers/private_services.py) -----------------------------------------------------------


def vhost_of(amqp_url: str) -> str:
    vhost = unquote(urlsplit(amqp_url).path.lstrip("/"))
    if not vhost or vhost == "/":
        # The vhost fixture fell back to the default vhost: faults and queue checks would meet
        # every other user of the broker.
        if IN_CI:
            pytest.fail("process tests need the throw-away vhost of `amqp_vhost_url`")
        pytest.skip("no throw-away RabbitMQ vhost (rabbitmqctl add_vhost failed)")
    return vhost


async def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """The shared node's rabbitmqctl; a machine without one skips (fails in CI)."""
    if harness.rabbitmqctl_path() is None:
        missing_service("rabbitmqctl (to inspect or fault RabbitMQ)")
    return await harness.rabbitmqctl(*args, timeout=timeout)


Ctl = Callable[..., Awaitable[str]]
"""A rabbitmqctl runner: `rabbitmqctl` (the shared broker) or a `PrivateRabbitMQ.rabbitmqctl`."""


async def queue_depths(vhost: str, ctl: Ctl = rabbitmqctl) -> dict[str, int]:
    out = await ctl("list_queues", "-p", vhost, "name", "messages", "--no-table-headers")
    depths: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            depths[parts[0]] = int(parts[1])
    return depths



# --- waiting and observing ----------------------------------------------------------------------


async def metric_total(base: str, name: str, **labels: str) -> float:
    """The sum of one counter's samples in the process's own /metrics, over the series whose labels
    include `labels`: each process counts only what it did itself."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
            http.get(f"{base}/metrics") as r:
        assert r.status == 200, r.status
        text = await r.text()
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(w in line for w in wanted))


async def delivered_count(base: str) -> float:
    """The process's own count of successful deliveries (`handoff_deliveries_total`)."""
    return await metric_total(base, "handoff_deliveries_total", outcome="delivered")


async def dead_letters_api(base: str) -> list[dict[str, Any]]:
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
        """Rows not yet handed to RabbitMQ (a `sent` row is in a durable queue; the queues are
        checked to be empty beside this)."""
        rows = await self.fetch("SELECT count(*) AS n FROM outbox WHERE status = 'pending'")
        return int(rows[0]["n"])

    async def dead_letters(self) -> int:
        return int((await self.fetch("SELECT count(*) AS n FROM dead_letters"))[0]["n"])


async def wait_quiet(receiver: Receiver, ledger: LedgerAudit, vhost: str, referral_ids: set[str],
                      timeout: float = QUIET_TIMEOUT_S, *, ctl: Ctl = rabbitmqctl) -> None:
    """Until every accepted referral reached the webhook and is `delivered` in the ledger, the outbox
    is finished and the vhost's queues (intake, retry, dead) are empty: no duplicate is in flight.
    `ctl` lists the queues: the shared broker's rabbitmqctl unless a test runs its own broker."""

    async def at_receiver() -> bool:
        return referral_ids <= set(receiver.referral_ids())

    async def delivered_in_ledger() -> bool:
        states = await ledger.case_states()
        return all(states.get(rid) == "delivered" for rid in referral_ids)

    async def settled() -> bool:
        if await ledger.unfinished_outbox():
            return False
        return not any((await queue_depths(vhost, ctl)).values())

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await wait_for(at_receiver, timeout, "every accepted referral reached the webhook")
    await wait_for(delivered_in_ledger, max(1.0, deadline - loop.time()),
                 "every accepted case is delivered in the ledger", interval=0.2)
    await wait_for(settled, max(1.0, deadline - loop.time()),
                 "the outbox is finished and the queues are empty", interval=0.2)


async def assert_delivered_once(receiver: Receiver, ledger: LedgerAudit, base: str,
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
    assert await dead_letters_api(base) == []


# --- starting and feeding processes -------------------------------------------------------------


def service_process(tmp_path: Path, name: str, *, store_url: str, transport_url: str,
                    hook_url: str, **config: Any) -> ServiceProcess:
    """`config`: further `write_config` keywords (retry tiers, backoffs, extra sections)."""
    port = free_port()
    config_path = write_config(tmp_path / f"{name}.toml", port=port, store_url=store_url,
                               transport_url=transport_url, hook_url=hook_url, **config)
    return ServiceProcess(config_path, port, tmp_path / f"{name}.log")


def municipality_of_ref(ref: str) -> str:
    """From the reference alone: a resend is the identical body (else it is, rightly, a 409)."""
    return "837" if int(ref.rsplit("-", 1)[1]) % 2 else "091"  # Tampere -> 08, Helsinki -> 90


async def send(bases: list[str], refs: list[str], *, on_accepted: Callable[[int], None] | None = None,
                all_accepted: bool = False) -> dict[str, str]:
    """POSTs round-robin over `bases`; returns kela_reference -> referral_id of the 202/200s."""
    rejected: dict[str, int | str] = {}
    accepted = await send_referrals(bases, refs, on_accepted=on_accepted,
                                    municipality_of=municipality_of_ref, rejected=rejected)
    if all_accepted:
        assert not rejected, f"{len(rejected)} not accepted: {sorted(rejected.items())[:5]}"
    return accepted


async def send_until_all_accepted(bases: list[str], refs: list[str],
                                   accepted: dict[str, str]) -> dict[str, str]:
    """Re-sends what got no 202/200 (a lost answer is a 200 with the same id on resend)."""
    rest = [r for r in refs if r not in accepted]
    merged = {**accepted, **await send(bases, rest, all_accepted=True)}
    assert set(merged) == set(refs)
    return merged
