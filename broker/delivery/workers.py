"""Delivery workers: take a message from the transport, deliver it, and say Ack / Retry / DeadLetter.

The decision is made here, in `_settle`, from an explicit policy: a delivery that fails is retried
with exponential backoff and jitter (same event id each time) until `give_up_after_s` has passed since
the outbox row was written; then the case fails, the message becomes a dead letter, Kela is told.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from structlog.contextvars import bound_contextvars

from adapters.municipal.envelope import EVENT_ID_HEADER, SIGNATURE_HEADER, render_envelope, sign
from broker.cases.service import CaseService
from broker.config.settings import DeliverySettings, Route, Settings
from broker.delivery.filedrop import write_atomically
from broker.observability.metrics import Metrics
from broker.resilience.failures import UNAVAILABLE_MAX_DELAY_S, is_unavailable, unavailable_reason
from broker.store.ledger import Ledger, utcnow
from broker.transport.protocol import (
    H_CREATED_AT,
    H_DEATH_REASON,
    H_RECEIVER_HAS_IT,
    H_SOURCE_QUEUE,
    Ack,
    DeadLetter,
    Disposition,
    InboundMessage,
    Retry,
)

__all__ = ["DeadLetterRecorder", "DeliveryOutcome", "IntakeWorker", "KelaUpdatesWorker", "backoff_s"]

log = structlog.get_logger(__name__)


def backoff_s(attempt: int, settings: DeliverySettings, rng: random.Random | None = None) -> float:
    """1 s, 2 s, 4 s, ... capped at max_backoff_s, each scaled by a jitter in [0.5, 1.0]."""
    base = min(settings.max_backoff_s, settings.initial_backoff_s * 2 ** max(0, attempt - 1))
    jitter: float = (rng or random).random()
    return float(base * (0.5 + 0.5 * jitter))


@dataclass(frozen=True)
class DeliveryOutcome:
    ok: bool
    reason: str = ""


class WebhookClient:
    """Signed POSTs of the event envelope; any 2xx is an acknowledgement."""

    def __init__(self, session: aiohttp.ClientSession, settings: DeliverySettings) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)

    async def post(self, route: Route, env: dict[str, Any]) -> DeliveryOutcome:
        assert route.url is not None
        if route.secret is None:
            return DeliveryOutcome(False, f"secret variable {route.secret_env} is not set")
        body = render_envelope(env)
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: str(env["event_id"]),
            SIGNATURE_HEADER: sign(route.secret.get_secret_value().encode(), body, int(time.time())),
        }
        try:
            async with self._session.post(route.url, data=body, headers=headers,
                                          timeout=self._timeout, allow_redirects=False) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return DeliveryOutcome(True)
                return DeliveryOutcome(False, f"http_{resp.status}")
        except TimeoutError:
            return DeliveryOutcome(False, "timeout")
        except aiohttp.ClientError as exc:
            return DeliveryOutcome(False, f"connection_error: {type(exc).__name__}")


class _Worker:
    consumer = "worker"

    def __init__(self, settings: Settings, ledger: Ledger, cases: CaseService,
                 webhook: WebhookClient, metrics: Metrics) -> None:
        self.settings = settings
        self.ledger = ledger
        self.cases = cases
        self.webhook = webhook
        self.metrics = metrics

    def _give_up(self, msg: InboundMessage) -> bool:
        created = int(msg.headers.get(H_CREATED_AT, int(time.time())))
        return time.time() - created >= self.settings.delivery.give_up_after_s

    async def _seen(self, msg: InboundMessage) -> None:
        """Tell the reconciliation sweep that this event is alive in the retry tiers, not lost.
        Best effort: if the store is away the sweep may republish it later, which consumers and
        receivers drop as a repeat."""
        try:
            await self.ledger.outbox_attempted(msg.event_id, utcnow())
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.info("outbox_attempt_not_recorded", reason=unavailable_reason(exc))

    def _record_later(self, msg: InboundMessage, exc: Exception, via: str) -> Disposition:
        """The receiver has the message but the ledger could not record it (the store is away):
        retry the record only, so the receiver is not sent it again and the case never fails."""
        if not is_unavailable(exc):
            raise exc
        delay = backoff_s(msg.attempt, self.settings.delivery)
        log.warning("delivery_record_deferred", reason=unavailable_reason(exc),
                    retry_in_s=round(delay, 2))
        return Retry(min(delay, UNAVAILABLE_MAX_DELAY_S), unavailable_reason(exc),
                     headers={H_RECEIVER_HAS_IT: via})

    async def _settle(self, msg: InboundMessage, env: dict[str, Any], outcome: DeliveryOutcome,
                      area: str | None) -> Disposition:
        label = area or "kela"
        if outcome.ok:
            self.metrics.deliveries.labels(area=label, outcome="delivered").inc()
            return Ack()
        if not self._give_up(msg):
            self.metrics.deliveries.labels(area=label, outcome="retried").inc()
            await self._seen(msg)
            delay = backoff_s(msg.attempt, self.settings.delivery)
            log.info("delivery_attempt_failed", reason=outcome.reason, attempt=msg.attempt,
                     retry_in_s=round(delay, 2))
            return Retry(delay, outcome.reason)
        self.metrics.deliveries.labels(area=label, outcome="failed").inc()
        self.metrics.dead_letters.labels(reason=_reason_label(outcome.reason)).inc()
        await self.cases.delivery_failed(
            consumer=self.consumer, event_id=msg.event_id, referral_id=env.get("referral_id"),
            area=area, queue=msg.queue, exchange=_exchange_of(msg), routing_key=msg.routing_key,
            body=msg.body.decode(), reason=outcome.reason, attempts=msg.attempt)
        log.warning("delivery_given_up", reason=outcome.reason, attempts=msg.attempt)
        return Ack()


class IntakeWorker(_Worker):
    """Consumes `handoff.intake.<area>` and delivers by the area's route (webhook, pull or files)."""

    consumer = "intake"

    async def handle(self, msg: InboundMessage) -> Disposition:
        env = json.loads(msg.body)
        area, referral_id, type_ = env.get("area"), env.get("referral_id"), env.get("type")
        with bound_contextvars(event_id=msg.event_id, referral_id=referral_id, area=area):
            # One read for both questions: already applied? and, for a referral, its case.
            done, case = await self.ledger.delivery_state(
                self.consumer, msg.event_id, referral_id if type_ == "referral" else None)
            if done:
                log.info("duplicate_dropped")
                return Ack()
            route = self.settings.route_for(area) if area else None
            if route is None:
                return await self._settle(msg, env, DeliveryOutcome(False, "no_route"), area)
            if type_ == "referral":
                if case is None:
                    return DeadLetter("unknown_referral")
                if case.area != area:  # re-routed since: this delivery is obsolete
                    await self.cases.mark_delivered(consumer=self.consumer, event_id=msg.event_id,
                                                    referral_id=referral_id, area=area, via="obsolete")
                    return Ack()
                env = {**env, "data": case.referral()}
            already = msg.headers.get(H_RECEIVER_HAS_IT)
            outcome = DeliveryOutcome(True) if already else await self._deliver(route, env)
            if outcome.ok:
                try:
                    await self.cases.mark_delivered(
                        consumer=self.consumer, event_id=msg.event_id, referral_id=referral_id,
                        area=area, via=str(already or route.delivery), event_type=type_ or "referral")
                except Exception as exc:
                    return self._record_later(msg, exc, route.delivery)
                log.info("referral_delivered" if type_ == "referral" else f"{type_}_delivered",
                         via=route.delivery)
            return await self._settle(msg, env, outcome, area)

    async def _deliver(self, route: Route, env: dict[str, Any]) -> DeliveryOutcome:
        if route.delivery == "pull":
            return DeliveryOutcome(True)  # placed in the area's inbox: the ledger row is the inbox
        if route.delivery == "webhook":
            return await self.webhook.post(route, env)
        assert route.directory is not None
        name = f"{env['type']}-{env['referral_id']}-{env['event_id']}.{route.format}"
        content = render_file(env, route.format)
        try:
            await asyncio.to_thread(write_atomically, route.directory, name, content)
        except OSError as exc:
            return DeliveryOutcome(False, f"file_error: {type(exc).__name__}")
        return DeliveryOutcome(True)


def render_file(env: dict[str, Any], fmt: str) -> bytes:
    if fmt == "xml" and env.get("type") == "referral":
        from adapters.kela.notices_xml import render_referral_xml
        from schemas.models import Referral

        data = dict(env["data"])
        referral = Referral.model_validate(
            {k: v for k, v in data.items() if k not in ("referral_id", "received_at")})
        return render_referral_xml(referral, referral_id=str(env["referral_id"]),
                                   received_at=dt.datetime.fromisoformat(str(data["received_at"])))
    return render_envelope(env) + b"\n"


class KelaUpdatesWorker(_Worker):
    """Consumes `handoff.kela.updates`: pushes feed entries to Kela's webhook when one is configured."""

    consumer = "kela"

    async def handle(self, msg: InboundMessage) -> Disposition:
        env = json.loads(msg.body)
        with bound_contextvars(event_id=msg.event_id, referral_id=env.get("referral_id")):
            if await self.ledger.is_processed(self.consumer, msg.event_id):
                return Ack()
            route = self.settings.route_for("kela")
            if route is None or route.delivery != "webhook":
                await self.cases.mark_update_pushed(consumer=self.consumer, event_id=msg.event_id)
                return Ack()
            already = msg.headers.get(H_RECEIVER_HAS_IT)
            outcome = DeliveryOutcome(True) if already else await self.webhook.post(route, env)
            if outcome.ok:
                try:
                    await self.cases.mark_update_pushed(consumer=self.consumer, event_id=msg.event_id,
                                                        pushed_referral_id=env.get("referral_id"))
                except Exception as exc:
                    return self._record_later(msg, exc, route.delivery)
                log.info("update_pushed", type=env.get("type"))
            return await self._settle(msg, env, outcome, None)


class DeadLetterRecorder(_Worker):
    """Consumes `handoff.dead`: poison messages the transport gave up on become ledger dead letters."""

    consumer = "dead"

    async def handle(self, msg: InboundMessage) -> Disposition:
        try:
            env = json.loads(msg.body)
        except ValueError:
            env = {}
        reason = str(msg.headers.get(H_DEATH_REASON, "dead_lettered"))
        self.metrics.dead_letters.labels(reason=_reason_label(reason)).inc()
        await self.cases.delivery_failed(
            consumer=self.consumer, event_id=msg.event_id, referral_id=env.get("referral_id"),
            area=env.get("area"), queue=str(msg.headers.get(H_SOURCE_QUEUE, msg.queue)),
            exchange=_exchange_of(msg), routing_key=msg.routing_key, body=msg.body.decode(errors="replace"),
            reason=reason, attempts=msg.attempt)
        return Ack()


def _exchange_of(msg: InboundMessage) -> str:
    from broker.transport.protocol import REFERRALS_EXCHANGE, REPLIES_EXCHANGE

    return REPLIES_EXCHANGE if msg.routing_key.startswith("update.") else REFERRALS_EXCHANGE


def _reason_label(reason: str) -> str:
    """A bounded label value: the reason's kind, never its details."""
    head = reason.split(":", 1)[0].strip()
    if head.startswith("http_"):
        return "http_" + head[5:6] + "xx"
    return head if head in {"timeout", "connection_error", "no_route", "file_error", "handler_error",
                            "unknown_referral", "dead_lettered"} else "other"
