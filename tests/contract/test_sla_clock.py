"""Escalations: written once per passed deadline, kept over restarts, delivered to Kela's feed."""

from __future__ import annotations

import datetime as dt
import random

import sqlalchemy as sa

from broker.devtools.demo_data import make_referral
from broker.jobs.sla_clock import SlaClock
from broker.store.tables import cases
from tests.helpers.app import ADMIN_TOKEN, KELA_TOKEN, auth, base_settings, intake_token, services_of
from tests.helpers.support import wait_state


async def _referral(client, ref: str, urgency: str = "normal") -> str:
    body = make_referral(random.Random(ref), kela_reference=ref, municipality_code="837", urgency=urgency)
    r = await client.post("/v1/referrals", json=body, headers=auth(KELA_TOKEN))
    assert r.status == 202
    return str((await r.json())["referral_id"])


async def test_deadlines_escalate_once_and_show_in_metrics(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    svc = services_of(client)
    rid = await _referral(client, "SLA-1", urgency="urgent")
    answered = await _referral(client, "SLA-2")
    await wait_state(client, rid, "delivered")
    await wait_state(client, answered, "delivered")
    reply = {"reply_id": "r1", "status": "received", "sent_at": "2026-01-05T10:00:00+02:00"}
    r = await client.post(f"/v1/referrals/{answered}/replies", json=reply, headers=auth(intake_token("08")))
    assert r.status == 202
    case = await (await client.get(f"/v1/referrals/{rid}", headers=auth(ADMIN_TOKEN))).json()
    due = {d["name"]: dt.datetime.fromisoformat(d["due_at"]) for d in case["deadlines"]}
    assert set(due) == {"acknowledge", "assessment"}
    clock = SlaClock(svc.ledger, svc.cases)
    assert await clock.tick(now=due["acknowledge"] - dt.timedelta(seconds=1)) == 0
    after_ack = due["acknowledge"] + dt.timedelta(minutes=1)
    # Only the unanswered case escalates: the other one met its acknowledge deadline.
    assert await clock.tick(now=after_ack + dt.timedelta(days=4)) == 1
    assert await clock.tick(now=after_ack + dt.timedelta(days=4)) == 0  # once, not on every tick
    # A fresh clock (a restart, or a second process) does not escalate it again.
    assert await SlaClock(svc.ledger, svc.cases).tick(now=after_ack + dt.timedelta(days=5)) == 0
    later = await SlaClock(svc.ledger, svc.cases).tick(now=due["assessment"] + dt.timedelta(days=30))
    assert later == 2  # the assessment deadline of both cases passed, each escalates once
    case = await (await client.get(f"/v1/referrals/{rid}", headers=auth(ADMIN_TOKEN))).json()
    escalations = [e for e in case["events"] if e["type"] == "escalation"]
    assert [e["deadline"] for e in escalations] == ["acknowledge", "assessment"]
    feed = await (await client.get("/v1/updates", headers=auth(KELA_TOKEN))).json()
    assert sorted((i["referral_id"] == rid, i["deadline"]) for i in feed["items"] if i["type"] == "escalation") == [
        (False, "assessment"), (True, "acknowledge"), (True, "assessment")]
    async with svc.ledger.engine.connect() as conn:
        escalated = (await conn.execute(sa.select(cases.c.escalated).where(cases.c.referral_id == rid))).scalar_one()
    assert escalated == "acknowledge,assessment"
    # In the metrics: the unanswered case is overdue on its acknowledge deadline, the answered one not.
    await svc.metrics.gauges.refresh(svc.ledger, now=after_ack + dt.timedelta(days=4))
    sample = svc.metrics.registry.get_sample_value
    assert sample("handoff_overdue_cases", {"area": "08", "deadline": "acknowledge"}) == 1


async def test_metrics_gauges_from_the_ledger(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    svc = services_of(client)
    rids = [await _referral(client, f"M-{i}", urgency="urgent" if i == 0 else "normal") for i in range(3)]
    for rid in rids:
        await wait_state(client, rid, "delivered")
    reply = {"reply_id": "r1", "status": "received", "sent_at": "2026-01-05T10:00:00+02:00"}
    await client.post(f"/v1/referrals/{rids[2]}/replies", json=reply, headers=auth(intake_token("08")))
    text = await (await client.get("/metrics")).text()  # a scrape refreshes the ledger gauges
    sample = svc.metrics.registry.get_sample_value
    assert sample("handoff_unanswered_cases", {"area": "08", "urgency": "urgent"}) == 1
    assert sample("handoff_unanswered_cases", {"area": "08", "urgency": "normal"}) == 1
    assert sample("handoff_referrals_received_total", {"channel": "api", "kind": "support_need"}) == 3
    assert sample("handoff_delivery_latency_seconds_count") == 3
    assert sample("handoff_first_reply_latency_seconds_count") == 1
    assert sample("handoff_outbox_pending") == 0
    oldest = sample("handoff_oldest_unanswered_age_seconds", {"area": "08"})
    assert oldest is not None and oldest >= 0
    # Overdue is computed against the stored deadlines: move time past them.
    await svc.metrics.gauges.refresh(svc.ledger, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=20))
    assert sample("handoff_overdue_cases", {"area": "08", "deadline": "acknowledge"}) == 2
    assert sample("handoff_overdue_cases", {"area": "08", "deadline": "assessment"}) == 3
    assert "personal_id" not in text and "kela_reference" not in text  # the exposition carries no PII
