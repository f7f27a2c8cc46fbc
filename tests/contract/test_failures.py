"""Failure classification (`broker.resilience.failures`) and the one retry policy built on it.

Exceptions come from the real drivers where the machine can produce them (a refused PostgreSQL
connection through SQLAlchemy and asyncpg); a store that is away must back off and never count
towards the poison-message limit, and a case a receiver acknowledged must never fail.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from broker.resilience.failures import classify, is_unavailable, unavailable_reason
from broker.transport.protocol import (
    H_CREATED_AT,
    H_FAULTS,
    H_RECEIVER_HAS_IT,
    DeadLetter,
    InboundMessage,
    Retry,
    disposition_for_error,
)
from tests.helpers.app import ADMIN_TOKEN, auth, base_settings
from tests.helpers.receiver import Receiver, webhook_routes
from tests.helpers.support import closed_port, post, reply, wait_for


def _message(attempt: int = 1, **headers: str | int) -> InboundMessage:
    return InboundMessage(event_id="e-1", queue="handoff.intake.08", routing_key="referral.08.x",
                          body=b"{}", headers=headers, redelivered=False, attempt=attempt)


async def _refused_pg_error() -> BaseException:
    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/x")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError("a closed port accepted a connection")


async def test_a_refused_database_is_unavailable_not_poison() -> None:
    exc = await _refused_pg_error()
    assert classify(exc) == "unavailable"
    assert unavailable_reason(exc).startswith("unavailable: ")
    assert "127.0.0.1" not in unavailable_reason(exc)


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "refused"), ConnectionResetError(), TimeoutError(),
    OSError(28, "No space left on device"), sqlite3.OperationalError("database is locked"),
    sqlite3.OperationalError("database or disk is full"),
    sa.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("disk I/O error")),
])
def test_unavailable_errors(exc: BaseException) -> None:
    assert is_unavailable(exc)


def test_postgres_states_of_a_busy_or_closing_server_are_unavailable() -> None:
    import asyncpg

    for cls in (asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError,
                asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CannotConnectNowError,
                asyncpg.exceptions.TooManyConnectionsError):
        assert is_unavailable(cls("x")), cls
    assert not is_unavailable(asyncpg.exceptions.UniqueViolationError("x"))


@pytest.mark.parametrize("exc", [
    ValueError("bad"), KeyError("referral_id"), json.JSONDecodeError("x", "doc", 0), TypeError(),
    sqlite3.OperationalError("no such table: cases"),
])
def test_poison(exc: BaseException) -> None:
    assert classify(exc) == "poison"


def test_unavailable_backs_off_and_never_counts_as_a_fault() -> None:
    delays = []
    for attempt in range(1, 30):
        d = disposition_for_error(_message(attempt, **{H_CREATED_AT: int(time.time())}),
                                  ConnectionRefusedError(), delivery_limit=2, retry_delay_s=1)
        assert isinstance(d, Retry) and H_FAULTS not in d.headers
        delays.append(d.delay_s)
    assert delays[:4] == [1, 2, 4, 8] and max(delays) == 30


def test_unavailable_gives_up_after_the_window_unless_the_receiver_has_it() -> None:
    old = int(time.time()) - 100
    d = disposition_for_error(_message(3, **{H_CREATED_AT: old}), TimeoutError(),
                              delivery_limit=5, retry_delay_s=1, give_up_after_s=50)
    assert isinstance(d, DeadLetter) and d.reason == "unavailable: TimeoutError"
    kept = disposition_for_error(_message(3, **{H_CREATED_AT: old, H_RECEIVER_HAS_IT: "webhook"}),
                                 TimeoutError(), delivery_limit=5, retry_delay_s=1,
                                 give_up_after_s=50)
    assert isinstance(kept, Retry)


def test_poison_is_counted_in_its_own_header() -> None:
    first = disposition_for_error(_message(7), ValueError(), delivery_limit=3, retry_delay_s=1)
    assert isinstance(first, Retry) and first.headers == {H_FAULTS: 1}
    second = disposition_for_error(_message(8, **{H_FAULTS: 1}), ValueError(), delivery_limit=3,
                                   retry_delay_s=1)
    assert isinstance(second, Retry) and second.headers == {H_FAULTS: 2}
    third = disposition_for_error(_message(9, **{H_FAULTS: 2}), ValueError(), delivery_limit=3,
                                  retry_delay_s=1)
    assert third == DeadLetter("handler_error: ValueError")


async def test_one_delivered_event_whichever_channel_proves_it_first(make_client, store_url,
                                                                     transport_url) -> None:
    """Webhook failing, the intake replies (which proves delivery), then the webhook recovers."""
    failing = True
    receiver = await Receiver(behaviour=lambda _n: 503 if failing else 204).start()
    try:
        client = await make_client(base_settings(store_url, transport_url,
                                                 routes=webhook_routes(receiver.url)))
        rid = await post(client, "F-ONE-DELIVERED")
        await wait_for(lambda: receiver.requests >= 1, what="a failed attempt")
        status, _ = await reply(client, rid, "received")
        assert status == 202
        failing = False
        await wait_for(lambda: bool(receiver.by_event), timeout=15,
                       what="the webhook's 2xx")
        await wait_for(lambda: _settled(client, rid), timeout=10, what="the webhook's record")
        case = await _case(client, rid)
        assert [e["type"] for e in case["events"]].count("delivered") == 1
        assert case["state"] == "acknowledged"
    finally:
        await receiver.stop()


async def _case(client: Any, rid: str) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get(f"/v1/referrals/{rid}",
                                                   headers=auth(ADMIN_TOKEN))).json()
    return body


async def _settled(client: Any, rid: str) -> bool:
    """The worker recorded its delivery: the outbox row is settled for the intake consumer."""
    from broker.store.tables import outbox, processed
    from tests.helpers.app import services_of

    ledger = services_of(client).ledger
    async with ledger.engine.connect() as conn:
        n = (await conn.execute(sa.select(sa.func.count()).select_from(processed).join(
            outbox, outbox.c.event_id == processed.c.event_id).where(
            outbox.c.referral_id == rid, processed.c.consumer == "intake"))).scalar_one()
    return bool(n)


def test_a_connection_broken_mid_operation_is_unavailable() -> None:
    import asyncpg

    assert is_unavailable(asyncpg.exceptions.InterfaceError(
        "cannot perform operation: another operation is in progress"))
    assert is_unavailable(sa.exc.ResourceClosedError("This connection is closed"))
    assert not is_unavailable(asyncpg.exceptions.InterfaceError("the server expects 2 arguments"))
