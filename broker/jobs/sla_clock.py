"""The SLA clock: when a deadline passes without the reply that meets it, escalate once.

Deadlines are stored on the case at intake (Finnish working days, `broker.domain.deadlines`), so finding the
overdue ones is an indexed range query. "Once per deadline" is held by the ledger, not by memory: the
escalation event has a unique dedupe key per case and deadline, and the case records which deadlines
it escalated, so neither a restart nor a second process escalates twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import structlog

from adapters.municipal.envelope import envelope
from broker.cases.service import CaseService
from broker.jobs.periodic import run_periodically
from broker.security import audit
from broker.security.audit import AuditEntry, system_actor
from broker.store import sla
from broker.store.ledger import Ledger, utcnow
from broker.transport.protocol import REFERRALS_EXCHANGE, referral_routing_key

__all__ = ["SlaClock"]

log = structlog.get_logger(__name__)

_OPEN = sla.OPEN_STATES
_CLOCK = system_actor("sla_clock")


class SlaClock:
    def __init__(self, ledger: Ledger, case_service: CaseService, *, interval_s: float = 30.0,
                 batch: int = 500) -> None:
        self._ledger = ledger
        self._cases = case_service
        self._interval_s = interval_s
        self._batch = batch

    async def run(self) -> None:
        await run_periodically(self.tick, self._interval_s, failure_event="sla_tick_failed")

    async def tick(self, now: dt.datetime | None = None) -> int:
        """Escalate every deadline that passed unmet; returns how many escalations were written."""
        now = now or utcnow()
        written = 0
        for name in sla.DEADLINES:
            async with self._ledger.engine.connect() as conn:
                rows = await sla.overdue(conn, name, now, self._batch)
            for referral_id in rows:
                with contextlib.suppress(sla.IntegrityError):  # another process was first: fine
                    written += await self._escalate(referral_id, name, now)
        if written:
            log.info("escalations_written", count=written)
        return written

    async def _escalate(self, referral_id: str, name: str, now: dt.datetime) -> int:
        async with self._ledger.transaction() as conn:
            case = await self._ledger.case_by_id(conn, referral_id, for_update=self._ledger.is_postgres)
            if case is None or sla.is_escalated(case, name) or case.state not in _OPEN:
                return 0
            due, met = sla.deadline_of(case, name)
            if due is None or due >= now or met is not None:
                return 0
            data = {"deadline": name, "due_at": due.isoformat(), "state": case.state}
            event_id = await self._ledger.add_event(
                conn, referral_id=referral_id, type_="escalation", at=now, area=case.area,
                dedupe_key=f"escalation:{name}", data=data)
            await sla.mark_escalated(conn, case, name)
            await self._cases.update_kela(conn, event_id=event_id, referral_id=referral_id,
                                          sender=case.sender,
                                          kela_reference=case.kela_reference, type_="escalation",
                                          at=now, data={"area": case.area, **data})
            if case.area is not None:
                await self._cases.update_intake(conn, area=case.area, referral_id=referral_id,
                                                type_="escalation", at=now,
                                                data={"event_id": event_id, **data})
            if case.area is not None and self._cases.settings.route_for(case.area) is not None:
                # The intake hears of it too, as an event with its own id (the feed entry has one).
                intake_event = await self._ledger.add_event(
                    conn, referral_id=referral_id, type_="escalation_sent", at=now, area=case.area,
                    data={"deadline": name})
                env = envelope(event_id=intake_event, type_="escalation", referral_id=referral_id,
                               area=case.area, occurred_at=now, data=data)
                await self._ledger.add_outbox(conn, event_id=intake_event, referral_id=referral_id,
                                              exchange=REFERRALS_EXCHANGE,
                                              routing_key=referral_routing_key(case.area, "escalation"),
                                              envelope=env, at=now)
            await audit.append(conn, _CLOCK, [AuditEntry("escalated", referral_id)], now)
        log.info("deadline_escalated", referral_id=referral_id, area=case.area, deadline=name)
        return 1
