"""Shared fixtures: one fixture per backend dimension, real services only.

A PostgreSQL- or RabbitMQ-backed test skips with a reason on a laptop without the server, and fails
in CI (CI=true), where the server must be there.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.config.settings import Settings
from broker.devtools.harness import RabbitmqctlError, port_open, throwaway_vhost_sync
from broker.runtime.app import create_app
from broker.security.audit import CHAINS
from tests.helpers.app import AMQP_URL, IN_CI, PG_DSN_ADMIN, Factory, ServiceTestServer, missing_service

# Fault tests that stop or kill a broker or a database get their own instance (issue 15).
from tests.helpers.private_services import private_postgres, private_rabbitmq  # noqa: F401


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; dropped at the end."""
    if not port_open("127.0.0.1", 5432):
        missing_service("PostgreSQL on 127.0.0.1:5432")
    import asyncpg

    name = f"handoff_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_DSN_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _truncate_pg(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.cases') IS NOT NULL")
        if exists:
            await conn.execute("TRUNCATE cases, events, updates, intake_updates, outbox, processed, "
                               "dead_letters, audit, access_tokens, dashboard_logouts RESTART IDENTITY")
            # Every chain starts again from the genesis hash (a test may have removed heads).
            await conn.execute("DELETE FROM audit_heads")
            await conn.execute("INSERT INTO audit_heads (chain, n, hash) "
                               "SELECT c, 0, $1 FROM generate_series(0, $2 - 1) AS c", "0" * 64, CHAINS)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("pg_database")
    asyncio.run(_truncate_pg(url))
    return url


@pytest.fixture(scope="session")
def amqp_vhost_url() -> Iterator[str]:
    """A throw-away vhost for the service tests, so they never meet other runs' messages."""
    if not port_open("127.0.0.1", 5672):
        missing_service("RabbitMQ on 127.0.0.1:5672")
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(throwaway_vhost_sync(AMQP_URL, "handoff-svc"))
        except (RabbitmqctlError, OSError) as exc:  # no rabbitmqctl: a laptop with a remote broker
            if IN_CI:
                pytest.fail(f"rabbitmqctl could not create a test vhost: {exc}")
            url = AMQP_URL
        yield url


TEST_QUEUES = ["handoff.intake.08", "handoff.intake.90", "handoff.intake.19", "handoff.intake.03",
               "handoff.intake.91", "handoff.kela.updates", "handoff.dead", "handoff.unrouted",
               "handoff.delay.200ms", "handoff.delay.1s", "handoff.delay.5s"]


async def _delete_queues(url: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        for name in TEST_QUEUES:
            channel = await connection.channel()
            try:
                await channel.queue_delete(name)
            except Exception:
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await connection.close()


@pytest.fixture(params=["embedded", "rabbitmq"])
def transport_url(request: pytest.FixtureRequest) -> str:
    if request.param == "embedded":
        return "embedded"
    url: str = request.getfixturevalue("amqp_vhost_url")
    asyncio.run(_delete_queues(url))
    return url


@pytest.fixture
async def make_client() -> AsyncIterator[Factory]:
    clients: list[TestClient[Any, Any]] = []

    async def factory(settings: Settings, **kwargs: Any) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(ServiceTestServer(create_app(settings, **kwargs)))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in reversed(clients):
        await client.close()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)
