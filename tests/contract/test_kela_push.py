"""Updates pushed to Kela's webhook (DESIGN § 2, § 7): `[[routes]] area = "kela"`, delivery webhook.

Every entry of Kela's pull feed (`/v1/updates`) is also pushed, signed, with the same content; a
failing endpoint is retried with the same event id until it answers 2xx. Both stores, both transports.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tests.helpers.app import ADMIN_TOKEN, KELA_TOKEN, auth, base_settings, services_of
from tests.helpers.receiver import SECRET, Receiver
from tests.helpers.support import (
    MUNICIPALITY_OF_AREA,
    new_case,
    post_referral,
    referral_body,
    reply,
    wait_for,
    wait_state,
)

AREAS = ["08", "90", "19", "03"]


def kela_routes(url: str) -> list[dict[str, Any]]:
    return [{"area": a, "delivery": "pull"} for a in AREAS] + [
        {"area": "kela", "delivery": "webhook", "url": url, "secret_env": "X", "secret": SECRET}]


async def feed_items(client: Any) -> list[dict[str, Any]]:
    r = await client.get("/v1/updates?limit=500", headers=auth(KELA_TOKEN))
    assert r.status == 200
    items: list[dict[str, Any]] = (await r.json())["items"]
    return items


async def wait_pushed(rec: Receiver, count: int, timeout: float = 20) -> None:
    async def enough() -> bool:
        return len(rec.envelopes) >= count
    await wait_for(enough, timeout, f"{count} updates pushed to Kela")


async def scenario(client: Any) -> dict[str, str]:
    """Replies, a re-route, the ping-pong guard, an unroutable case and an operator's re-route."""
    rid = await new_case(client, "PUSH-1", area="08")
    assert (await reply(client, rid, "received", area="08"))[0] == 202
    code, out = await reply(client, rid, "returned", area="08",
                            suggested_municipality_code=MUNICIPALITY_OF_AREA["90"])
    assert code == 202 and out["state"] == "routed" and out["area"] == "90", out
    await wait_state(client, rid, "delivered")
    code, out = await reply(client, rid, "returned", area="90",
                            suggested_municipality_code=MUNICIPALITY_OF_AREA["08"])
    assert code == 202 and out["state"] == "unroutable", out  # 08 already had it: the guard
    status, created = await post_referral(client, referral_body("PUSH-2", municipality_code="478"))
    assert status == 202 and created["state"] == "unroutable" and created["area"] == "91"
    r = await client.post(f"/v1/admin/referrals/{created['referral_id']}/route", json={"area": "03"},
                          headers=auth(ADMIN_TOKEN))
    assert r.status == 202, await r.text()
    return {"returned": rid, "aland": created["referral_id"]}


# reply, reply+rerouted, reply+unroutable+escalation, unroutable, rerouted
EXPECTED_TYPES = Counter({"reply": 3, "rerouted": 2, "unroutable": 2, "escalation": 1})


@pytest.fixture
async def receiver() -> Any:
    rec = await Receiver().start()
    yield rec
    await rec.stop()


async def test_every_feed_entry_is_pushed_signed_with_the_same_item(make_client, store_url, transport_url,
                                                                    receiver) -> None:
    client = await make_client(base_settings(store_url, transport_url, routes=kela_routes(receiver.url)))
    ids = await scenario(client)
    total = sum(EXPECTED_TYPES.values())
    await wait_pushed(receiver, total)
    feed = await feed_items(client)
    assert Counter(i["type"] for i in feed) == EXPECTED_TYPES
    assert receiver.bad_signatures == 0
    envs = list(receiver.envelopes.values())
    assert len(envs) == total and all(n == 1 for n in receiver.by_event.values())
    assert Counter(e["type"] for e in envs) == EXPECTED_TYPES
    for env in envs:
        assert set(env) >= {"event_id", "type", "referral_id", "area", "occurred_at", "data"}
        assert env["type"] == env["data"]["type"]
        assert env["referral_id"] == env["data"]["referral_id"]
        assert env["referral_id"] in ids.values()
    # The pushed items are the feed's items (the feed adds its cursor).
    pushed = sorted(_canon(e["data"]) for e in envs)
    pulled = sorted(_canon({k: v for k, v in i.items() if k not in ("cursor", "event_id")}) for i in feed)
    assert pushed == pulled
    replies = [e["data"]["reply"] for e in envs if e["type"] == "reply"]
    assert sorted(r["status"] for r in replies) == ["received", "returned", "returned"]


async def test_feed_items_carry_the_event_id_of_the_push(make_client, store_url, transport_url,
                                                         receiver) -> None:
    """A Kela system that both receives pushes and pulls the feed (to catch up after an outage)
    must be able to tell that a feed entry is one it already got: the same event id."""
    client = await make_client(base_settings(store_url, transport_url, routes=kela_routes(receiver.url)))
    await scenario(client)
    await wait_pushed(receiver, sum(EXPECTED_TYPES.values()))
    feed = await feed_items(client)
    assert all("event_id" in item for item in feed), sorted(feed[0])
    assert {i["event_id"] for i in feed} == set(receiver.envelopes)
    for item in feed:
        env = receiver.envelopes[item["event_id"]]
        assert env["type"] == item["type"]
        assert _canon(env["data"]) == _canon({k: v for k, v in item.items()
                                              if k not in ("cursor", "event_id")})


async def test_a_failing_kela_endpoint_is_retried_then_delivered(make_client, store_url, transport_url
                                                                 ) -> None:
    rec = Receiver(behaviour=lambda n: 503 if n <= 4 else 204)
    seen = rec.attempts  # every request's event id, retries included
    await rec.start()
    try:
        client = await make_client(base_settings(store_url, transport_url, routes=kela_routes(rec.url)))
        rid = await new_case(client, "PUSH-503", area="08")
        code, _out = await reply(client, rid, "received", area="08", reply_id="R-503")
        assert code == 202
        await wait_pushed(rec, 1)
        assert len(seen) == 5 and len(set(seen)) == 1  # four 503s, then the 2xx, one event id
        (env,) = rec.envelopes.values()
        assert env["type"] == "reply" and env["data"]["reply"]["reply_id"] == "R-503"
        assert rec.bad_signatures == 0
        delivered = 'handoff_deliveries_total{area="kela",outcome="delivered"} 1.0'

        async def counted() -> str | None:
            text = await (await client.get("/metrics")).text()
            return text if delivered in text else None
        metrics = await wait_for(counted, 10, "the delivery counted")  # counted after the 2xx
        assert 'handoff_deliveries_total{area="kela",outcome="retried"} 4.0' in metrics
        # Nothing more is pushed later: the update is done.
        await _outbox_drained(client)
        assert rec.by_event[env["event_id"]] == 1
    finally:
        await rec.stop()


async def test_intake_delivery_failure_is_pushed_to_kela(make_client, store_url, receiver) -> None:
    """A referral whose intake webhook never answers fails; Kela hears `delivery_failed` by push."""
    dead = Receiver(behaviour=lambda _n: 503)
    await dead.start()
    try:
        routes = [{"area": "08", "delivery": "webhook", "url": dead.url, "secret_env": "Y",
                   "secret": SECRET},
                  {"area": "kela", "delivery": "webhook", "url": receiver.url, "secret_env": "X",
                   "secret": SECRET}]
        client = await make_client(base_settings(store_url, routes=routes,
                                                 delivery={"give_up_after_s": 0.5}))
        status, created = await post_referral(client, referral_body("PUSH-FAIL", municipality_code="837"))
        assert status == 202
        await wait_state(client, created["referral_id"], "failed")
        await wait_pushed(receiver, 1)
        (env,) = receiver.envelopes.values()
        assert (env["type"], env["referral_id"]) == ("delivery_failed", created["referral_id"])
        assert [i["type"] for i in await feed_items(client)] == ["delivery_failed"]
    finally:
        await dead.stop()


async def test_without_a_kela_route_nothing_is_pushed_and_the_feed_still_fills(make_client, store_url,
                                                                                receiver) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "PUSH-NONE", area="08")
    assert (await reply(client, rid, "received", area="08"))[0] == 202
    assert [i["type"] for i in await feed_items(client)] == ["reply"]
    await _outbox_drained(client)
    assert receiver.requests == 0


async def _outbox_drained(client: Any) -> None:
    ledger = services_of(client).ledger

    async def drained() -> bool:
        return await ledger.outbox_pending() == 0
    await wait_for(drained, 10, "the outbox drained")


def _canon(item: dict[str, Any]) -> str:
    return json.dumps(item, sort_keys=True)

