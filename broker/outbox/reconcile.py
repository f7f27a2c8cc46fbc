"""The reconciliation sweep: the ledger, not RabbitMQ, decides what is not yet delivered.

A message can leave RabbitMQ without reaching a consumer (a node restart that dropped dead-lettered
messages, an operator who purged a queue, a definitions import gone wrong); the outbox row then says
`sent` forever and the case stays `routed`, and nothing else would ever notice. The sweep looks for
outbox rows that were published, that no consumer has settled (`processed`: delivered, failed or
dead-lettered), and that no worker has tried for `after_s` seconds, and publishes them again with the
same event id; consumers and receivers drop the repeat if the original turns up after all.

`after_s` must be longer than the longest retry tier plus a delivery timeout, so that a message that
waits in a retry tier is never taken for a lost one (workers write `attempted_at` on each failed
attempt). The same pass retires rows that consumers settled (`status = done`), so the set it scans
stays the recent and the unsettled ones. It is safe on every replica: rows are claimed with
`FOR UPDATE SKIP LOCKED` on PostgreSQL, and on SQLite one process owns the ledger.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import structlog

from broker.config.settings import ReconcileSettings
from broker.jobs.periodic import run_periodically
from broker.observability.metrics import Metrics
from broker.outbox.relay import publish_rows
from broker.store.ledger import Ledger, utcnow
from broker.store.outbox import SentOutbox
from broker.transport.protocol import Transport

__all__ = ["CONSUMERS", "ReconciliationSweep", "SweepResult"]

log = structlog.get_logger(__name__)

# Every consumer that settles an outbox event: the intake and Kela workers and the dead-letter
# recorder. An event settled by any of them is not lost.
CONSUMERS = ("intake", "kela", "dead")


@dataclass(frozen=True)
class SweepResult:
    examined: int = 0
    settled: int = 0
    republished: int = 0
    unconfirmed: int = 0


class ReconciliationSweep:
    def __init__(self, ledger: Ledger, transport: Transport, settings: ReconcileSettings,
                 metrics: Metrics) -> None:
        self._ledger = ledger
        self._transport = transport
        self._settings = settings
        self._metrics = metrics
        self._rows = SentOutbox(is_postgres=ledger.is_postgres, batch_size=settings.batch_size,
                                consumers=CONSUMERS)

    async def run(self) -> None:
        await run_periodically(self.sweep_once, self._settings.interval_s,
                               failure_event="reconcile_sweep_failed", wait_first=True)

    async def sweep_once(self, now: dt.datetime | None = None) -> SweepResult:
        """One pass over at most `batch_size` rows; returns what it found."""
        now = now or utcnow()
        cutoff = now - dt.timedelta(seconds=self._settings.after_s)
        async with self._ledger.transaction() as conn:
            rows = await self._rows.claim(conn, cutoff)
            done = [r.id for r in rows if r.settled]
            lost = [r for r in rows if not r.settled]
            if done:
                await self._rows.retire(conn, done, now)
            confirmed, failed = await publish_rows(self._transport, lost) if lost else ([], [])
            if failed:
                log.warning("reconcile_publish_unconfirmed", count=len(failed))
            republished = set(confirmed)
            for r in lost:
                if r.id in republished:
                    log.warning("reconcile_republished", event_id=r.event_id,
                                referral_id=_referral_of(r.routing_key, r.body))
            if confirmed:
                await self._rows.mark_republished(conn, confirmed, now)
        result = SweepResult(examined=len(rows), settled=len(done), republished=len(confirmed),
                             unconfirmed=len(lost) - len(confirmed))
        self._metrics.reconcile_sweeps.inc()
        self._metrics.reconcile_found.labels(result="settled").inc(result.settled)
        self._metrics.reconcile_found.labels(result="republished").inc(result.republished)
        if result.republished or result.unconfirmed:
            log.warning("reconcile_found_undelivered", republished=result.republished,
                        unconfirmed=result.unconfirmed)
        return result


def _referral_of(routing_key: str, body: str) -> str | None:
    """The case id of an envelope, for the log line (ids only: never the body's content)."""
    try:
        value = json.loads(body).get("referral_id")
    except (ValueError, AttributeError):
        return None
    return str(value) if value is not None and routing_key else None
