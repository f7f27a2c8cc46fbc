from __future__ import annotations

import random

from broker.devtools.demo_data import make_referral
from tests.helpers.app import KELA_TOKEN, auth, base_settings, intake_token
from tests.helpers.support import wait_state


async def test_referral_to_reply_roundtrip(make_client, store_url, transport_url) -> None:
    client = await make_client(base_settings(store_url, transport_url))
    rng = random.Random(1)
    body = make_referral(rng, kela_reference="K-1", municipality_code="837")  # Tampere -> 08
    r = await client.post("/v1/referrals", json=body, headers=auth(KELA_TOKEN))
    assert r.status == 202, await r.text()
    out = await r.json()
    assert out["state"] == "routed" and out["area"] == "08"
    rid = out["referral_id"]
    case = await wait_state(client, rid, "delivered")
    assert [e["type"] for e in case["events"]][:3] == ["received", "routed", "delivered"]
    r = await client.get("/v1/inbox", headers=auth(intake_token("08")))
    inbox = await r.json()
    assert [i["referral_id"] for i in inbox["items"]] == [rid]
    assert inbox["next"] is None
    reply = {"reply_id": "R-1", "status": "received", "sent_at": "2026-01-02T10:00:00+02:00"}
    r = await client.post(f"/v1/referrals/{rid}/replies", json=reply, headers=auth(intake_token("08")))
    assert r.status == 202, await r.text()
    assert (await r.json())["state"] == "acknowledged"
    r = await client.get("/v1/updates", headers=auth(KELA_TOKEN))
    feed = await r.json()
    assert [i["type"] for i in feed["items"]] == ["reply"]
    assert feed["items"][0]["reply"]["reply_id"] == "R-1"
    r = await client.get(f"/v1/updates?after={feed['next']}", headers=auth(KELA_TOKEN))
    assert (await r.json())["items"] == []
