"""A referral from Kela: the case, its deadlines, its route (or why it has none), and the answer to
a repeated reference."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from broker.cases.context import CaseContext
from broker.cases.facts import enum_mask
from broker.cases.results import AcceptResult
from broker.cases.routing import route_decision, route_to, unroutable
from broker.domain.deadlines import DEADLINES, compute_deadlines
from broker.domain.errors import Conflict, InvalidInput
from broker.domain.workdays import helsinki_date
from broker.security import audit
from broker.security.audit import Actor, AuditEntry, as_actor
from broker.store import case_queries
from broker.store.errors import UniqueViolation
from broker.store.ledger import CaseRow, Connection, new_id, utcnow
from schemas.enums import CaseState
from schemas.models import Referral

__all__ = ["Intake"]

S = CaseState


class Intake:
    def __init__(self, ctx: CaseContext) -> None:
        self._ctx = ctx

    async def accept_referral(self, sender: Actor | str, referral: Referral, sha: str, *,
                              now: dt.datetime | None = None) -> AcceptResult:
        actor = as_actor(sender, "kela")
        async with self._ctx.refusal_audited(actor, "referral_received", None):
            result = await self._accept_referral(actor, referral, sha, now or utcnow())
        if result.created:
            self._ctx.on_outbox()
        return result

    async def _accept_referral(self, actor: Actor, referral: Referral, sha: str, now: dt.datetime,
                               ) -> AcceptResult:
        ledger = self._ctx.ledger
        sender = actor.party_id
        area = self._ctx.classification.area_of(referral.client.municipality_code)
        if area is None:
            raise InvalidInput([{"loc": ["client", "municipality_code"],
                                 "msg": "unknown municipality code (not in the Statistics Finland "
                                        "classification)", "type": "unknown_municipality"}])
        try:
            # No look-up first: a repeated reference is rare, and the unique constraint finds it
            # (then the except branch answers it) without a round trip on every new referral.
            async with ledger.transaction() as conn:
                result = await self._insert_referral(conn, sender, referral, sha, area, now)
                await audit.append(conn, actor, [AuditEntry("referral_received", result.referral_id)],
                                   now)
        except UniqueViolation:
            async with ledger.transaction() as conn:
                existing = await ledger.case_by_reference(conn, sender, referral.kela_reference)
                if existing is None:
                    raise
                return await self._duplicate_referral(conn, actor, existing, sha, now)
        return result

    @staticmethod
    async def _duplicate_referral(conn: Connection, actor: Actor, case: CaseRow, sha: str,
                                  now: dt.datetime) -> AcceptResult:
        if case.body_sha256 != sha:
            raise Conflict("kela_reference was already used for a different referral")
        result = json.loads(await case_queries.received_data(conn, case.referral_id))["result"]
        await audit.append(conn, actor, [AuditEntry("referral_received", case.referral_id, "duplicate")],
                           now)
        return AcceptResult(case.referral_id, result["state"], result["area"], created=False,
                            reason=result.get("reason"))

    async def _insert_referral(self, conn: Connection, sender: str, referral: Referral,
                               sha: str, area: str, now: dt.datetime) -> AcceptResult:
        ctx = self._ctx
        referral_id = new_id()
        state, reason = route_decision(ctx.settings, area)
        stored = referral.model_copy(update={"referral_id": uuid.UUID(referral_id), "received_at": now})
        due = {d.name: d.due_at for d in compute_deadlines(now, referral.kind.value,
                                                           referral.urgency.value, ctx.settings.sla)}
        await case_queries.insert_case(conn, dict(
            received_month=f"{helsinki_date(now):%Y-%m}", reroute_count=0,
            needs_mask=enum_mask(referral.needs), findings_mask=0,
            referral_id=referral_id, sender=sender, kela_reference=referral.kela_reference,
            body_sha256=sha, kind=referral.kind.value, urgency=referral.urgency.value, state=state,
            area=area, municipality_code=referral.client.municipality_code, received_at=now,
            state_changed_at=now, return_count=0, areas_tried=area, escalated="",
            unroutable_reason=reason, referral_json=stored.model_dump_json(),
            **{rule.due_column: due.get(rule.name) for rule in DEADLINES},
        ))
        result = AcceptResult(referral_id, state, area, created=True, reason=reason)
        received = {"referral_id": referral_id, "type_": "received", "at": now, "actor": sender,
                    "data": {"result": result.body(), "channel": "api"}}
        if state == S.ROUTED:
            await route_to(ctx, conn, referral_id, referral.kind.value, area, now, with_events=[received])
        else:
            await ctx.ledger.add_events(conn, [received])
            await unroutable(ctx, conn, referral_id, sender, referral.kela_reference, area,
                             reason or "", now)
        return result
