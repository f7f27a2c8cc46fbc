"""Shared fixtures: one fixture per backend dimension, real services only.

A PostgreSQL- or RabbitMQ-backed test skips with a reason on a laptop without the server, and fails
in CI (CI=true), where the server must be there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from broker.config.settings import Settings
from broker.http.server import HandoffRunner
from broker.runtime.app import create_app
from broker.runtime.services import SERVICES, Services
from broker.security.audit import CHAINS
from broker.security.auth import hash_token

# Fault tests that stop or kill a broker or a database get their own instance (issue 15).
from tests.helpers.private_services import private_postgres, private_rabbitmq  # noqa: F401

PG_DSN_ADMIN = os.environ.get("HANDOFF_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("HANDOFF_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI") == "true"

KELA_TOKEN = "test-kela-token"
KELA2_TOKEN = "test-kela2-token"
KELA_CENTRAL_TOKEN = "test-kela-central-token"
ADMIN_TOKEN = "test-admin-token"


def intake_token(area: str) -> str:
    return f"test-intake-{area}"


def missing_service(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI=true) but is not reachable")
    pytest.skip(f"{what} is not reachable on this machine")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; dropped at the end."""
    if not _port_open("127.0.0.1", 5432):
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
            await conn.execute("TRUNCATE cases, events, updates, outbox, processed, dead_letters, "
                               "audit, access_tokens, dashboard_logouts RESTART IDENTITY")
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


def _rabbitmqctl(*args: str) -> None:
    import shutil
    import subprocess

    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([ctl, "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def amqp_vhost_url() -> Iterator[str]:
    """A throw-away vhost for the service tests, so they never meet other runs' messages."""
    if not _port_open("127.0.0.1", 5672):
        missing_service("RabbitMQ on 127.0.0.1:5672")
    vhost = f"handoff-svc-{uuid.uuid4().hex[:8]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except Exception as exc:  # no rabbitmqctl: a laptop with a remote broker
        if IN_CI:
            pytest.fail(f"rabbitmqctl could not create a test vhost: {exc}")
        yield AMQP_URL
        return
    yield f"{AMQP_URL.rstrip('/')}/{vhost}"
    with contextlib.suppress(Exception):
        _rabbitmqctl("delete_vhost", vhost)


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


def base_settings(store_url: str, transport_url: str = "embedded", *,
                  routes: list[dict[str, Any]] | None = None, **sections: Any) -> Settings:
    areas = ["08", "90", "19", "03"]
    parties: list[dict[str, Any]] = [
        {"id": "kela-1", "role": "kela", "token_sha256": hash_token(KELA_TOKEN)},
        {"id": "kela-2", "role": "kela", "token_sha256": hash_token(KELA2_TOKEN)},
        # Kela's central reader: sees every sender's cases and the whole feed.
        {"id": "kela-central", "role": "kela", "central_reader": True,
         "token_sha256": hash_token(KELA_CENTRAL_TOKEN)},
        {"id": "admin-1", "role": "admin", "token_sha256": hash_token(ADMIN_TOKEN)},
    ] + [{"id": f"intake-{a}", "role": "intake", "area": a, "token_sha256": hash_token(intake_token(a))}
         for a in [*areas, "91"]]
    data: dict[str, Any] = {
        "store": {"url": store_url},
        "transport": {"url": transport_url, "retry_tiers_s": [0.2, 1, 5]},
        # Reply files are scanned by the tests themselves (scan_once), not by the background job.
        "delivery": {"initial_backoff_s": 0.05, "max_backoff_s": 0.2, "give_up_after_s": 30,
                     "timeout_s": 2, "file_scan_interval_s": 3600},
        "relay": {"poll_interval_s": 0.05},
        # Tests send hundreds of requests a second with one token; tests/contract/test_http_guards.py turns
        # the limits on where it tests them.
        "server": {"shutdown_timeout_s": 3, "rate_limit_per_s": 0},
        "parties": parties,
        "routes": routes if routes is not None else [{"area": a, "delivery": "pull"} for a in areas],
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value) if isinstance(value, dict) else data.__setitem__(key, value)
    return Settings.model_validate(data)


Factory = Callable[..., Awaitable[TestClient[Any, Any]]]


class ServiceTestServer(TestServer):
    """The app on the runner `handoff run` uses (its answers to unreadable requests included)."""

    async def _make_runner(self, **kwargs: Any) -> HandoffRunner:
        return HandoffRunner(self.app, **kwargs)


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


def services_of(client: TestClient[Any, Any]) -> Services:
    return client.app[SERVICES]  # type: ignore[index]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)
