"""Where a case goes: the route decision, the `routed` event with the referral's outbox row, a case
parked as unroutable, and an operator's re-route."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.municipal.envelope import envelope
from broker.cases.context import CaseContext
from broker.cases.feed import intake_reroute, update_kela
from broker.config.settings import Settings
from broker.domain.errors import Conflict, InvalidInput, NotFound
from broker.domain.routing import ALAND_AREA
from broker.security import audit
from broker.security.audit import Actor, AuditEntry, as_actor
from broker.store.ledger import Connection, utcnow
from broker.transport.protocol import REFERRALS_EXCHANGE, referral_routing_key
from schemas.enums import CaseState

__all__ = ["AdminRouting", "route_decision", "route_to", "unroutable"]

S = CaseState


def route_decision(settings: Settings, area: str | None) -> tuple[str, str | None]:
    """(state, reason): `routed` when the area has a configured route, else `unroutable`."""
    if area is None:
        return S.UNROUTABLE.value, "municipality of residence is not in the classification"
    if settings.route_for(area) is None:
        if area == ALAND_AREA:
            return S.UNROUTABLE.value, "no route configured for area 91 (Åland)"
        return S.UNROUTABLE.value, f"no route configured for area {area}"
    return S.ROUTED.value, None


async def route_to(ctx: CaseContext, conn: Connection, referral_id: str, kind: str, area: str,
                   now: dt.datetime, *, with_events: Sequence[Mapping[str, Any]] = ()) -> None:
    """The `routed` event and the outbox row of the referral's message; `with_events` are
    written in the same round trip, before it."""
    *_, event_id = await ctx.ledger.add_events(conn, [
        *with_events, {"referral_id": referral_id, "type_": "routed", "at": now, "area": area}])
    # Thin message: the referral itself is read from the ledger at delivery, so personal data is
    # not copied into the broker's queues and a retention purge reaches every copy.
    env = envelope(event_id=event_id, type_="referral", referral_id=referral_id, area=area,
                   occurred_at=now, data={})
    await ctx.ledger.add_outbox(conn, event_id=event_id, referral_id=referral_id,
                                exchange=REFERRALS_EXCHANGE,
                                routing_key=referral_routing_key(area, kind),
                                envelope=env, at=now)


async def unroutable(ctx: CaseContext, conn: Connection, referral_id: str, sender: str,
                     kela_reference: str, area: str | None, reason: str, now: dt.datetime) -> None:
    event_id = await ctx.ledger.add_event(conn, referral_id=referral_id, type_="unroutable",
                                          at=now, area=area, data={"reason": reason})
    await update_kela(ctx, conn, event_id=event_id, referral_id=referral_id, sender=sender,
                      kela_reference=kela_reference, type_="unroutable", at=now,
                      data={"area": area, "reason": reason})


class AdminRouting:
    """An operator routes an unroutable, returned or failed case by hand."""

    def __init__(self, ctx: CaseContext) -> None:
        self._ctx = ctx

    async def admin_route(self, referral_id: str, area: str, *, actor: Actor | str,
                          now: dt.datetime | None = None) -> dict[str, Any]:
        who = as_actor(actor, "admin")
        async with self._ctx.refusal_audited(who, "rerouted_by_operator", referral_id):
            result = await self._admin_route(referral_id, area, who, now or utcnow())
        self._ctx.on_outbox()
        return result

    async def _admin_route(self, referral_id: str, area: str, actor: Actor, now: dt.datetime,
                           ) -> dict[str, Any]:
        ctx = self._ctx
        if area not in ctx.classification.areas:
            raise InvalidInput([{"loc": ["area"], "msg": "unknown area code", "type": "unknown_area"}])
        state, reason = route_decision(ctx.settings, area)
        if reason is not None:
            raise InvalidInput([{"loc": ["area"], "msg": reason, "type": "no_route"}])
        async with ctx.ledger.transaction() as conn:
            case = await ctx.ledger.case_by_id(conn, referral_id, for_update=ctx.ledger.is_postgres)
            if case is None:
                raise NotFound("no such referral")
            if case.state not in (S.UNROUTABLE, S.RETURNED, S.FAILED):
                raise Conflict(f"only unroutable, returned or failed cases can be re-routed by hand, "
                               f"not {case.state}")
            tried = case.tried_areas
            # An operator's decision starts the ping-pong count afresh.
            await ctx.ledger.set_case(conn, case.pk, case.state, state=state, area=area,
                                      state_changed_at=now, delivered_at=None, unroutable_reason=None,
                                      return_count=0, reroute_count=case.reroute_count + 1,
                                      areas_tried=",".join([*tried, area] if area not in tried
                                                           else tried))
            event_id = await ctx.ledger.add_event(
                conn, referral_id=referral_id, type_="rerouted", at=now, area=area,
                actor=actor.party_id, data={"from_area": case.area, "to_area": area, "by": "operator"})
            await route_to(ctx, conn, referral_id, case.kind, area, now)
            await update_kela(ctx, conn, event_id=event_id, referral_id=referral_id,
                              sender=case.sender, kela_reference=case.kela_reference,
                              type_="rerouted", at=now,
                              data={"area": area, "from_area": case.area, "to_area": area})
            await intake_reroute(ctx, conn, referral_id, case.area, area, now)
            await audit.append(conn, actor, [AuditEntry("rerouted_by_operator", referral_id)], now)
        return {"referral_id": referral_id, "state": state, "area": area}
