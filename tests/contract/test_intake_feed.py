"""The intake feed `GET /v1/intake/updates` (issue 17 § 4, DESIGN § 12), on both stores: Kela's
answers, escalations, re-routings out of and into an area, deliveries; the cursor rules of
`/v1/updates` (an empty page means caught up; paging while writers commit neither skips nor repeats);
another area sees none of it. And inbox items with their deadlines and latest event."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from typing import Any

import sqlalchemy as sa

from broker.jobs.sla_clock import SlaClock
from broker.store.tables import audit, intake_updates
from tests.helpers.app import ADMIN_TOKEN, KELA_TOKEN, auth, base_settings, intake_token, services_of
from tests.helpers.support import (
    SENT_AT,
    drive_to,
    error_locs,
    get_case,
    new_case,
    post_referral,
    referral_body,
    reply,
    wait_state,
)

URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


async def _page(client: Any, area: str, after: str | None = None, limit: int = 500,
                ) -> dict[str, Any]:
    params = {"limit": str(limit), **({"after": after} if after is not None else {})}
    r = await client.get("/v1/intake/updates", params=params, headers=auth(intake_token(area)))
    assert r.status == 200, await r.text()
    page: dict[str, Any] = await r.json()
    assert isinstance(page["next"], str) and URL_SAFE.match(page["next"]), page["next"]
    assert len(page["items"]) <= limit
    for item in page["items"]:
        assert {"cursor", "referral_id", "type", "at", "area"} <= set(item), item
        assert item["area"] == area and URL_SAFE.match(item["cursor"])
    return page


async def _types(client: Any, area: str, rid: str) -> list[str]:
    return [i["type"] for i in (await _page(client, area))["items"] if i["referral_id"] == rid]


def _answer(answer_id: str) -> dict[str, Any]:
    return {"answer_id": answer_id, "message": "Vuokrasopimus on voimassa (keksitty).",
            "sent_at": SENT_AT}


async def test_answer_delivery_and_escalation_appear_once(make_client, store_url, transport_url,
                                                          ) -> None:
    client = await make_client(base_settings(store_url, transport_url))
    assert (await _page(client, "08"))["items"] == []  # a fresh feed is caught up at once
    rid = await new_case(client, "IF-1")
    assert await _types(client, "08", rid) == ["delivered"]
    await drive_to(client, rid, "info_requested")
    r = await client.post(f"/v1/referrals/{rid}/answers", json=_answer("A-1"),
                          headers=auth(KELA_TOKEN))
    assert r.status == 202, await r.text()
    r = await client.post(f"/v1/referrals/{rid}/answers", json=_answer("A-1"),
                          headers=auth(KELA_TOKEN))
    assert r.status == 200  # a repeat changes nothing, and adds nothing to the feed
    items = (await _page(client, "08"))["items"]
    answers = [i for i in items if i["type"] == "answer"]
    assert len(answers) == 1 and answers[0]["answer_id"] == "A-1", items
    assert answers[0]["state"] == "in_progress"
    assert "message" not in answers[0]  # no free text in the feed

    # An escalation of the SLA clock (a case that nobody acknowledged).
    late = await new_case(client, "IF-2")
    case = await get_case(client, late)
    due = {d["name"]: dt.datetime.fromisoformat(d["due_at"]) for d in case["deadlines"]}
    clock = SlaClock(services_of(client).ledger, services_of(client).cases)
    assert await clock.tick(now=due["acknowledge"] + dt.timedelta(minutes=1)) == 1
    escalations = [i for i in (await _page(client, "08"))["items"] if i["type"] == "escalation"]
    assert [(e["referral_id"], e["deadline"]) for e in escalations] == [(late, "acknowledge")]
    assert await _types(client, "90", late) == []


async def test_reroutes_appear_for_both_areas(make_client, store_url, transport_url) -> None:
    client = await make_client(base_settings(store_url, transport_url))
    rid = await new_case(client, "IF-R")
    code, out = await reply(client, rid, "returned", suggested_municipality_code="091")
    assert code == 202 and out["area"] == "90", out
    await wait_state(client, rid, "delivered")
    assert await _types(client, "08", rid) == ["delivered", "rerouted_out"]
    assert await _types(client, "90", rid) == ["rerouted_in", "delivered"]
    out_item = next(i for i in (await _page(client, "08"))["items"] if i["type"] == "rerouted_out")
    assert (out_item["from_area"], out_item["to_area"]) == ("08", "90")
    # 90 returns it towards 08, which had it: parked as unroutable; an operator routes it to 19.
    code, out = await reply(client, rid, "returned", area="90", suggested_municipality_code="837")
    assert code == 202 and out["state"] == "unroutable", out
    r = await client.post(f"/v1/admin/referrals/{rid}/route", json={"area": "19"},
                          headers=auth(ADMIN_TOKEN))
    assert r.status == 202, await r.text()
    await wait_state(client, rid, "delivered")
    assert await _types(client, "90", rid) == ["rerouted_in", "delivered", "rerouted_out"]
    assert await _types(client, "19", rid) == ["rerouted_in", "delivered"]
    assert await _types(client, "03", rid) == []


async def test_cursors_rules_and_access(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rids = [await new_case(client, f"IF-C{i}") for i in range(5)]
    full = (await _page(client, "08"))["items"]
    assert [i["referral_id"] for i in full] == rids
    seen, after = [], None
    while True:
        page = await _page(client, "08", after, 2)
        if not page["items"]:
            assert page["next"] == after  # caught up: the same cursor comes back
            break
        seen.extend(page["items"])
        after = page["next"]
    assert seen == full
    # Another area sees nothing; Kela and admin tokens are refused; a foreign cursor is a 422.
    assert (await _page(client, "90"))["items"] == []
    for token in (KELA_TOKEN, ADMIN_TOKEN):
        r = await client.get("/v1/intake/updates", headers=auth(token))
        assert r.status == 403, await r.text()
    r = await client.get("/v1/updates", headers=auth(KELA_TOKEN))
    kela_cursor = (await r.json())["next"]
    for cursor in ("garbage!", kela_cursor):
        r = await client.get("/v1/intake/updates", params={"after": cursor},
                             headers=auth(intake_token("08")))
        assert r.status == 422 and ["query", "after"] in error_locs(await r.json())
    # The read is audited like Kela's feed: one `intake_feed_read` per case read.
    async with services_of(client).ledger.engine.connect() as conn:
        rows = (await conn.execute(sa.select(audit.c.party_id, audit.c.referral_id)
                                   .where(audit.c.action == "intake_feed_read"))).all()
    assert {r.referral_id for r in rows} == set(rids)
    assert {r.party_id for r in rows} == {"intake-08"}
    # By design the feed holds no personal data (ids, types, areas, times, deadline names only),
    # so the retention purge has nothing to rewrite there: no identity code or name in any row.
    async with services_of(client).ledger.engine.connect() as conn:
        data = (await conn.execute(sa.select(intake_updates.c.data))).scalars().all()
    body = referral_body("IF-C0")
    for text in data:
        for key in json.loads(text):
            assert key in {"via", "message_id", "answer_id", "event_id", "state", "deadline",
                           "due_at", "from_area", "to_area"}, key
        assert body["client"]["personal_id"] not in text


async def test_paging_while_writers_answer_and_refer(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rids = [await new_case(client, f"IF-W{i}") for i in range(3)]
    writers_done = asyncio.Event()

    async def answers(w: int, rid: str) -> None:
        for k in range(4):
            code, out = await reply(client, rid, "info_requested", reply_id=f"Q-{w}-{k}")
            assert code == 202, out
            r = await client.post(f"/v1/referrals/{rid}/answers", json=_answer(f"A-{w}-{k}"),
                                  headers=auth(KELA_TOKEN))
            assert r.status == 202, await r.text()

    async def referrals() -> None:
        for k in range(4):
            status, out = await post_referral(client, referral_body(f"IF-N{k}"))
            assert status == 202, out

    async def writers() -> None:
        try:
            await asyncio.gather(*(answers(w, rid) for w, rid in enumerate(rids)), referrals())
        finally:
            writers_done.set()

    reads_during_writes = 0

    async def reader() -> list[dict[str, Any]]:
        nonlocal reads_during_writes
        seen: list[dict[str, Any]] = []
        after = None
        while True:
            done_before_read = writers_done.is_set()
            reads_during_writes += not done_before_read
            page = await _page(client, "08", after, 3)
            seen.extend(page["items"])
            after = page["next"]
            if not page["items"]:
                if done_before_read and await _all_delivered(client):
                    return seen
                await asyncio.sleep(0.002)  # a polling reader's pause, not a wait for the writers

    _, seen = await asyncio.wait_for(asyncio.gather(writers(), reader()), timeout=60)
    assert reads_during_writes >= 1
    answer_ids = [i["answer_id"] for i in seen if i["type"] == "answer"]
    assert sorted(answer_ids) == sorted(f"A-{w}-{k}" for w in range(3) for k in range(4))
    delivered = [i["referral_id"] for i in seen if i["type"] == "delivered"]
    assert len(delivered) == len(set(delivered)) == 3 + 4
    assert len({i["cursor"] for i in seen}) == len(seen)
    assert seen == (await _page(client, "08"))["items"]  # same items, same order, same cursors


async def _all_delivered(client: Any) -> bool:
    r = await client.get("/v1/inbox?state=routed", headers=auth(intake_token("08")))
    return bool((await r.json())["items"] == [])


async def test_inbox_items_carry_deadlines_and_latest_event(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "IF-I")
    r = await client.get("/v1/inbox", headers=auth(intake_token("08")))
    [item] = (await r.json())["items"]
    case = await get_case(client, rid)
    assert item["deadlines"] == case["deadlines"] and item["deadlines"]
    assert item["latest_event"]["type"] == "delivered"
    dt.datetime.fromisoformat(item["latest_event"]["at"])
    code, _ = await reply(client, rid, "received")
    assert code == 202
    r = await client.get("/v1/inbox?state=acknowledged", headers=auth(intake_token("08")))
    [item] = (await r.json())["items"]
    assert item["latest_event"]["type"] == "reply"
