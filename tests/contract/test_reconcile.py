"""The reconciliation sweep (`broker.outbox.reconcile`): the ledger decides what is not yet delivered.

A message is lost in transit on purpose (RabbitMQ: its retry tier purged; embedded: its retry timer
dropped), while its outbox row says `sent`. The sweep must publish it again with the same event id,
leave alone what is alive in the retry tiers, and retire what consumers settled.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aio_pika
import sqlalchemy as sa

from broker.outbox.reconcile import SweepResult
from broker.store.ledger import utcnow
from broker.store.tables import outbox
from broker.transport.embedded import EmbeddedTransport
from broker.transport.topology import retry_tier_queue
from tests.helpers.app import ADMIN_TOKEN, auth, base_settings, services_of
from tests.helpers.receiver import Receiver, webhook_routes
from tests.helpers.support import post, wait_for

AFTER_S = 600.0


def _settings(store_url: str, transport_url: str, hook: str) -> Any:
    # Long webhook backoff: the copy waits in the 5 s tier while the test loses it.
    return base_settings(store_url, transport_url, routes=webhook_routes(hook),
                         delivery={"initial_backoff_s": 5, "max_backoff_s": 5},
                         reconcile={"after_s": AFTER_S, "interval_s": 3600})


async def _lose_waiting_retries(services: Any, transport_url: str) -> None:
    """What a RabbitMQ restart did before at-least-once dead-lettering: the waiting copy is gone."""
    transport = services.transport
    if isinstance(transport, EmbeddedTransport):
        await wait_for(lambda: asyncio.sleep(0, bool(transport._timers)), timeout=10,
                       what="the retry timer")
        for handle in list(transport._timers):
            handle.cancel()
        transport._timers.clear()
        return
    connection = await aio_pika.connect(transport_url)
    try:
        channel = await connection.channel()
        tiers = [await channel.get_queue(retry_tier_queue(t), ensure=False) for t in (0.2, 1, 5)]

        async def waiting() -> bool:
            counts = [(await channel.declare_queue(q.name, passive=True)).declaration_result
                      .message_count for q in tiers]
            return sum(counts) >= 1

        await wait_for(waiting, timeout=10, what="the copy in a retry tier")
        purged = [await q.purge() for q in tiers]
        assert sum(p.message_count for p in purged) == 1
    finally:
        await connection.close()


async def _outbox_row(services: Any, referral_id: str) -> dict[str, Any]:
    async with services.ledger.engine.connect() as conn:
        row = (await conn.execute(sa.select(outbox).where(outbox.c.referral_id == referral_id))
               ).mappings().one()
    return dict(row)


async def test_a_lost_message_is_republished_with_its_event_id(make_client, store_url,
                                                                transport_url) -> None:
    failing = True
    receiver = await Receiver(behaviour=lambda _n: 500 if failing else 204).start()
    try:
        client = await make_client(_settings(store_url, transport_url, receiver.url))
        services = services_of(client)
        rid = await post(client, "R-LOST-1")
        await wait_for(lambda: asyncio.sleep(0, receiver.requests >= 1), timeout=10,
                       what="the first (failed) attempt")
        row = await wait_for(lambda: _attempted(services, rid), timeout=10, what="attempted_at")
        await _lose_waiting_retries(services, transport_url)
        failing = False

        # Alive in the tiers as far as the ledger knows: a sweep right now finds nothing.
        assert (await services.sweep.sweep_once()).republished == 0

        later = utcnow() + dt.timedelta(seconds=AFTER_S + 1)
        result = await services.sweep.sweep_once(now=later)
        assert result == SweepResult(examined=1, settled=0, republished=1, unconfirmed=0)
        await wait_for(lambda: _state(client, rid, "delivered"), timeout=15, what="delivered")
        assert set(receiver.envelopes) == {row["event_id"]}  # the same event id, once accepted
        assert row["event_id"] in receiver.by_event

        # Settled now: the next sweep retires the row instead of publishing it again (the embedded
        # transport's consumers retire their own rows).
        result = await services.sweep.sweep_once(now=later + dt.timedelta(seconds=AFTER_S + 1))
        n = 0 if isinstance(services.transport, EmbeddedTransport) else 1
        assert result == SweepResult(examined=n, settled=n, republished=0, unconfirmed=0)
        assert (await _outbox_row(services, rid))["status"] == "done"
        case = await (await client.get(f"/v1/referrals/{rid}", headers=_admin())).json()
        assert [e["type"] for e in case["events"]].count("delivered") == 1
        metrics = await (await client.get("/metrics")).text()
        assert 'handoff_reconcile_found_total{result="republished"} 1.0' in metrics
        assert f'handoff_reconcile_found_total{{result="settled"}} {n}.0' in metrics
        assert "handoff_reconcile_sweeps_total 3.0" in metrics
    finally:
        await receiver.stop()


async def test_delivered_rows_are_retired_not_republished(make_client, store_url,
                                                         transport_url) -> None:
    receiver = await Receiver().start()
    try:
        client = await make_client(_settings(store_url, transport_url, receiver.url))
        services = services_of(client)
        rids = [await post(client, f"R-OK-{i}") for i in range(3)]
        for rid in rids:
            await wait_for(lambda r=rid: _state(client, r, "delivered"), timeout=10, what="delivered")
        later = utcnow() + dt.timedelta(seconds=AFTER_S + 1)
        result = await services.sweep.sweep_once(now=later)
        # Embedded: consumers mark rows done themselves, so nothing is left to retire.
        expected = 0 if isinstance(services.transport, EmbeddedTransport) else 3
        assert result == SweepResult(examined=expected, settled=expected)
        assert sum(receiver.by_event.values()) == 3
    finally:
        await receiver.stop()


async def _attempted(services: Any, rid: str) -> dict[str, Any] | None:
    row = await _outbox_row(services, rid)
    return row if row["attempted_at"] is not None else None


async def _state(client: Any, rid: str, state: str) -> bool:
    body = await (await client.get(f"/v1/referrals/{rid}", headers=_admin())).json()
    return bool(body["state"] == state)


def _admin() -> dict[str, str]:
    return auth(ADMIN_TOKEN)
