"""The PostgreSQL pool checks a connection that sat idle on checkout (one round trip) and replaces a
dead one; a connection used again at once skips the ping, and if it broke in that moment its first
statement fails as a disconnect and the pool replaces it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

import broker.store.ledger
from broker.store.ledger import Ledger


async def _kill_pooled(ledger: Ledger, admin: Ledger) -> int:
    async with ledger.engine.connect() as conn:
        pid = int((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())
    async with admin.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                ).scalar_one()
    return pid


async def _backend_pid(ledger: Ledger) -> int:
    async with ledger.engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())


async def test_an_idle_killed_connection_is_replaced_on_checkout(pg_database: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker.store.ledger, "PING_AFTER_IDLE_S", 0.0)  # every checkout counts as idle
    ledger = Ledger.from_url(pg_database, pool_size=1)
    admin = Ledger.from_url(pg_database, pool_size=1)
    try:
        pid = await _kill_pooled(ledger, admin)
        # The pooled connection is dead; the checkout ping notices and opens a new one.
        assert await _backend_pid(ledger) != pid
    finally:
        await ledger.dispose()
        await admin.dispose()


async def test_a_busy_connection_that_broke_fails_once_then_is_replaced(
        pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker.store.ledger, "PING_AFTER_IDLE_S", 3600.0)  # never idle long enough
    ledger = Ledger.from_url(pg_database, pool_size=1)
    admin = Ledger.from_url(pg_database, pool_size=1)
    try:
        pid = await _kill_pooled(ledger, admin)
        with pytest.raises(DBAPIError) as failed:  # no ping: the statement meets the dead socket
            await _backend_pid(ledger)
        assert failed.value.connection_invalidated
        assert await _backend_pid(ledger) != pid
    finally:
        await ledger.dispose()
        await admin.dispose()
