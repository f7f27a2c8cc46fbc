"""Case logic: what each input does to the ledger, one transaction per input.

A case change, its events, its outbox rows and its Kela feed entry commit together; callers answer
only after `CaseService` returns, so an acknowledged input is durable. In every transaction the
audit record is written last: the audit chain's head is the last lock a transaction takes.

`CaseService` is the one entry point; each concept lives in a module of its own, sharing one
`CaseContext`: `intake` (referrals), `routing` (route decisions, operator re-routes), `replies`
(replies, returns, answers), `outcomes` (delivery outcomes, dead-letter replay), `reads`, and
`feed` (Kela's update feed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from broker.cases.context import CaseContext
from broker.cases.feed import update_intake, update_kela
from broker.cases.intake import Intake
from broker.cases.outcomes import Outcomes
from broker.cases.reads import Reads
from broker.cases.replies import Replies
from broker.cases.results import AcceptResult, Observations, ReplyResult
from broker.cases.routing import AdminRouting, route_decision
from broker.config.settings import Settings
from broker.domain.routing import Classification
from broker.security.audit import Actor
from broker.store.ledger import CaseRow, Connection, Ledger
from schemas.models import Answer, Referral

__all__ = ["CaseService"]


class CaseService:
    def __init__(self, ledger: Ledger, settings: Settings, classification: Classification,
                 on_outbox: Callable[[], None] = lambda: None,
                 on_observed: Callable[[str, Observations], None] = lambda _k, _o: None, *,
                 track_done: bool = True) -> None:
        """`track_done`: mark outbox rows `done` when their message is consumed. Only a transport
        that loses what it holds on a restart (the embedded one) needs it, to publish `sent` rows
        again; on RabbitMQ a `sent` row is in a durable queue, and the extra UPDATE per message was
        pure cost."""
        self.ledger = ledger
        self.settings = settings
        self.classification = classification
        self._ctx = CaseContext(ledger=ledger, settings=settings, classification=classification,
                                on_outbox=on_outbox, observed=on_observed, track_done=track_done,
                                kela_push=settings.route_for("kela") is not None)
        self._intake = Intake(self._ctx)
        self._admin_routing = AdminRouting(self._ctx)
        self._replies = Replies(self._ctx)
        self._outcomes = Outcomes(self._ctx)
        self._reads = Reads(self._ctx)

    # --- routing --------------------------------------------------------------------------------

    def route_decision(self, area: str | None) -> tuple[str, str | None]:
        """(state, reason): `routed` when the area has a configured route, else `unroutable`."""
        return route_decision(self.settings, area)

    async def update_kela(self, conn: Connection, *, event_id: str, referral_id: str,
                          sender: str, kela_reference: str, type_: str, at: dt.datetime,
                          data: Mapping[str, Any]) -> None:
        """An entry in Kela's feed, in the caller's transaction (see `broker.cases.feed`)."""
        await update_kela(self._ctx, conn, event_id=event_id, referral_id=referral_id, sender=sender,
                          kela_reference=kela_reference, type_=type_, at=at, data=data)

    async def update_intake(self, conn: Connection, *, area: str, referral_id: str, type_: str,
                            at: dt.datetime, data: Mapping[str, Any]) -> None:
        """An entry in `area`'s intake feed, in the caller's transaction (see `broker.cases.feed`)."""
        await update_intake(self._ctx, conn, area=area, referral_id=referral_id, type_=type_, at=at,
                            data=data)

    # --- inputs ---------------------------------------------------------------------------------

    async def accept_referral(self, sender: Actor | str, referral: Referral, sha: str, *,
                              now: dt.datetime | None = None) -> AcceptResult:
        return await self._intake.accept_referral(sender, referral, sha, now=now)

    async def apply_reply(self, referral_id: str, data: Any, *, actor: Actor | str, area: str | None,
                          now: dt.datetime | None = None) -> ReplyResult:
        """Apply an intake's reply. 404 outside the caller's area; 422, then 409, as § 10 orders."""
        return await self._replies.apply_reply(referral_id, data, actor=actor, area=area, now=now)

    async def apply_answer(self, referral_id: str, answer: Answer, sha: str, *, actor: Actor | str,
                           sender: str | None = None, now: dt.datetime | None = None) -> ReplyResult:
        """Kela's answer to an information request; with `sender`, only that party's cases."""
        return await self._replies.apply_answer(referral_id, answer, sha, actor=actor, sender=sender,
                                                now=now)

    async def admin_route(self, referral_id: str, area: str, *, actor: Actor | str,
                          now: dt.datetime | None = None) -> dict[str, Any]:
        return await self._admin_routing.admin_route(referral_id, area, actor=actor, now=now)

    # --- delivery outcomes (called by the workers) ----------------------------------------------

    async def mark_delivered(self, *, consumer: str, event_id: str, referral_id: str, area: str,
                             via: str, event_type: str = "referral",
                             now: dt.datetime | None = None) -> bool:
        """Record a delivery and the consumer's progress in one commit; False for a repeat."""
        return await self._outcomes.mark_delivered(consumer=consumer, event_id=event_id,
                                                   referral_id=referral_id, area=area, via=via,
                                                   event_type=event_type, now=now)

    async def mark_update_pushed(self, *, consumer: str, event_id: str,
                                 pushed_referral_id: str | None = None) -> bool:
        """Kela's copy of an update is settled; `pushed_referral_id` when it was pushed (audited)."""
        return await self._outcomes.mark_update_pushed(consumer=consumer, event_id=event_id,
                                                       pushed_referral_id=pushed_referral_id)

    async def delivery_failed(self, *, consumer: str, event_id: str, referral_id: str | None,
                              area: str | None, queue: str, exchange: str, routing_key: str,
                              body: str, reason: str, attempts: int,
                              now: dt.datetime | None = None) -> bool:
        """Give up on a delivery: the case fails, the message is kept as a dead letter, Kela hears."""
        return await self._outcomes.delivery_failed(
            consumer=consumer, event_id=event_id, referral_id=referral_id, area=area, queue=queue,
            exchange=exchange, routing_key=routing_key, body=body, reason=reason, attempts=attempts,
            now=now)

    async def replay_dead_letter(self, dead_letter_id: int, *, actor: Actor | str) -> dict[str, Any]:
        return await self._outcomes.replay_dead_letter(dead_letter_id, actor=actor)

    # --- reads ----------------------------------------------------------------------------------

    async def record_fetch(self, referral_ids: list[str], *, area: str, actor: Actor | str) -> None:
        """The intake read these cases from its inbox: `fetched` events and the audit record."""
        await self._reads.record_fetch(referral_ids, area=area, actor=actor)

    async def record_reads(self, actor: Actor, action: str, referral_ids: Sequence[str | None],
                           ) -> None:
        """Audit a read that changes nothing else, committed before the data is returned."""
        await self._reads.record_reads(actor, action, referral_ids)

    async def read_case(self, referral_id: str, actor: Actor, *, area: str | None,
                        sender: str | None = None) -> tuple[CaseRow, list[dict[str, Any]]] | None:
        """A case with its history for `actor`; None (and a `not_found` record) when not visible."""
        return await self._reads.read_case(referral_id, actor, area=area, sender=sender)
