"""What the parties say about a case after its referral: an intake's reply (a returned case is
re-routed or parked, the ping-pong guard of issue 6), and Kela's answer to an information request."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from adapters.municipal.envelope import envelope
from broker.cases.context import CaseContext
from broker.cases.facts import milestones, statistics_facts
from broker.cases.feed import intake_reroute, update_intake, update_kela
from broker.cases.hashing import body_hash
from broker.cases.results import Observations, ReplyResult
from broker.cases.routing import route_decision, route_to
from broker.domain.errors import Conflict, InvalidInput, NotFound
from broker.domain.state_machine import reply_target
from broker.security import audit
from broker.security.audit import Actor, AuditEntry, as_actor
from broker.store import case_queries
from broker.store.errors import UniqueViolation
from broker.store.ledger import CaseRow, Connection, new_id, utcnow
from broker.transport.protocol import REFERRALS_EXCHANGE, referral_routing_key
from schemas.enums import CaseState, Kind
from schemas.errors import SchemaError
from schemas.models import Answer, Reply
from schemas.rules import parse_reply

__all__ = ["Replies"]

S = CaseState


class Replies:
    def __init__(self, ctx: CaseContext) -> None:
        self._ctx = ctx

    # --- replies from the intake ----------------------------------------------------------------

    async def apply_reply(self, referral_id: str, data: Any, *, actor: Actor | str, area: str | None,
                          now: dt.datetime | None = None) -> ReplyResult:
        """Apply an intake's reply. 404 outside the caller's area; 422, then 409, as § 10 orders."""
        who = as_actor(actor, "intake")
        sha = body_hash(data)
        async with self._ctx.refusal_audited(who, "reply_applied", referral_id):
            for attempt in (1, 2):
                try:
                    result = await self._apply_reply_once(referral_id, data, sha, who, area,
                                                          now or utcnow())
                except UniqueViolation:
                    if attempt == 2:
                        raise
                    continue  # a concurrent duplicate won the unique constraint: re-read and compare
                if result.created:
                    self._ctx.on_outbox()
                return result
        raise AssertionError("unreachable")

    async def _apply_reply_once(self, referral_id: str, data: Any, sha: str, actor: Actor,
                                area: str | None, now: dt.datetime) -> ReplyResult:
        ctx = self._ctx
        obs = Observations()
        async with ctx.ledger.transaction() as conn:
            case = await ctx.ledger.case_by_id(conn, referral_id, for_update=ctx.ledger.is_postgres)
            if case is None or (area is not None and case.area != area):
                raise NotFound("no such referral")
            try:
                reply = parse_reply(data, Kind(case.kind))
            except SchemaError as exc:
                raise InvalidInput(exc.errors) from None
            dedupe_key = f"reply:{reply.reply_id}"
            previous = await case_queries.previous_input(conn, referral_id, dedupe_key)
            if previous is not None:
                replayed = _replayed(previous, sha, "reply_id")
                await audit.append(conn, actor, [AuditEntry("reply_applied", referral_id, "duplicate")],
                                   now)
                return replayed
            state = CaseState(case.state)
            target = reply_target(state, reply.status)
            if target is None:
                raise Conflict(f"a {reply.status.value} reply does not fit a case in state {state.value}")
            values: dict[str, Any] = {"state_changed_at": now}
            delivered_area: str | None = None
            if state is S.ROUTED:
                await ctx.ledger.add_event(conn, referral_id=referral_id, type_="delivered", at=now,
                                           area=case.area, data={"via": "reply"})
                values["delivered_at"] = now
                delivered_area = case.area
                obs.delivered_latency_s = (now - case.received_at).total_seconds()
            if case.first_reply_at is None:
                values["first_reply_at"] = now
                values["first_reply_s"] = max(0, int((now - case.received_at).total_seconds()))
                obs.first_reply_latency_s = (now - case.received_at).total_seconds()
            values.update(milestones(case, reply.status, now))
            values.update(await statistics_facts(conn, case, reply))
            reply_data = reply.model_dump(mode="json", exclude_none=True)
            final_state: str = target.value
            extra: dict[str, dict[str, Any]] = {}
            if target is S.RETURNED:
                final_state, extra = await self._returned(conn, case, reply, now, values)
            values["state"] = final_state
            result = {"referral_id": referral_id, "reply_id": reply.reply_id, "state": final_state,
                      "area": values.get("area", case.area)}
            event_id = await ctx.ledger.add_event(
                conn, referral_id=referral_id, type_="reply", at=now, area=case.area,
                actor=actor.party_id, dedupe_key=dedupe_key, body_sha256=sha,
                data={"reply": reply_data, "result": result})
            if not await ctx.ledger.set_case(conn, case.pk, case.state, **values):
                raise UniqueViolation("case changed concurrently", None, Exception())
            await update_kela(ctx, conn, event_id=event_id, referral_id=referral_id,
                              sender=case.sender, kela_reference=case.kela_reference,
                              type_="reply", at=now,
                              data={"area": case.area, "state": final_state, "reply": reply_data})
            for kind, payload in extra.items():
                await update_kela(ctx, conn, event_id=new_id(), referral_id=referral_id,
                                  sender=case.sender, kela_reference=case.kela_reference,
                                  type_=kind, at=now, data=payload)
            # The intake feed after Kela's (the order of the feed locks).
            if delivered_area is not None:
                await update_intake(ctx, conn, area=delivered_area, referral_id=referral_id,
                                    type_="delivered", at=now, data={"via": "reply"})
            if "rerouted" in extra:
                await intake_reroute(ctx, conn, referral_id, case.area, extra["rerouted"]["to_area"],
                                      now)
            await audit.append(conn, actor, [AuditEntry("reply_applied", referral_id)], now)
        obs.area = case.area
        ctx.observed("reply", obs)
        return ReplyResult(created=True, body=result)

    async def _returned(self, conn: Connection, case: CaseRow, reply: Reply, now: dt.datetime,
                        values: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
        """Re-route a returned case, or park it as unroutable: the ping-pong guard of issue 6."""
        ctx = self._ctx
        count = case.return_count + 1
        values["return_count"] = count
        tried = case.tried_areas
        suggestion = reply.suggested_municipality_code
        target = ctx.classification.area_of(suggestion) if suggestion else None
        reason: str | None = None
        guard = False
        if suggestion is None:
            reason = "returned without a suggested municipality"
        elif target is None:
            reason = "returned with a municipality code that is not in the classification"
        elif target in tried:
            reason, guard = f"returned towards area {target}, which already had the case", True
        elif count > ctx.settings.routing.max_returns:
            reason, guard = f"returned {count} times (limit {ctx.settings.routing.max_returns})", True
        else:
            _state, reason = route_decision(ctx.settings, target)
        if reason is None and target is not None:
            values["area"] = target
            values["areas_tried"] = ",".join([*tried, target])
            values["reroute_count"] = case.reroute_count + 1
            values["delivered_at"] = None
            await ctx.ledger.add_event(conn, referral_id=case.referral_id, type_="rerouted", at=now,
                                       area=target, data={"from_area": case.area, "to_area": target})
            await route_to(ctx, conn, case.referral_id, case.kind, target, now)
            return S.ROUTED.value, {"rerouted": {"area": target, "from_area": case.area,
                                                 "to_area": target}}
        values["unroutable_reason"] = reason
        await ctx.ledger.add_event(conn, referral_id=case.referral_id, type_="unroutable", at=now,
                                   area=case.area, data={"reason": reason})
        out = {"unroutable": {"area": case.area, "reason": reason}}
        if guard:
            await ctx.ledger.add_event(conn, referral_id=case.referral_id, type_="escalation",
                                       at=now, area=case.area,
                                       data={"deadline": "routing", "reason": "ping_pong_guard"})
            out["escalation"] = {"area": case.area, "deadline": "routing", "reason": "ping_pong_guard"}
        return S.UNROUTABLE.value, out

    # --- Kela's answers to information requests --------------------------------------------------

    async def apply_answer(self, referral_id: str, answer: Answer, sha: str, *, actor: Actor | str,
                           sender: str | None = None, now: dt.datetime | None = None) -> ReplyResult:
        """Kela's answer to an information request. With `sender` (a Kela party that sees only its
        own cases), another sender's case is a 404, as for an id that does not exist."""
        now = now or utcnow()
        who = as_actor(actor, "kela")
        async with self._ctx.refusal_audited(who, "answer_applied", referral_id):
            try:
                result = await self._apply_answer_once(referral_id, answer, sha, who, sender, now)
            except UniqueViolation:
                result = await self._apply_answer_once(referral_id, answer, sha, who, sender, now)
        if result.created:
            self._ctx.on_outbox()
        return result

    async def _apply_answer_once(self, referral_id: str, answer: Answer, sha: str, actor: Actor,
                                 sender: str | None, now: dt.datetime) -> ReplyResult:
        ledger = self._ctx.ledger
        async with ledger.transaction() as conn:
            case = await ledger.case_by_id(conn, referral_id, for_update=ledger.is_postgres)
            if case is None or (sender is not None and case.sender != sender):
                raise NotFound("no such referral")
            dedupe_key = f"answer:{answer.answer_id}"
            previous = await case_queries.previous_input(conn, referral_id, dedupe_key)
            if previous is not None:
                replayed = _replayed(previous, sha, "answer_id")
                await audit.append(conn, actor, [AuditEntry("answer_applied", referral_id, "duplicate")],
                                   now)
                return replayed
            if case.state != S.INFO_REQUESTED:
                raise Conflict(f"an answer fits only a case in state info_requested, not {case.state}")
            result = {"referral_id": referral_id, "answer_id": answer.answer_id,
                      "state": S.IN_PROGRESS.value, "area": case.area}
            answer_data = answer.model_dump(mode="json")
            event_id = await ledger.add_event(
                conn, referral_id=referral_id, type_="answer", at=now, area=case.area,
                actor=actor.party_id, dedupe_key=dedupe_key, body_sha256=sha,
                data={"answer": answer_data, "result": result})
            if not await ledger.set_case(conn, case.pk, case.state, state=S.IN_PROGRESS.value,
                                         state_changed_at=now):
                raise UniqueViolation("case changed concurrently", None, Exception())
            env = envelope(event_id=event_id, type_="answer", referral_id=referral_id, area=case.area,
                           occurred_at=now, data=answer_data)
            assert case.area is not None
            await ledger.add_outbox(conn, event_id=event_id, referral_id=referral_id,
                                    exchange=REFERRALS_EXCHANGE,
                                    routing_key=referral_routing_key(case.area, "answer"),
                                    envelope=env, at=now)
            await update_intake(self._ctx, conn, area=case.area, referral_id=referral_id,
                                type_="answer", at=now,
                                data={"answer_id": answer.answer_id, "event_id": event_id,
                                      "state": S.IN_PROGRESS.value})
            await audit.append(conn, actor, [AuditEntry("answer_applied", referral_id)], now)
        return ReplyResult(created=True, body=result)


def _replayed(previous: Mapping[str, Any], sha: str, key: str) -> ReplyResult:
    """The earlier answer to a repeated input; 409 when the body differs."""
    if previous["body_sha256"] != sha:
        raise Conflict(f"{key} was already used with a different body")
    return ReplyResult(created=False, body=json.loads(previous["data"])["result"])
