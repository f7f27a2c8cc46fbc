"""Reads that leave a trace: an intake's inbox page (a `fetched` event each), a case page, and other
reads audited before their data is returned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from broker.cases.context import CaseContext
from broker.security import audit
from broker.security.audit import Actor, AuditEntry, as_actor
from broker.store.ledger import CaseRow, utcnow

__all__ = ["Reads"]


class Reads:
    def __init__(self, ctx: CaseContext) -> None:
        self._ctx = ctx

    async def record_fetch(self, referral_ids: list[str], *, area: str, actor: Actor | str) -> None:
        """The intake read these cases from its inbox: a `fetched` event each, and the audit record,
        committed before the page is returned."""
        if not referral_ids:
            return
        ledger = self._ctx.ledger
        who = as_actor(actor, "intake")
        now = utcnow()
        async with ledger.transaction() as conn:
            for rid in referral_ids:
                await ledger.add_event(conn, referral_id=rid, type_="fetched", at=now, area=area,
                                       actor=who.party_id)
            await audit.append(conn, who, [AuditEntry("inbox_read", rid) for rid in referral_ids], now)

    async def record_reads(self, actor: Actor, action: str, referral_ids: Sequence[str | None],
                           ) -> None:
        """Audit a read that changes nothing else (a case page, Kela's feed, dead letters), committed
        before the data is returned: if the record cannot be written, the reader gets a 500, not
        the data."""
        if referral_ids:
            await audit.append_alone(self._ctx.ledger, actor,
                                     [AuditEntry(action, rid) for rid in referral_ids], utcnow())

    async def read_case(self, referral_id: str, actor: Actor, *, area: str | None,
                        sender: str | None = None) -> tuple[CaseRow, list[dict[str, Any]]] | None:
        """A case with its history for `actor`; None (and a `not_found` record) when it does not
        exist or, for an intake (`area` given), belongs to another area, or, for a Kela party that
        sees only its own cases (`sender` given), was sent by another party."""
        found = await self._ctx.ledger.read_case(referral_id)
        visible = (found is not None and (area is None or found[0].area == area)
                   and (sender is None or found[0].sender == sender))
        await audit.append_alone(self._ctx.ledger, actor, [
            AuditEntry("case_read", referral_id, "ok" if visible else "not_found")], utcnow())
        return found if visible else None
