"""Case logic: what each input does to the ledger, one transaction per input.

A case change, its events, its outbox rows and its Kela feed entry commit together; callers answer
only after `CaseService` returns, so an acknowledged input is durable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.municipal.envelope import envelope
from broker.config.settings import Settings
from broker.domain.deadlines import DEADLINES, compute_deadlines
from broker.domain.errors import Conflict, HandoffError, InvalidInput, NotFound
from broker.domain.routing import ALAND_AREA, Classification
from broker.domain.state_machine import reply_target
from broker.domain.workdays import helsinki_date
from broker.security import audit
from broker.security.audit import Actor, AuditEntry, as_actor, system_actor
from broker.store.ledger import CaseRow, Ledger, new_id, utcnow
from broker.store.tables import cases, dead_letters, events, outbox, processed
from broker.transport.protocol import (
    REFERRALS_EXCHANGE,
    REPLIES_EXCHANGE,
    referral_routing_key,
    update_routing_key,
)
from schemas.enums import CaseState, Kind, ReplyStatus
from schemas.errors import SchemaError
from schemas.models import Answer, Referral, Reply
from schemas.rules import parse_reply

__all__ = ["AcceptResult", "CaseService", "ReplyResult", "body_hash", "enum_mask"]

S = CaseState
_INSERT_CASE = cases.insert()  # built once, executed with parameters (see broker.store.ledger)
# The delivery workers act for the service; their audit records name the component.
DELIVERY_ACTOR = system_actor("delivery")


def enum_mask(members: Iterable[Enum]) -> int:
    """Bit i set for the i-th member of the enum (declaration order is part of the stored format)."""
    mask = 0
    for member in members:
        mask |= 1 << list(type(member)).index(member)
    return mask


def body_hash(obj: Any) -> str:
    """Hash of a body's meaning (key order and whitespace do not matter), for idempotency checks."""
    canon = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    # surrogatepass: a JSON body may spell a lone surrogate; hashing must not fail before validation.
    return hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class AcceptResult:
    referral_id: str
    state: str
    area: str | None
    created: bool
    reason: str | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"referral_id": self.referral_id, "state": self.state, "area": self.area}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class ReplyResult:
    created: bool
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class Observations:
    """What the metrics layer learns from a committed change (filled in, then reported after commit)."""

    delivered_latency_s: float | None = None
    first_reply_latency_s: float | None = None
    area: str | None = None


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
        self._track_done = track_done
        self.settings = settings
        self.classification = classification
        self._on_outbox = on_outbox
        self._observed = on_observed
        self._kela_push = settings.route_for("kela") is not None

    # --- routing --------------------------------------------------------------------------------

    def route_decision(self, area: str | None) -> tuple[str, str | None]:
        """(state, reason): `routed` when the area has a configured route, else `unroutable`."""
        if area is None:
            return S.UNROUTABLE.value, "municipality of residence is not in the classification"
        if self.settings.route_for(area) is None:
            if area == ALAND_AREA:
                return S.UNROUTABLE.value, "no route configured for area 91 (Åland)"
            return S.UNROUTABLE.value, f"no route configured for area {area}"
        return S.ROUTED.value, None

    # --- intake from Kela -----------------------------------------------------------------------

    @asynccontextmanager
    async def _refusal_audited(self, actor: Actor, action: str, referral_id: str | None,
                               ) -> AsyncIterator[None]:
        """A refused request rolled its transaction back, audit record included: record the refusal
        in a transaction of its own, so the trail shows attempts as well as effects."""
        try:
            yield
        except HandoffError as exc:
            await audit.append_alone(self.ledger, actor,
                                     [AuditEntry(action, referral_id, audit.outcome_of(exc))], utcnow())
            raise

    async def accept_referral(self, sender: Actor | str, referral: Referral, sha: str, *,
                              now: dt.datetime | None = None) -> AcceptResult:
        actor = as_actor(sender, "kela")
        async with self._refusal_audited(actor, "referral_received", None):
            result = await self._accept_referral(actor, referral, sha, now or utcnow())
        if result.created:
            self._on_outbox()
        return result

    async def _accept_referral(self, actor: Actor, referral: Referral, sha: str, now: dt.datetime,
                               ) -> AcceptResult:
        sender = actor.party_id
        area = self.classification.area_of(referral.client.municipality_code)
        if area is None:
            raise InvalidInput([{"loc": ["client", "municipality_code"],
                                 "msg": "unknown municipality code (not in the Statistics Finland "
                                        "classification)", "type": "unknown_municipality"}])
        try:
            # No look-up first: a repeated reference is rare, and the unique constraint finds it
            # (then the except branch answers it) without a round trip on every new referral.
            async with self.ledger.transaction() as conn:
                result = await self._insert_referral(conn, sender, referral, sha, area, now)
                await audit.append(conn, actor, [AuditEntry("referral_received", result.referral_id)],
                                   now)
        except IntegrityError:
            async with self.ledger.transaction() as conn:
                existing = await self.ledger.case_by_reference(conn, sender, referral.kela_reference)
                if existing is None:
                    raise
                return await self._duplicate_referral(conn, actor, existing, sha, now)
        return result

    async def _duplicate_referral(self, conn: AsyncConnection, actor: Actor, case: CaseRow, sha: str,
                                  now: dt.datetime) -> AcceptResult:
        if case.body_sha256 != sha:
            raise Conflict("kela_reference was already used for a different referral")
        first = (await conn.execute(
            sa.select(events.c.data).where(events.c.referral_id == case.referral_id,
                                           events.c.type == "received").limit(1))).scalar_one()
        result = json.loads(first)["result"]
        await audit.append(conn, actor, [AuditEntry("referral_received", case.referral_id, "duplicate")],
                           now)
        return AcceptResult(case.referral_id, result["state"], result["area"], created=False,
                            reason=result.get("reason"))

    async def _insert_referral(self, conn: AsyncConnection, sender: str, referral: Referral,
                               sha: str, area: str, now: dt.datetime) -> AcceptResult:
        referral_id = new_id()
        state, reason = self.route_decision(area)
        stored = referral.model_copy(update={"referral_id": uuid.UUID(referral_id), "received_at": now})
        due = {d.name: d.due_at for d in compute_deadlines(now, referral.kind.value,
                                                           referral.urgency.value, self.settings.sla)}
        await conn.execute(_INSERT_CASE, dict(
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
            await self._route_to(conn, referral_id, referral.kind.value, area, now, with_events=[received])
        else:
            await self.ledger.add_events(conn, [received])
            await self._unroutable(conn, referral_id, sender, referral.kela_reference, area,
                                   reason or "", now)
        return result

    async def _route_to(self, conn: AsyncConnection, referral_id: str, kind: str, area: str,
                        now: dt.datetime, *, with_events: Sequence[Mapping[str, Any]] = ()) -> None:
        """The `routed` event and the outbox row of the referral's message; `with_events` are
        written in the same round trip, before it."""
        *_, event_id = await self.ledger.add_events(conn, [
            *with_events, {"referral_id": referral_id, "type_": "routed", "at": now, "area": area}])
        # Thin message: the referral itself is read from the ledger at delivery, so personal data is
        # not copied into the broker's queues and a retention purge reaches every copy.
        env = envelope(event_id=event_id, type_="referral", referral_id=referral_id, area=area,
                       occurred_at=now, data={})
        await self.ledger.add_outbox(conn, event_id=event_id, referral_id=referral_id,
                                     exchange=REFERRALS_EXCHANGE,
                                     routing_key=referral_routing_key(area, kind),
                                     envelope=env, at=now)

    async def _unroutable(self, conn: AsyncConnection, referral_id: str, sender: str,
                          kela_reference: str, area: str | None, reason: str,
                          now: dt.datetime) -> None:
        event_id = await self.ledger.add_event(conn, referral_id=referral_id, type_="unroutable",
                                               at=now, area=area, data={"reason": reason})
        await self.update_kela(conn, event_id=event_id, referral_id=referral_id, sender=sender,
                               kela_reference=kela_reference, type_="unroutable", at=now,
                               data={"area": area, "reason": reason})

    async def update_kela(self, conn: AsyncConnection, *, event_id: str, referral_id: str,
                          sender: str, kela_reference: str, type_: str, at: dt.datetime,
                          data: Mapping[str, Any]) -> None:
        """An entry in Kela's pull feed (`sender`'s, the case's sender), and (when Kela has a webhook
        route) a push of the same."""
        item = {"referral_id": referral_id, "kela_reference": kela_reference, "type": type_,
                "at": at.isoformat(), **data}
        await self.ledger.add_update(conn, event_id=event_id, referral_id=referral_id,
                                     sender=sender, kela_reference=kela_reference, type_=type_,
                                     at=at, data=item)
        if self._kela_push:
            env = envelope(event_id=event_id, type_=type_, referral_id=referral_id,
                           area=data.get("area"), occurred_at=at, data=item)
            await self.ledger.add_outbox(conn, event_id=event_id, referral_id=referral_id,
                                         exchange=REPLIES_EXCHANGE,
                                         routing_key=update_routing_key(type_), envelope=env, at=at)

    # --- replies from the intake ----------------------------------------------------------------

    async def apply_reply(self, referral_id: str, data: Any, *, actor: Actor | str, area: str | None,
                          now: dt.datetime | None = None) -> ReplyResult:
        """Apply an intake's reply. 404 outside the caller's area; 422, then 409, as § 10 orders."""
        who = as_actor(actor, "intake")
        sha = body_hash(data)
        async with self._refusal_audited(who, "reply_applied", referral_id):
            for attempt in (1, 2):
                try:
                    result = await self._apply_reply_once(referral_id, data, sha, who, area,
                                                          now or utcnow())
                except IntegrityError:
                    if attempt == 2:
                        raise
                    continue  # a concurrent duplicate won the unique constraint: re-read and compare
                if result.created:
                    self._on_outbox()
                return result
        raise AssertionError("unreachable")

    async def _apply_reply_once(self, referral_id: str, data: Any, sha: str, actor: Actor,
                                area: str | None, now: dt.datetime) -> ReplyResult:
        obs = Observations()
        async with self.ledger.transaction() as conn:
            case = await self.ledger.case_by_id(conn, referral_id, for_update=self.ledger.is_postgres)
            if case is None or (area is not None and case.area != area):
                raise NotFound("no such referral")
            try:
                reply = parse_reply(data, Kind(case.kind))
            except SchemaError as exc:
                raise InvalidInput(exc.errors) from None
            dedupe_key = f"reply:{reply.reply_id}"
            previous = await self._previous(conn, referral_id, dedupe_key)
            if previous is not None:
                replayed = self._replayed(previous, sha, "reply_id")
                await audit.append(conn, actor, [AuditEntry("reply_applied", referral_id, "duplicate")],
                                   now)
                return replayed
            state = CaseState(case.state)
            target = reply_target(state, reply.status)
            if target is None:
                raise Conflict(f"a {reply.status.value} reply does not fit a case in state {state.value}")
            values: dict[str, Any] = {"state_changed_at": now}
            if state is S.ROUTED:
                await self.ledger.add_event(conn, referral_id=referral_id, type_="delivered", at=now,
                                            area=case.area, data={"via": "reply"})
                values["delivered_at"] = now
                obs.delivered_latency_s = (now - case.received_at).total_seconds()
            if case.first_reply_at is None:
                values["first_reply_at"] = now
                values["first_reply_s"] = max(0, int((now - case.received_at).total_seconds()))
                obs.first_reply_latency_s = (now - case.received_at).total_seconds()
            values.update(self._milestones(case, reply.status, now))
            values.update(await self._statistics_facts(conn, case, reply))
            reply_data = reply.model_dump(mode="json", exclude_none=True)
            final_state: str = target.value
            extra: dict[str, dict[str, Any]] = {}
            if target is S.RETURNED:
                final_state, extra = await self._returned(conn, case, reply, now, values)
            values["state"] = final_state
            result = {"referral_id": referral_id, "reply_id": reply.reply_id, "state": final_state,
                      "area": values.get("area", case.area)}
            event_id = await self.ledger.add_event(
                conn, referral_id=referral_id, type_="reply", at=now, area=case.area,
                actor=actor.party_id, dedupe_key=dedupe_key, body_sha256=sha,
                data={"reply": reply_data, "result": result})
            if not await self.ledger.set_case(conn, case.pk, case.state, **values):
                raise IntegrityError("case changed concurrently", None, Exception())
            await self.update_kela(conn, event_id=event_id, referral_id=referral_id,
                                   sender=case.sender, kela_reference=case.kela_reference,
                                   type_="reply", at=now,
                                   data={"area": case.area, "state": final_state, "reply": reply_data})
            for kind, payload in extra.items():
                await self.update_kela(conn, event_id=new_id(), referral_id=referral_id,
                                       sender=case.sender, kela_reference=case.kela_reference,
                                       type_=kind, at=now, data=payload)
            await audit.append(conn, actor, [AuditEntry("reply_applied", referral_id)], now)
        obs.area = case.area
        self._observed("reply", obs)
        return ReplyResult(created=True, body=result)

    @staticmethod
    async def _statistics_facts(_conn: AsyncConnection, _case: CaseRow, reply: Reply) -> dict[str, Any]:
        """What § 11 statistics need from a reply, kept on the case (no free text, no names)."""
        values: dict[str, Any] = {}
        if reply.referral_quality is not None:
            values["referral_quality"] = reply.referral_quality.value
        if reply.decision is not None:
            values["decision"] = reply.decision.value
        if reply.status is ReplyStatus.CLOSED:
            values["outcome"] = reply.outcome.value if reply.outcome else None
            if reply.client_feedback is not None:
                values["feedback_rating"] = reply.client_feedback.rating
                values["feedback_heard"] = reply.client_feedback.heard
            if reply.findings:
                values["findings_mask"] = enum_mask(reply.findings)
        return values

    @staticmethod
    def _milestones(case: CaseRow, status: ReplyStatus, now: dt.datetime) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for rule in DEADLINES:  # any reply acknowledges; later steps meet the later deadlines
            if status.value in rule.met_by and getattr(case, rule.met_column) is None:
                values[rule.met_column] = now
        if status is ReplyStatus.CLOSED:
            values["closed_at"] = now
        return values

    async def _returned(self, conn: AsyncConnection, case: CaseRow, reply: Reply, now: dt.datetime,
                        values: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
        """Re-route a returned case, or park it as unroutable: the ping-pong guard of issue 6."""
        count = case.return_count + 1
        values["return_count"] = count
        tried = case.tried_areas
        suggestion = reply.suggested_municipality_code
        target = self.classification.area_of(suggestion) if suggestion else None
        reason: str | None = None
        guard = False
        if suggestion is None:
            reason = "returned without a suggested municipality"
        elif target is None:
            reason = "returned with a municipality code that is not in the classification"
        elif target in tried:
            reason, guard = f"returned towards area {target}, which already had the case", True
        elif count > self.settings.routing.max_returns:
            reason, guard = f"returned {count} times (limit {self.settings.routing.max_returns})", True
        else:
            _state, reason = self.route_decision(target)
        if reason is None and target is not None:
            values["area"] = target
            values["areas_tried"] = ",".join([*tried, target])
            values["reroute_count"] = case.reroute_count + 1
            values["delivered_at"] = None
            await self.ledger.add_event(conn, referral_id=case.referral_id, type_="rerouted", at=now,
                                        area=target, data={"from_area": case.area, "to_area": target})
            await self._route_to(conn, case.referral_id, case.kind, target, now)
            return S.ROUTED.value, {"rerouted": {"area": target, "from_area": case.area,
                                                 "to_area": target}}
        values["unroutable_reason"] = reason
        await self.ledger.add_event(conn, referral_id=case.referral_id, type_="unroutable", at=now,
                                    area=case.area, data={"reason": reason})
        out = {"unroutable": {"area": case.area, "reason": reason}}
        if guard:
            await self.ledger.add_event(conn, referral_id=case.referral_id, type_="escalation",
                                        at=now, area=case.area,
                                        data={"deadline": "routing", "reason": "ping_pong_guard"})
            out["escalation"] = {"area": case.area, "deadline": "routing", "reason": "ping_pong_guard"}
        return S.UNROUTABLE.value, out

    @staticmethod
    async def _previous(conn: AsyncConnection, referral_id: str, dedupe_key: str,
                        ) -> Mapping[str, Any] | None:
        row = (await conn.execute(sa.select(events.c.body_sha256, events.c.data).where(
            events.c.referral_id == referral_id, events.c.dedupe_key == dedupe_key))).mappings().first()
        return dict(row) if row else None

    @staticmethod
    def _replayed(previous: Mapping[str, Any], sha: str, key: str) -> ReplyResult:
        if previous["body_sha256"] != sha:
            raise Conflict(f"{key} was already used with a different body")
        return ReplyResult(created=False, body=json.loads(previous["data"])["result"])

    # --- Kela's answers to information requests --------------------------------------------------

    async def apply_answer(self, referral_id: str, answer: Answer, sha: str, *, actor: Actor | str,
                           sender: str | None = None, now: dt.datetime | None = None) -> ReplyResult:
        """Kela's answer to an information request. With `sender` (a Kela party that sees only its
        own cases), another sender's case is a 404, as for an id that does not exist."""
        now = now or utcnow()
        who = as_actor(actor, "kela")
        async with self._refusal_audited(who, "answer_applied", referral_id):
            try:
                result = await self._apply_answer_once(referral_id, answer, sha, who, sender, now)
            except IntegrityError:
                result = await self._apply_answer_once(referral_id, answer, sha, who, sender, now)
        if result.created:
            self._on_outbox()
        return result

    async def _apply_answer_once(self, referral_id: str, answer: Answer, sha: str, actor: Actor,
                                 sender: str | None, now: dt.datetime) -> ReplyResult:
        async with self.ledger.transaction() as conn:
            case = await self.ledger.case_by_id(conn, referral_id, for_update=self.ledger.is_postgres)
            if case is None or (sender is not None and case.sender != sender):
                raise NotFound("no such referral")
            dedupe_key = f"answer:{answer.answer_id}"
            previous = await self._previous(conn, referral_id, dedupe_key)
            if previous is not None:
                replayed = self._replayed(previous, sha, "answer_id")
                await audit.append(conn, actor, [AuditEntry("answer_applied", referral_id, "duplicate")],
                                   now)
                return replayed
            if case.state != S.INFO_REQUESTED:
                raise Conflict(f"an answer fits only a case in state info_requested, not {case.state}")
            result = {"referral_id": referral_id, "answer_id": answer.answer_id,
                      "state": S.IN_PROGRESS.value, "area": case.area}
            answer_data = answer.model_dump(mode="json")
            event_id = await self.ledger.add_event(
                conn, referral_id=referral_id, type_="answer", at=now, area=case.area,
                actor=actor.party_id, dedupe_key=dedupe_key, body_sha256=sha,
                data={"answer": answer_data, "result": result})
            if not await self.ledger.set_case(conn, case.pk, case.state, state=S.IN_PROGRESS.value,
                                              state_changed_at=now):
                raise IntegrityError("case changed concurrently", None, Exception())
            env = envelope(event_id=event_id, type_="answer", referral_id=referral_id, area=case.area,
                           occurred_at=now, data=answer_data)
            assert case.area is not None
            await self.ledger.add_outbox(conn, event_id=event_id, referral_id=referral_id,
                                         exchange=REFERRALS_EXCHANGE,
                                         routing_key=referral_routing_key(case.area, "answer"),
                                         envelope=env, at=now)
            await audit.append(conn, actor, [AuditEntry("answer_applied", referral_id)], now)
        return ReplyResult(created=True, body=result)

    # --- operators ------------------------------------------------------------------------------

    async def admin_route(self, referral_id: str, area: str, *, actor: Actor | str,
                          now: dt.datetime | None = None) -> dict[str, Any]:
        who = as_actor(actor, "admin")
        async with self._refusal_audited(who, "rerouted_by_operator", referral_id):
            result = await self._admin_route(referral_id, area, who, now or utcnow())
        self._on_outbox()
        return result

    async def _admin_route(self, referral_id: str, area: str, actor: Actor, now: dt.datetime,
                           ) -> dict[str, Any]:
        if area not in self.classification.areas:
            raise InvalidInput([{"loc": ["area"], "msg": "unknown area code", "type": "unknown_area"}])
        state, reason = self.route_decision(area)
        if reason is not None:
            raise InvalidInput([{"loc": ["area"], "msg": reason, "type": "no_route"}])
        async with self.ledger.transaction() as conn:
            case = await self.ledger.case_by_id(conn, referral_id, for_update=self.ledger.is_postgres)
            if case is None:
                raise NotFound("no such referral")
            if case.state not in (S.UNROUTABLE, S.RETURNED, S.FAILED):
                raise Conflict(f"only unroutable, returned or failed cases can be re-routed by hand, "
                               f"not {case.state}")
            tried = case.tried_areas
            # An operator's decision starts the ping-pong count afresh.
            await self.ledger.set_case(conn, case.pk, case.state, state=state, area=area,
                                       state_changed_at=now, delivered_at=None, unroutable_reason=None,
                                       return_count=0, reroute_count=case.reroute_count + 1,
                                       areas_tried=",".join([*tried, area] if area not in tried
                                                            else tried))
            event_id = await self.ledger.add_event(
                conn, referral_id=referral_id, type_="rerouted", at=now, area=area,
                actor=actor.party_id, data={"from_area": case.area, "to_area": area, "by": "operator"})
            await self._route_to(conn, referral_id, case.kind, area, now)
            await self.update_kela(conn, event_id=event_id, referral_id=referral_id,
                                   sender=case.sender, kela_reference=case.kela_reference,
                                   type_="rerouted", at=now,
                                   data={"area": area, "from_area": case.area, "to_area": area})
            await audit.append(conn, actor, [AuditEntry("rerouted_by_operator", referral_id)], now)
        return {"referral_id": referral_id, "state": state, "area": area}

    # --- delivery outcomes (called by the workers) ----------------------------------------------

    async def mark_delivered(self, *, consumer: str, event_id: str, referral_id: str, area: str,
                             via: str, event_type: str = "referral",
                             now: dt.datetime | None = None) -> bool:
        """Record a delivery and the consumer's progress in one commit; False for a repeat."""
        now = now or utcnow()
        obs = Observations(area=area)
        async with self.ledger.transaction() as conn:
            if not await self.ledger.mark_processed(conn, consumer, event_id, now):
                return False
            if self._track_done:
                await self.ledger.outbox_done(conn, event_id, now)
            case = await self.ledger.case_by_id(conn, referral_id, for_update=self.ledger.is_postgres)
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
                await self.ledger.set_case(conn, case.pk, case.state, state=S.DELIVERED.value,
                                           delivered_at=now, state_changed_at=now)
                obs.delivered_latency_s = (now - case.received_at).total_seconds()
            await self.ledger.add_event(conn, referral_id=referral_id,
                                        type_="delivered" if event_type == "referral"
                                        else f"{event_type}_delivered",
                                        at=now, area=area, data={"via": via, "message_id": event_id})
            # Last, always: the chain's head is the last lock a transaction takes, so the case-row
            # and feed locks taken before it cannot form a cycle with another transaction.
            await audit.append(conn, DELIVERY_ACTOR, [AuditEntry("delivered", referral_id)], now)
        self._observed("delivered", obs)
        return True

    async def mark_update_pushed(self, *, consumer: str, event_id: str,
                                 pushed_referral_id: str | None = None) -> bool:
        """Kela's copy of an update is settled; `pushed_referral_id` when it really left the service
        (a push to Kela's webhook), which is a disclosure of case data and so audited."""
        now = utcnow()
        async with self.ledger.transaction() as conn:
            if not await self.ledger.mark_processed(conn, consumer, event_id, now):
                return False
            if self._track_done:
                await self.ledger.outbox_done(conn, event_id, now)
            if pushed_referral_id is not None:
                await audit.append(conn, DELIVERY_ACTOR,
                                   [AuditEntry("update_pushed", pushed_referral_id)], now)
        return True

    async def record_fetch(self, referral_ids: list[str], *, area: str, actor: Actor | str) -> None:
        """The intake read these cases from its inbox: a `fetched` event each, and the audit record,
        committed before the page is returned."""
        if not referral_ids:
            return
        who = as_actor(actor, "intake")
        now = utcnow()
        async with self.ledger.transaction() as conn:
            for rid in referral_ids:
                await self.ledger.add_event(conn, referral_id=rid, type_="fetched", at=now, area=area,
                                            actor=who.party_id)
            await audit.append(conn, who, [AuditEntry("inbox_read", rid) for rid in referral_ids], now)

    async def record_reads(self, actor: Actor, action: str, referral_ids: Sequence[str | None],
                           ) -> None:
        """Audit a read that changes nothing else (a case page, Kela's feed, dead letters), committed
        before the data is returned: if the record cannot be written, the reader gets a 500, not
        the data."""
        if referral_ids:
            await audit.append_alone(self.ledger, actor,
                                     [AuditEntry(action, rid) for rid in referral_ids], utcnow())

    async def read_case(self, referral_id: str, actor: Actor, *, area: str | None,
                        sender: str | None = None) -> tuple[CaseRow, list[dict[str, Any]]] | None:
        """A case with its history for `actor`; None (and a `not_found` record) when it does not
        exist or, for an intake (`area` given), belongs to another area, or, for a Kela party that
        sees only its own cases (`sender` given), was sent by another party."""
        found = await self.ledger.read_case(referral_id)
        visible = (found is not None and (area is None or found[0].area == area)
                   and (sender is None or found[0].sender == sender))
        await audit.append_alone(self.ledger, actor, [
            AuditEntry("case_read", referral_id, "ok" if visible else "not_found")], utcnow())
        return found if visible else None

    async def delivery_failed(self, *, consumer: str, event_id: str, referral_id: str | None,
                              area: str | None, queue: str, exchange: str, routing_key: str,
                              body: str, reason: str, attempts: int,
                              now: dt.datetime | None = None) -> bool:
        """Give up on a delivery: the case fails, the message is kept as a dead letter, Kela hears."""
        now = now or utcnow()
        async with self.ledger.transaction() as conn:
            if not await self.ledger.mark_processed(conn, consumer, event_id, now):
                return False
            open_dl = (await conn.execute(sa.select(dead_letters.c.id).where(
                dead_letters.c.event_id == event_id, dead_letters.c.replayed_at.is_(None)))).first()
            if open_dl is None:
                await conn.execute(dead_letters.insert().values(
                    event_id=event_id, referral_id=referral_id, area=area, queue=queue,
                    exchange=exchange, routing_key=routing_key, reason=reason[:200],
                    attempts=attempts, body=body, created_at=now))
            if self._track_done:
                await self.ledger.outbox_done(conn, event_id, now)
            case = (await self.ledger.case_by_id(conn, referral_id, for_update=self.ledger.is_postgres)
                    if referral_id else None)
            referral_event = _envelope_type(body) == "referral"
            if case is not None and case.area == area and not (
                    referral_event and case.state != S.ROUTED):
                # (A referral whose case is past `routed` reached its intake by another channel:
                # the dead letter is kept for the operator, but the case did not fail.)
                if routing_key.startswith("referral.") and case.state == S.ROUTED:
                    await self.ledger.set_case(conn, case.pk, case.state, state=S.FAILED.value,
                                               state_changed_at=now)
                ev = await self.ledger.add_event(conn, referral_id=case.referral_id,
                                                 type_="delivery_failed", at=now, area=area,
                                                 data={"reason": reason[:200], "attempts": attempts})
                if not routing_key.startswith("update."):
                    await self.update_kela(conn, event_id=ev, referral_id=case.referral_id,
                                           sender=case.sender, kela_reference=case.kela_reference,
                                           type_="delivery_failed", at=now,
                                           data={"area": area, "reason": reason[:200]})
            await audit.append(conn, DELIVERY_ACTOR,
                               [AuditEntry("delivery_failed", referral_id, "failed")], now)
        return True

    async def replay_dead_letter(self, dead_letter_id: int, *, actor: Actor | str) -> dict[str, Any]:
        who = as_actor(actor, "admin")
        async with self._refusal_audited(who, "dead_letter_replayed", None):
            result = await self._replay_dead_letter(dead_letter_id, who, utcnow())
        self._on_outbox()
        return result

    async def _replay_dead_letter(self, dead_letter_id: int, actor: Actor, now: dt.datetime,
                                  ) -> dict[str, Any]:
        async with self.ledger.transaction() as conn:
            dl = (await conn.execute(sa.select(dead_letters).where(
                dead_letters.c.id == dead_letter_id))).mappings().first()
            if dl is None:
                raise NotFound("no such dead letter")
            if dl["replayed_at"] is not None:
                raise Conflict("this dead letter was already replayed")
            if dl["referral_id"] and (await conn.execute(sa.select(cases.c.purged_at).where(
                    cases.c.referral_id == dl["referral_id"]))).scalar() is not None:
                raise Conflict("the case's personal data was purged (retention): nothing to deliver")
            await conn.execute(sa.update(dead_letters).where(dead_letters.c.id == dead_letter_id)
                               .values(replayed_at=now))
            await conn.execute(sa.delete(processed).where(processed.c.event_id == dl["event_id"]))
            # Same event id on the replayed delivery: receivers that did get it drop the repeat.
            await conn.execute(sa.update(outbox).where(outbox.c.event_id == dl["event_id"]).values(
                status="pending", created_at=now, published_at=None, done_at=None))
            if (await conn.execute(sa.select(outbox.c.id).where(
                    outbox.c.event_id == dl["event_id"]))).first() is None:
                await conn.execute(outbox.insert().values(
                    event_id=dl["event_id"], referral_id=dl["referral_id"], exchange=dl["exchange"],
                    routing_key=dl["routing_key"], body=dl["body"], status="pending",
                    created_at=now, publish_attempts=0))
            state = None
            if dl["referral_id"]:
                case = await self.ledger.case_by_id(conn, dl["referral_id"],
                                                    for_update=self.ledger.is_postgres)
                if case is not None:
                    state = case.state
                    if case.state == S.FAILED and case.area == dl["area"]:
                        await self.ledger.set_case(conn, case.pk, case.state, state=S.ROUTED.value,
                                                   state_changed_at=now)
                        state = S.ROUTED.value
                    await self.ledger.add_event(conn, referral_id=case.referral_id, type_="replayed",
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


def dump_update(row: Mapping[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = json.loads(row["data"])
    item["cursor"] = str(row["seq"])
    item["event_id"] = row["event_id"]  # the same id a Kela webhook push carries
    return item

