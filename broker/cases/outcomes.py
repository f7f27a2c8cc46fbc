"""What the delivery workers report (a delivery, a settled update, a delivery given up), and an
operator's replay of a dead letter."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from broker.cases.context import CaseContext
from broker.cases.feed import update_intake, update_kela
from broker.cases.results import Observations
from broker.domain.errors import Conflict, NotFound
from broker.security import audit
from broker.security.audit import Actor, AuditEntry, as_actor, system_actor
from broker.store import case_queries, dead_letters
from broker.store.ledger import utcnow
from schemas.enums import CaseState

__all__ = ["DELIVERY_ACTOR", "Outcomes"]

S = CaseState
# The delivery workers act for the service; their audit records name the component.
DELIVERY_ACTOR = system_actor("delivery")


class Outcomes:
    def __init__(self, ctx: CaseContext) -> None:
        self._ctx = ctx

    async def mark_delivered(self, *, consumer: str, event_id: str, referral_id: str, area: str,
                             via: str, event_type: str = "referral",
                             now: dt.datetime | None = None) -> bool:
        """Record a delivery and the consumer's progress in one commit; False for a repeat."""
        ledger = self._ctx.ledger
        now = now or utcnow()
        obs = Observations(area=area)
        async with ledger.transaction() as conn:
            if not await ledger.mark_processed(conn, consumer, event_id, now):
                return False
            if self._ctx.track_done:
                await ledger.outbox_done(conn, event_id, now)
            case = await ledger.case_by_id(conn, referral_id, for_update=ledger.is_postgres)
            if case is None or case.area != area:
                # Re-routed meanwhile: this delivery is history, not the current one.
                await audit.append(conn, DELIVERY_ACTOR, [AuditEntry("delivered", referral_id)], now)
                return True
            if event_type == "referral":
                if case.state != S.ROUTED:
                    # Another channel proved delivery first (a reply while routed, or the inbox):
                    # the case has its one `delivered` event already.
                    await audit.append(conn, DELIVERY_ACTOR, [AuditEntry("delivered", referral_id)],
                                       now)
                    return True
                await ledger.set_case(conn, case.pk, case.state, state=S.DELIVERED.value,
                                      delivered_at=now, state_changed_at=now)
                obs.delivered_latency_s = (now - case.received_at).total_seconds()
            await ledger.add_event(conn, referral_id=referral_id,
                                   type_="delivered" if event_type == "referral"
                                   else f"{event_type}_delivered",
                                   at=now, area=area, data={"via": via, "message_id": event_id})
            if event_type == "referral":
                await update_intake(self._ctx, conn, area=area, referral_id=referral_id,
                                    type_="delivered", at=now,
                                    data={"via": via, "message_id": event_id})
            # Last, always: the chain's head is the last lock a transaction takes, so the case-row
            # and feed locks taken before it cannot form a cycle with another transaction.
            await audit.append(conn, DELIVERY_ACTOR, [AuditEntry("delivered", referral_id)], now)
        self._ctx.observed("delivered", obs)
        return True

    async def mark_update_pushed(self, *, consumer: str, event_id: str,
                                 pushed_referral_id: str | None = None) -> bool:
        """Kela's copy of an update is settled; `pushed_referral_id` when it really left the service
        (a push to Kela's webhook), which is a disclosure of case data and so audited."""
        ledger = self._ctx.ledger
        now = utcnow()
        async with ledger.transaction() as conn:
            if not await ledger.mark_processed(conn, consumer, event_id, now):
                return False
            if self._ctx.track_done:
                await ledger.outbox_done(conn, event_id, now)
            if pushed_referral_id is not None:
                await audit.append(conn, DELIVERY_ACTOR,
                                   [AuditEntry("update_pushed", pushed_referral_id)], now)
        return True

    async def delivery_failed(self, *, consumer: str, event_id: str, referral_id: str | None,
                              area: str | None, queue: str, exchange: str, routing_key: str,
                              body: str, reason: str, attempts: int,
                              now: dt.datetime | None = None) -> bool:
        """Give up on a delivery: the case fails, the message is kept as a dead letter, Kela hears."""
        ctx = self._ctx
        ledger = ctx.ledger
        now = now or utcnow()
        async with ledger.transaction() as conn:
            if not await ledger.mark_processed(conn, consumer, event_id, now):
                return False
            if not await dead_letters.has_open_dead_letter(conn, event_id):
                await dead_letters.add_dead_letter(
                    conn, event_id=event_id, referral_id=referral_id, area=area, queue=queue,
                    exchange=exchange, routing_key=routing_key, reason=reason[:200],
                    attempts=attempts, body=body, at=now)
            if ctx.track_done:
                await ledger.outbox_done(conn, event_id, now)
            case = (await ledger.case_by_id(conn, referral_id, for_update=ledger.is_postgres)
                    if referral_id else None)
            referral_event = _envelope_type(body) == "referral"
            if case is not None and case.area == area and not (
                    referral_event and case.state != S.ROUTED):
                # (A referral whose case is past `routed` reached its intake by another channel:
                # the dead letter is kept for the operator, but the case did not fail.)
                if routing_key.startswith("referral.") and case.state == S.ROUTED:
                    await ledger.set_case(conn, case.pk, case.state, state=S.FAILED.value,
                                          state_changed_at=now)
                ev = await ledger.add_event(conn, referral_id=case.referral_id,
                                            type_="delivery_failed", at=now, area=area,
                                            data={"reason": reason[:200], "attempts": attempts})
                if not routing_key.startswith("update."):
                    await update_kela(ctx, conn, event_id=ev, referral_id=case.referral_id,
                                      sender=case.sender, kela_reference=case.kela_reference,
                                      type_="delivery_failed", at=now,
                                      data={"area": area, "reason": reason[:200]})
            await audit.append(conn, DELIVERY_ACTOR,
                               [AuditEntry("delivery_failed", referral_id, "failed")], now)
        return True

    async def replay_dead_letter(self, dead_letter_id: int, *, actor: Actor | str) -> dict[str, Any]:
        who = as_actor(actor, "admin")
        async with self._ctx.refusal_audited(who, "dead_letter_replayed", None):
            result = await self._replay_dead_letter(dead_letter_id, who, utcnow())
        self._ctx.on_outbox()
        return result

    async def _replay_dead_letter(self, dead_letter_id: int, actor: Actor, now: dt.datetime,
                                  ) -> dict[str, Any]:
        ledger = self._ctx.ledger
        async with ledger.transaction() as conn:
            dl = await dead_letters.dead_letter_by_id(conn, dead_letter_id)
            if dl is None:
                raise NotFound("no such dead letter")
            if dl["replayed_at"] is not None:
                raise Conflict("this dead letter was already replayed")
            if dl["referral_id"] and await case_queries.case_purged_at(
                    conn, dl["referral_id"]) is not None:
                raise Conflict("the case's personal data was purged (retention): nothing to deliver")
            await dead_letters.mark_replayed(conn, dead_letter_id, now)
            await dead_letters.forget_processed(conn, dl["event_id"])
            # Same event id on the replayed delivery: receivers that did get it drop the repeat.
            await dead_letters.requeue_outbox_event(conn, dl["event_id"], now)
            if not await dead_letters.outbox_has_event(conn, dl["event_id"]):
                await dead_letters.insert_outbox_copy(
                    conn, event_id=dl["event_id"], referral_id=dl["referral_id"],
                    exchange=dl["exchange"], routing_key=dl["routing_key"], body=dl["body"], at=now)
            state = None
            if dl["referral_id"]:
                case = await ledger.case_by_id(conn, dl["referral_id"], for_update=ledger.is_postgres)
                if case is not None:
                    state = case.state
                    if case.state == S.FAILED and case.area == dl["area"]:
                        await ledger.set_case(conn, case.pk, case.state, state=S.ROUTED.value,
                                              state_changed_at=now)
                        state = S.ROUTED.value
                    await ledger.add_event(conn, referral_id=case.referral_id, type_="replayed",
                                           at=now, area=dl["area"], actor=actor.party_id,
                                           data={"dead_letter_id": dead_letter_id})
            await audit.append(conn, actor, [AuditEntry("dead_letter_replayed", dl["referral_id"])], now)
        return {"id": dead_letter_id, "event_id": dl["event_id"], "referral_id": dl["referral_id"],
                "state": state, "replayed_at": now.isoformat()}


def _envelope_type(body: str) -> str | None:
    try:
        env = json.loads(body)
    except ValueError:
        return None
    return str(env.get("type")) if isinstance(env, dict) else None
