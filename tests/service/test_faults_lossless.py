"""Nothing accepted is ever lost (issue 15): the faults that used to lose referrals or fail them.

Each test runs the real `handoff run` as a subprocess against real servers. A fault that stops or
kills a server uses the test's own instance (`tests/helpers/private_services.py`), never the machine's:

- RabbitMQ stopped, or SIGKILLed, while messages wait in the retry tiers (webhook failing), on the
  default retry configuration and on short backoffs. Before at-least-once dead-lettering, the tier
  queues dropped what expired before the intake queues had a leader again.
- PostgreSQL stopped for 15 s, or frozen with SIGSTOP for 15 s, under a backlog (slow webhook).
  Before the failure classification, every handler error counted as poison: cases became `failed`.
- The service SIGKILLed while the reconciliation sweep republishes lost messages.

Each ends the same way: every 202 is `delivered` exactly once in the ledger and at the receiver
(distinct event ids), nothing is `failed`, there are no dead letters, and the queues are empty. The
counts are printed (`-s`) for the closing note.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.devtools.harness import wait_for
from tests.helpers.app import KELA_TOKEN
from tests.helpers.private_services import PrivatePostgres, PrivateRabbitMQ
from tests.helpers.processes import (
    LedgerAudit,
    ServiceProcess,
    assert_delivered_once,
    queue_depths,
    rabbitmqctl,
    send,
    service_process,
    vhost_of,
    wait_quiet,
)
from tests.helpers.receiver import Receiver
from tests.helpers.support import referral_body

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.rabbitmq]

REFERRALS = 200
# Retry settings: RabbitMQ's tiers and the webhook backoff. "default" is the shipped configuration.
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"retry_tiers_s": (1, 5, 30, 120, 300), "backoff_s": (1.0, 300.0)},
    "short": {"retry_tiers_s": (0.2, 1, 5), "backoff_s": (0.2, 5.0)},
}
# Tiers that must hold messages when the fault hits. Default config: the webhook's backoff (1 s,
# doubling, with jitter) puts the 2nd and 3rd attempts in the 5 s tier and the 4th or 5th in the 30 s
# one, about 15 s in; the 120 s and 300 s tiers would need minutes. Short config: 1 s and 5 s. (The
# 1 s and 200 ms tiers hold a message too briefly for RabbitMQ's 5 s statistics to show it.)
TIERS_REACHED = {"default": ("5s", "30s"), "short": ("1s", "5s")}
# The sweep must not be what saves these runs: the topology and the retry policy must.
NO_SWEEP = {"after_s": 3600, "interval_s": 3600}


def _report(name: str, accepted: dict[str, str], receiver: Receiver) -> None:
    distinct = len(receiver.referral_ids())
    posts = sum(receiver.by_event.values())
    print(f"\n[{name}] sent={len(accepted)} delivered_once={distinct} "
          f"lost={len(accepted) - distinct} duplicate_posts={posts - distinct}")


async def _readyz(base: str, timeout: float = 5) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
            http.get(f"{base}/readyz") as r:
        body: dict[str, Any] = await r.json()
        return r.status, body, time.monotonic() - started


# --- RabbitMQ restarts with messages waiting in the retry tiers ---------------------------------


@pytest.mark.parametrize("config", ["default", "short"])
@pytest.mark.parametrize("fault", ["stop", "kill9"])
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_rabbitmq_restart_loses_nothing_waiting_in_retry_tiers(
        tmp_path: Path, store_url: str, private_rabbitmq: PrivateRabbitMQ, config: str,
        fault: str) -> None:
    rabbit = private_rabbitmq
    failing = True
    receiver = await Receiver(behaviour=lambda _n: 500 if failing else 204).start()
    service = service_process(tmp_path, "svc", store_url=store_url, transport_url=rabbit.url,
                              hook_url=receiver.url, reconcile=NO_SWEEP, **CONFIGS[config])
    ledger = LedgerAudit(store_url)
    try:
        await service.start()
        accepted = await send([service.base], [f"TIER-{i}" for i in range(REFERRALS)],
                              all_accepted=True)

        seen: set[str] = set()

        async def waiting_in_the_tiers() -> bool:
            """Every expected tier was used, and many messages wait in one right now."""
            depths = await rabbit.queue_depths()
            tiers = {q.removeprefix("handoff.delay."): n for q, n in depths.items()
                     if q.startswith("handoff.delay.")}
            seen.update(t for t, n in tiers.items() if n)
            return seen >= set(TIERS_REACHED[config]) and sum(tiers.values()) >= REFERRALS // 4

        await wait_for(waiting_in_the_tiers, 60, f"messages in the tiers {TIERS_REACHED[config]}",
                    interval=0.2)
        print(f"\n[{config}/{fault}] at the fault: "
              f"{ {k: v for k, v in (await rabbit.queue_depths()).items() if v} }")
        if fault == "stop":
            await rabbit.stop()
        else:
            await rabbit.kill9()
        await asyncio.sleep(5)  # down long enough for every 200 ms / 1 s / 5 s message to expire
        await rabbit.start()
        failing = False
        await wait_quiet(receiver, ledger, "/", set(accepted.values()), timeout=120,
                         ctl=rabbit.rabbitmqctl)
        _report(f"rabbitmq {fault}, {config} config", accepted, receiver)
        await assert_delivered_once(receiver, ledger, service.base, accepted)
        assert service.terminate() == 0
    finally:
        service.kill()
        await receiver.stop()


# --- PostgreSQL stopped or frozen under a backlog -----------------------------------------------


@pytest.mark.parametrize("fault", ["stop", "freeze"])
@pytest.mark.parametrize("transport_url", ["rabbitmq"], indirect=True)
async def test_postgres_outage_under_backlog_fails_nothing(
        tmp_path: Path, transport_url: str, private_postgres: PrivatePostgres, fault: str) -> None:
    pg = private_postgres
    vhost = vhost_of(transport_url)
    # Held until the fault, then slow: RabbitMQ holds a backlog, and the requests in flight when
    # the database goes get their 2xx while it is away (recorded later, never delivered twice).
    gate = asyncio.Event()
    receiver = await Receiver(delay_s=0.5, gate=gate).start()
    store = {"connect_timeout_s": 2, "statement_timeout_s": 2, "pool_timeout_s": 2}
    service = service_process(tmp_path, "svc", store_url=pg.url, transport_url=transport_url,
                              hook_url=receiver.url, store=store, prefetch=8,
                              backoff_s=(0.2, 2.0), reconcile=NO_SWEEP)
    ledger = LedgerAudit(pg.url)
    try:
        await service.start()
        accepted = await send([service.base], [f"PG-{i}" for i in range(REFERRALS)],
                              all_accepted=True)
        backlog = 0

        async def backlog_built() -> bool:
            nonlocal backlog
            backlog = sum((await queue_depths(vhost)).values())
            return backlog > 100

        # (RabbitMQ's queue counts lag by up to its 5 s statistics interval.)
        await wait_for(backlog_built, 20, "a backlog in RabbitMQ", interval=0.5)
        print(f"\n[postgres {fault}] backlog at the fault: {backlog}")
        await (pg.stop("fast") if fault == "stop" else pg.freeze())
        gate.set()
        try:
            await asyncio.sleep(1)
            status, body, took = await _readyz(service.base)
            assert status == 503 and body["store"] is False
            assert took < 2.0, f"/readyz took {took:.2f} s"
            async with aiohttp.ClientSession() as http:
                started = time.monotonic()
                async with http.post(f"{service.base}/v1/referrals",
                                     json=referral_body("PG-DURING"),
                                     headers={"Authorization": f"Bearer {KELA_TOKEN}"}) as r:
                    # Not a 500: the client is told to come back.
                    assert r.status == 503, r.status
                    assert r.headers["Retry-After"].isdigit()
                assert time.monotonic() - started < 10
            await asyncio.sleep(14)
        finally:
            await (pg.start() if fault == "stop" else pg.thaw())
        await wait_quiet(receiver, ledger, vhost, set(accepted.values()), timeout=120)
        _report(f"postgres {fault} 15 s", accepted, receiver)
        await assert_delivered_once(receiver, ledger, service.base, accepted)
        assert service.terminate() == 0
    finally:
        service.kill()
        await receiver.stop()


# --- the service killed while the sweep republishes ---------------------------------------------


@pytest.mark.parametrize(("store_url", "transport_url"), [("postgresql", "rabbitmq")],
                         indirect=True)
async def test_service_sigkilled_during_the_sweep(tmp_path: Path, store_url: str,
                                                  transport_url: str) -> None:
    vhost = vhost_of(transport_url)
    failing = True
    receiver = await Receiver(behaviour=lambda _n: 500 if failing else 204).start()
    # The one tier (30 s) is longer than after_s: the sweep can only find what the test loses.
    sweep = {"after_s": 10, "interval_s": 0.5, "batch_size": 10}
    config: dict[str, Any] = {"retry_tiers_s": (30,), "backoff_s": (30.0, 30.0), "reconcile": sweep,
                              "log_level": "info"}
    first = service_process(tmp_path, "first", store_url=store_url, transport_url=transport_url,
                            hook_url=receiver.url, **config)
    second: ServiceProcess | None = None
    ledger = LedgerAudit(store_url)
    try:
        await first.start()
        accepted = await send([first.base], [f"SWEEP-{i}" for i in range(REFERRALS)],
                              all_accepted=True)

        async def all_waiting() -> bool:
            return (await queue_depths(vhost)).get("handoff.delay.30s", 0) == REFERRALS

        await wait_for(all_waiting, 20, "every referral waiting in the 30 s tier", interval=0.2)
        # Lost in transit, as a broker restart lost them before: the ledger still says `sent`.
        await rabbitmqctl("purge_queue", "-p", vhost, "handoff.delay.30s")
        assert len(receiver.referral_ids()) == 0
        failing = False

        async def sweeping() -> bool:
            return len(receiver.referral_ids()) >= 15

        await wait_for(sweeping, 30, "the sweep republishing", interval=0.05)
        first.kill()  # SIGKILL mid-sweep: claimed rows roll back, published ones may repeat
        at_kill = len(receiver.referral_ids())
        assert at_kill < REFERRALS, "the sweep finished before the kill"
        second = service_process(tmp_path, "second", store_url=store_url,
                                 transport_url=transport_url, hook_url=receiver.url, **config)
        await second.start()
        await wait_quiet(receiver, ledger, vhost, set(accepted.values()), timeout=90)
        _report(f"service SIGKILL during the sweep (at {at_kill} delivered)", accepted, receiver)
        await assert_delivered_once(receiver, ledger, second.base, accepted)
        assert second.terminate() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
        await receiver.stop()
