"""The composition root's product: every long-lived resource, built once and passed down.

Handlers reach it through the typed `SERVICES` app key (aiohttp `AppKey`), never through globals.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from broker.cases import CaseService, Observations
from broker.config.settings import Settings
from broker.delivery.file_replies import FileReplyScanner
from broker.delivery.workers import DeadLetterRecorder, IntakeWorker, KelaUpdatesWorker, WebhookClient
from broker.domain.routing import Classification
from broker.jobs.retention import RetentionJob
from broker.jobs.sla_clock import SlaClock
from broker.observability.metrics import Metrics
from broker.outbox.reconcile import ReconciliationSweep
from broker.outbox.relay import OutboxRelay
from broker.security.auth import TokenBook
from broker.security.rate_limits import RateLimiter
from broker.security.tokens import TokenStore
from broker.store.ledger import Ledger
from broker.transport.protocol import Transport

__all__ = ["SERVICES", "Services", "build_services"]


@dataclass
class Services:
    settings: Settings
    classification: Classification
    ledger: Ledger
    transport: Transport
    metrics: Metrics
    tokens: TokenBook
    limiter: RateLimiter
    cases: CaseService
    relay: OutboxRelay
    sweep: ReconciliationSweep
    http_client: aiohttp.ClientSession
    intake_worker: IntakeWorker
    kela_worker: KelaUpdatesWorker
    dead_recorder: DeadLetterRecorder
    sla_clock: SlaClock
    file_replies: FileReplyScanner
    retention: RetentionJob
    accepting: bool = True


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


def make_transport(settings: Settings) -> Transport:
    if settings.transport.url == "embedded":
        from broker.transport.embedded import EmbeddedTransport

        return EmbeddedTransport(delivery_limit=settings.transport.delivery_limit,
                                 give_up_after_s=settings.delivery.give_up_after_s)
    from broker.transport.rabbitmq import RabbitMQTransport

    return RabbitMQTransport(settings.transport.url, delivery_limit=settings.transport.delivery_limit,
                             retry_tiers_s=settings.transport.retry_tiers_s,
                             give_up_after_s=settings.delivery.give_up_after_s)


def build_services(settings: Settings, *, transport: Transport | None = None,
                   metrics: Metrics | None = None) -> Services:
    """Build (not start) everything; `broker.runtime.supervisor` starts and stops it in order."""
    classification = Classification.load()
    store = settings.store
    ledger = Ledger.from_url(store.url, pool_size=store.pool_size, echo=store.echo,
                             connect_timeout_s=store.connect_timeout_s,
                             statement_timeout_s=store.statement_timeout_s,
                             pool_timeout_s=store.pool_timeout_s,
                             min_free_disk_mb=store.min_free_disk_mb)
    transport = transport or make_transport(settings)
    metrics = metrics or Metrics()
    relay = OutboxRelay(ledger, transport, settings.relay)

    def observed(_kind: str, obs: Observations) -> None:
        if obs.delivered_latency_s is not None:
            metrics.delivery_latency.observe(max(0.0, obs.delivered_latency_s))
        if obs.first_reply_latency_s is not None:
            metrics.first_reply_latency.observe(max(0.0, obs.first_reply_latency_s))

    cases = CaseService(ledger, settings, classification, on_outbox=relay.notify, on_observed=observed,
                        track_done=not transport.durable)
    http_client = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, limit_per_host=20),
        headers={"User-Agent": "kela-handoff/0.1"},
    )
    webhook = WebhookClient(http_client, settings.delivery)
    limiter = RateLimiter(settings.server.rate_limit_per_s, settings.server.rate_limit_burst)
    tokens = TokenBook(settings.parties, TokenStore(ledger), limiter=limiter)
    args = (settings, ledger, cases, webhook, metrics)
    return Services(
        settings=settings, classification=classification, ledger=ledger, transport=transport,
        metrics=metrics, tokens=tokens, limiter=limiter, cases=cases, relay=relay,
        sweep=ReconciliationSweep(ledger, transport, settings.reconcile, metrics),
        http_client=http_client, intake_worker=IntakeWorker(*args), kela_worker=KelaUpdatesWorker(*args),
        dead_recorder=DeadLetterRecorder(*args),
        sla_clock=SlaClock(ledger, cases, interval_s=settings.sla.clock_interval_s),
        file_replies=FileReplyScanner(settings, cases,
                                      poll_interval_s=settings.delivery.file_scan_interval_s),
        retention=RetentionJob(ledger, months_after_close=settings.retention.months_after_close,
                               interval_s=settings.retention.schedule_interval_s),
    )
