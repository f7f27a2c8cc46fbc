"""Kela's update feed: an entry written in the case's transaction (and pushed when Kela has a
webhook route), and the entry as the feed shows it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from adapters.municipal.envelope import envelope
from broker.cases.context import CaseContext
from broker.store.ledger import Connection
from broker.transport.protocol import REPLIES_EXCHANGE, update_routing_key

__all__ = ["dump_update", "update_kela"]


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
