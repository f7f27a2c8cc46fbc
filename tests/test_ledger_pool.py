"""The PostgreSQL pool checks each connection on checkout (one round trip) and replaces a dead one."""

from __future__ import annotations

import sqlalchemy as sa

from broker.ledger import Ledger


async def test_a_killed_connection_is_replaced_on_checkout(pg_database: str) -> None:
    ledger = Ledger.from_url(pg_database, pool_size=1)
    admin = Ledger.from_url(pg_database, pool_size=1)
    try:
        async with ledger.engine.connect() as conn:
            pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        async with admin.engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                    ).scalar_one()
        # The pooled connection is dead; the checkout ping notices and opens a new one.
        async with ledger.engine.connect() as conn:
            new_pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        assert new_pid != pid
    finally:
        await ledger.dispose()
        await admin.dispose()
