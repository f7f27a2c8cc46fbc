"""The bench's throw-away PostgreSQL database and RabbitMQ vhost, and the checks that the servers are
there."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import structlog

from broker.devtools.bench.results import BenchError
from broker.devtools.harness import RabbitmqctlError, rabbitmqctl_path, throwaway_vhost

log = structlog.get_logger(__name__)

_PG_SERVER = "postgres@127.0.0.1:5432"
_PG_ADMIN_URL = f"postgresql+asyncpg://{_PG_SERVER}/postgres"


@contextlib.asynccontextmanager
async def _bench_database(store_url: str | None) -> AsyncIterator[str]:
    if store_url is not None:
        yield store_url
        return
    name = f"handoff_bench_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://{_PG_SERVER}/{name}"
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _pg_admin(statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE) on the server's `postgres` db."""
    await _pg_scalar(_PG_ADMIN_URL, statement)


async def _pg_scalar(url: str, statement: str) -> Any:
    """One statement on its own autocommit connection; its first column of the first row, if any."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool,
                                 hide_parameters=True)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.text(statement))
            return result.scalar() if result.returns_rows else None
    except (OSError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise BenchError(f"PostgreSQL is not reachable at {urlsplit(url).hostname} "
                         f"({type(exc).__name__}); start it or pass --store-url") from None
    finally:
        await engine.dispose()


async def _vacuum_if_autovacuum_off(store_url: str) -> None:
    if store_url.startswith("postgresql") and await _pg_scalar(store_url, "SHOW autovacuum") == "off":
        await _pg_scalar(store_url, "VACUUM (ANALYZE)")


async def _store_notes(store_url: str) -> list[str]:
    """What about the store makes the figures less representative of production."""
    if not store_url.startswith("postgresql"):
        return ["the store is SQLite: one writer, not the production store"]
    notes = []
    if await _pg_scalar(store_url, "SHOW autovacuum") == "off":
        notes.append("PostgreSQL autovacuum is off on this server: the bench runs VACUUM (ANALYZE) "
                     "before the fixed-rate run, but the dead rows of a long soak pile up")
    return notes


@contextlib.asynccontextmanager
async def _bench_vhost(amqp_url: str) -> AsyncIterator[str]:
    """A throw-away vhost when the URL names the default vhost of a local broker. Without
    rabbitmqctl (a remote broker) the URL is used as given, and its vhost holds the bench's queues;
    a rabbitmqctl that fails stops the bench rather than putting them in the default vhost."""
    parts = urlsplit(amqp_url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    ctl = rabbitmqctl_path()
    if parts.path not in ("", "/") or not local or ctl is None:
        if ctl is None and local:
            log.warning("bench_without_vhost", reason="rabbitmqctl not found", vhost=parts.path or "/")
        yield amqp_url
        return
    try:
        async with throwaway_vhost(amqp_url, "handoff-bench") as url:
            yield url
    except RabbitmqctlError as exc:
        raise BenchError(str(exc)) from None


async def _check_broker(amqp_url: str) -> None:
    import aio_pika

    try:
        connection = await aio_pika.connect(amqp_url, timeout=10)
    except Exception as exc:
        raise BenchError(f"RabbitMQ is not reachable at {urlsplit(amqp_url).hostname} "
                         f"({type(exc).__name__}); start it or pass --amqp-url") from None
    await connection.close()
