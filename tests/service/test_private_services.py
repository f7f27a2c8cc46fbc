"""The private instances of tests/helpers/private_services.py keep what they promised across a graceful
restart and a kill -9 (a persistent message in a durable quorum queue, confirmed by the broker; a
committed row), and a frozen PostgreSQL really hangs its clients. Each test breaks only its own
instance, never the machine's shared RabbitMQ or PostgreSQL."""

from __future__ import annotations

import aio_pika
import asyncpg
import pytest

from tests.helpers.private_services import PrivatePostgres, PrivateRabbitMQ

pytestmark = pytest.mark.slow

QUEUE = "handoff.private-selftest"


async def _publish(url: str, body: bytes) -> None:
    """One persistent message into the durable quorum queue, returned only once confirmed."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=QUEUE)
    finally:
        await connection.close()


async def _bodies(url: str) -> list[bytes]:
    """The queue's messages, read without removing them (all are nacked back at the end)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, durable=True, passive=True)
        got: list[aio_pika.abc.AbstractIncomingMessage] = []
        while (message := await queue.get(fail=False, timeout=5)) is not None:
            got.append(message)
        return [m.body for m in got]
    finally:
        await connection.close()  # unacked: they go back to the queue


async def test_rabbitmq_keeps_confirmed_messages_across_restart_and_kill9(
        private_rabbitmq: PrivateRabbitMQ) -> None:
    rabbit = private_rabbitmq
    await _publish(rabbit.url, b"before-restart")
    await rabbit.stop()
    await rabbit.start()
    assert await _bodies(rabbit.url) == [b"before-restart"]

    await _publish(rabbit.url, b"before-kill")
    beam = rabbit.os_pid()
    assert beam is not None
    await rabbit.kill9()
    assert rabbit.os_pid() is None
    await rabbit.start()
    assert rabbit.os_pid() != beam
    assert await _bodies(rabbit.url) == [b"before-restart", b"before-kill"]
    assert QUEUE in await rabbit.queue_depths()
    assert all(s < 30 for s in rabbit.start_seconds), rabbit.start_seconds


async def _rows(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return [r["note"] for r in await conn.fetch("SELECT note FROM selftest ORDER BY id")]
    finally:
        await conn.close()


async def _insert(dsn: str, note: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS selftest (id serial PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO selftest (note) VALUES ($1)", note)  # autocommit: committed
    finally:
        await conn.close()


async def test_postgres_keeps_committed_rows_across_restart_and_kill9(
        private_postgres: PrivatePostgres) -> None:
    pg = private_postgres
    await _insert(pg.dsn, "before-restart")
    await pg.stop("fast")
    await pg.start()
    assert await _rows(pg.dsn) == ["before-restart"]

    await _insert(pg.dsn, "before-kill")
    await pg.kill9()
    await pg.start()  # crash recovery from the WAL
    assert await _rows(pg.dsn) == ["before-restart", "before-kill"]


async def test_frozen_postgres_times_out_connects_until_thawed(private_postgres: PrivatePostgres) -> None:
    pg = private_postgres
    await pg.freeze()
    try:
        with pytest.raises(TimeoutError):
            await asyncpg.connect(pg.dsn, timeout=1)
    finally:
        await pg.thaw()
    conn = await asyncpg.connect(pg.dsn, timeout=10)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
