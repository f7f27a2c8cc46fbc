"""Kela's update feed: an entry written in the case's transaction (and pushed when Kela has a
webhook route), and the entry as the feed shows it; and the intake feed of an area, the same way."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from adapters.municipal.envelope import envelope
from broker.cases.context import CaseContext
from broker.store.ledger import Connection
from broker.transport.protocol import REPLIES_EXCHANGE, update_routing_key

__all__ = ["INTAKE_FEED_TYPES", "dump_intake_update", "dump_update", "intake_reroute", "update_intake",
           "update_kela"]


async def update_kela(ctx: CaseContext, conn: Connection, *, event_id: str, referral_id: str,
                      sender: str, kela_reference: str, type_: str, at: dt.datetime,
                      data: Mapping[str, Any]) -> None:
    """An entry in Kela's pull feed (`sender`'s, the case's sender), and (when Kela has a webhook
    route) a push of the same."""
    item = {"referral_id": referral_id, "kela_reference": kela_reference, "type": type_,
            "at": at.isoformat(), **data}
    await ctx.ledger.add_update(conn, event_id=event_id, referral_id=referral_id,
                                sender=sender, kela_reference=kela_reference, type_=type_,
                                at=at, data=item)
    if ctx.kela_push:
        env = envelope(event_id=event_id, type_=type_, referral_id=referral_id,
                       area=data.get("area"), occurred_at=at, data=item)
        await ctx.ledger.add_outbox(conn, event_id=event_id, referral_id=referral_id,
                                    exchange=REPLIES_EXCHANGE,
                                    routing_key=update_routing_key(type_), envelope=env, at=at)


def dump_update(row: Mapping[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = json.loads(row["data"])
    item["cursor"] = str(row["seq"])
    item["event_id"] = row["event_id"]  # the same id a Kela webhook push carries
    return item


# What an area's intake feed carries (issue 17 § 4).
INTAKE_FEED_TYPES = ("answer", "escalation", "rerouted_in", "rerouted_out", "delivered")


async def update_intake(ctx: CaseContext, conn: Connection, *, area: str, referral_id: str,
                        type_: str, at: dt.datetime, data: Mapping[str, Any]) -> None:
    """An entry in `area`'s intake feed, in the caller's transaction. `data` holds ids, types, areas,
    times and deadline names only (no personal data, no free text: a purge has nothing to clear).
    Write it after any entry of Kela's feed in the same transaction (the order of the feed locks)."""
    assert type_ in INTAKE_FEED_TYPES, type_
    await ctx.ledger.add_intake_update(conn, area=area, referral_id=referral_id, type_=type_, at=at,
                                       data=data)


def dump_intake_update(row: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(row["data"])
    # The row's own fields are applied last, so stored data can never mask them.
    return {**data, "cursor": str(row["seq"]), "referral_id": row["referral_id"],
            "type": row["type"], "at": row["at"].isoformat(), "area": row["area"]}


async def intake_reroute(ctx: CaseContext, conn: Connection, referral_id: str,
                         from_area: str | None, to_area: str, now: dt.datetime) -> None:
    """A re-routed case in the intake feed: out of the old area, into the new one."""
    data = {"from_area": from_area, "to_area": to_area}
    # Both areas' feed locks first, in area order: two re-routes in opposite directions at once
    # must not take them crosswise.
    await ctx.ledger.lock_intake_feed(conn, *(a for a in (from_area, to_area) if a is not None))
    if from_area is not None and from_area != to_area:
        await update_intake(ctx, conn, area=from_area, referral_id=referral_id,
                            type_="rerouted_out", at=now, data=data)
    await update_intake(ctx, conn, area=to_area, referral_id=referral_id, type_="rerouted_in",
                        at=now, data=data)
