"""The one owner of every background task: relay, reconciliation sweep, consumers, SLA clock,
retention purge.

Start: migrate, connect the transport, re-queue unfinished work of a non-durable transport, then run
tasks in one TaskGroup. Stop (SIGTERM): stop intake, let in-flight work finish within the timeout,
close the transport, dispose of the engine — in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from broker.resilience.failures import UNAVAILABLE_MAX_DELAY_S, is_unavailable, unavailable_reason
from broker.runtime.services import Services
from broker.transport.protocol import DEAD_LETTER_QUEUE, KELA_UPDATES_QUEUE, Handler, intake_queue

__all__ = ["Supervisor"]

log = structlog.get_logger(__name__)


class Supervisor:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._tasks: list[asyncio.Task[None]] = []
        self._main: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        self._transport_up = asyncio.Event()

    async def start_resources(self) -> None:
        svc = self.services
        await svc.ledger.migrate()
        try:
            await svc.transport.start(svc.settings.intake_areas)
            self._transport_up.set()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # Intake works without the broker: the outbox keeps what is accepted, and the
            # `transport_connect` job connects when the broker comes.
            log.warning("transport_unavailable_at_start", reason=unavailable_reason(exc))
        if not svc.transport.durable:
            requeued = await svc.ledger.requeue_unfinished()
            if requeued:
                log.info("outbox_requeued", count=requeued)

    def _jobs(self) -> list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        svc = self.services
        prefetch = svc.settings.transport.prefetch
        jobs: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("relay", svc.relay.run), ("reconcile", svc.sweep.run), ("sla_clock", svc.sla_clock.run)]
        if any(r.delivery == "files" for r in svc.settings.routes):
            jobs.append(("file_replies", svc.file_replies.run))
        if svc.settings.retention.schedule_interval_s > 0:
            jobs.append(("retention", svc.retention.run))
        if not self._transport_up.is_set():
            jobs.append(("transport_connect", self._connect_transport))
        for area in svc.settings.intake_areas:
            jobs.append((f"consume_{area}", lambda a=area: self._consume(  # type: ignore[misc]
                intake_queue(a), svc.intake_worker.handle, prefetch)))
        jobs.append(("consume_kela", lambda: self._consume(
            KELA_UPDATES_QUEUE, svc.kela_worker.handle, prefetch)))
        jobs.append(("consume_dead", lambda: self._consume(
            DEAD_LETTER_QUEUE, svc.dead_recorder.handle, 4)))
        return jobs

    async def _connect_transport(self) -> None:
        """Until the broker answers: try to connect, backing off from 1 s to UNAVAILABLE_MAX_DELAY_S."""
        svc = self.services
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                await svc.transport.start(svc.settings.intake_areas)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                log.info("transport_still_unavailable", reason=unavailable_reason(exc),
                         retry_in_s=delay)
                delay = min(UNAVAILABLE_MAX_DELAY_S, delay * 2)
                continue
            self._transport_up.set()
            svc.relay.notify()  # publish what the outbox absorbed meanwhile
            log.info("transport_connected_late")
            return

    async def _consume(self, queue: str, handler: Handler, prefetch: int) -> None:
        await self._transport_up.wait()
        await self.services.transport.consume(queue, handler, prefetch=prefetch)

    async def start(self) -> None:
        """Prepare resources and start the task group; returns once every job is running."""
        await self.start_resources()
        self._main = asyncio.create_task(self._run(), name="supervisor")
        started = asyncio.create_task(self.started.wait())
        done, _ = await asyncio.wait({self._main, started}, return_when=asyncio.FIRST_COMPLETED)
        if self._main in done:
            started.cancel()
            await self._close_resources()
            self._main.result()  # re-raise why the jobs could not start
            raise RuntimeError("supervisor stopped during start")
        log.info("service_started", transport=self.services.transport.name,
                 store="postgresql" if self.services.ledger.is_postgres else "sqlite",
                 areas=len(self.services.settings.intake_areas))

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._tasks = [group.create_task(job(), name=name) for name, job in self._jobs()]
            self.started.set()
            await self._stop.wait()
            for task in self._tasks:
                task.cancel()

    async def stop(self) -> None:
        """Stop intake, hand accepted work to the transport, stop jobs, close resources in order."""
        self.services.accepting = False
        timeout = self.services.settings.server.shutdown_timeout_s
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.services.relay.drain_once(), timeout)
        self._stop.set()
        if self._main is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._main), timeout)
            except TimeoutError:
                self._main.cancel()
                log.warning("shutdown_timed_out", timeout_s=timeout)
            except Exception:
                log.exception("background_job_failed")
        await self._close_resources()

    async def _close_resources(self) -> None:
        svc = self.services
        with contextlib.suppress(Exception):
            await svc.transport.close()
        with contextlib.suppress(Exception):
            await svc.http_client.close()
        await svc.ledger.dispose()
        log.info("service_stopped")
