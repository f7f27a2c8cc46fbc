"""Cases written straight through the case service, at chosen times (statistics, dashboard charts)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from broker.devtools.demo_data import make_referral
from schemas.rules import parse_referral
from tests.helpers.app import services_of

__all__ = ["seed"]


async def seed(client: Any, n: int, *, month_day: dt.datetime, municipality: str = "837",
               prefix: str = "S", close: bool = False, kind: str = "support_need") -> list[str]:
    """n cases received at `month_day`; optionally answered in 10 h and closed with facts."""
    svc = services_of(client)
    ids = []
    for i in range(n):
        body = make_referral(random.Random(f"{prefix}{i}"), kela_reference=f"{prefix}-{i}",
                             municipality_code=municipality, kind=kind, sent_at=month_day)
        body["needs"] = ["housing", "debt"]
        referral = parse_referral(body)
        res = await svc.cases.accept_referral("kela-1", referral, f"{prefix}{i}", now=month_day)
        ids.append(res.referral_id)
        if close:
            area = res.area
            at = month_day + dt.timedelta(hours=10 + i)
            for step in ({"status": "received", "referral_quality": "sufficient"},
                         {"status": "closed", "outcome": "services_arranged",
                          "findings": ["housing_shortage"], "client_feedback": {"rating": 4}}):
                reply = {"reply_id": f"{step['status']}-{i}", "sent_at": at.isoformat(), **step}
                await svc.cases.apply_reply(res.referral_id, reply, actor="t", area=area, now=at)
    return ids
