"""Kela's updates feed and the intake inbox as paged lists (DESIGN § 7, § 10), on both stores.

`/v1/updates`: `next` is never null; an empty page means caught up, and paging while writers add
replies must neither skip nor repeat an item. `/v1/inbox`: `next` is null on the last page.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from tests.helpers.app import (
    ADMIN_TOKEN,
    KELA2_TOKEN,
    KELA_CENTRAL_TOKEN,
    KELA_TOKEN,
    auth,
    base_settings,
    intake_token,
)
from tests.helpers.support import (
    error_locs,
    new_case,
    post_referral,
    referral_body,
    reply,
    wait_for,
    wait_state,
)

URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


async def _page(client: Any, after: str | None, limit: int, token: str = KELA_TOKEN,
                ) -> dict[str, Any]:
    params = {"limit": str(limit)}
    if after is not None:
        params["after"] = after
    r = await client.get("/v1/updates", params=params, headers=auth(token))
    assert r.status == 200, await r.text()
    page: dict[str, Any] = await r.json()
    assert isinstance(page["next"], str) and URL_SAFE.match(page["next"]), page["next"]
    assert len(page["items"]) <= limit
    return page


async def _replies_round_robin(client: Any, n_cases: int, statuses: list[str]) -> list[str]:
    """Post `statuses` to each of `n_cases` delivered cases, one case after the other per round."""
    rids = [await new_case(client, f"FEED-{i}") for i in range(n_cases)]
    posted = []
    for j, status in enumerate(statuses):
        for i, rid in enumerate(rids):
            reply_id = f"F-{i}-{j}"
            code, out = await reply(client, rid, status, reply_id=reply_id)
            assert code == 202, out
            posted.append(reply_id)
    return posted


async def test_updates_pages_without_gaps_or_repeats(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    empty = await _page(client, None, 7)
    assert empty["items"] == []  # a fresh feed is caught up at once, with a cursor to resume from
    statuses = ["received", "assigned", "client_contacted", "assessment_started", "closed"]
    posted = await _replies_round_robin(client, 6, statuses)
    assert len(posted) == 30

    full = (await _page(client, None, 500))["items"]
    assert [i["reply"]["reply_id"] for i in full] == posted
    for item in full:
        assert {"cursor", "referral_id", "kela_reference", "type", "reply"} <= set(item), item
        assert item["type"] == "reply"
        assert isinstance(item["cursor"], str) and URL_SAFE.match(item["cursor"])
        assert item["kela_reference"].startswith("FEED-")
        assert {"reply_id", "status"} <= set(item["reply"])
    assert [i["reply"]["status"] for i in full[:6]] == ["received"] * 6
    assert len({i["cursor"] for i in full}) == 30

    pages: list[list[dict[str, Any]]] = []
    after = None
    while True:
        page = await _page(client, after, 7)
        if not page["items"]:
            assert page["next"] == after  # caught up: the same cursor comes back
            break
        pages.append(page["items"])
        after = page["next"]
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
    assert [i for p in pages for i in p] == full
    again = await _page(client, after, 7)
    assert again == {"items": [], "next": after}
    # Resuming from the middle gives exactly the rest.
    middle = await _page(client, None, 10)
    rest = await _page(client, middle["next"], 500)
    assert middle["items"] + rest["items"] == full


async def test_updates_rejects_bad_cursor_and_limit(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    for i in range(2):
        await new_case(client, f"FEED-BAD-{i}")
    r = await client.get("/v1/inbox?limit=1", headers=auth(intake_token("08")))
    inbox_next = (await r.json())["next"]  # a real cursor, but of another list
    assert inbox_next
    # "dTpmb28" and "aTox" are base64 of "u:foo" and "i:1": shaped like cursors, still not ours.
    for cursor in ["garbage!", "not-a-cursor", "dTpmb28", "aTox", inbox_next]:
        r = await client.get("/v1/updates", params={"after": cursor}, headers=auth(KELA_TOKEN))
        assert r.status == 422, (cursor, await r.text())
        assert ["query", "after"] in error_locs(await r.json())
    for limit in ("0", "501", "-1", "abc", "7.5", ""):
        r = await client.get("/v1/updates", params={"limit": limit}, headers=auth(KELA_TOKEN))
        assert r.status == 422, (limit, await r.text())
        assert ["query", "limit"] in error_locs(await r.json())
    for limit in ("1", "500"):
        r = await client.get("/v1/updates", params={"limit": limit}, headers=auth(KELA_TOKEN))
        assert r.status == 200, limit


async def test_paging_while_writers_add_replies(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rids = [await new_case(client, f"FEED-W{i}") for i in range(4)]
    accepted: list[str] = []
    writers_done = asyncio.Event()

    async def writer(w: int, rid: str) -> None:
        for k in range(10):
            status = "assigned" if k % 2 == 0 else "client_contacted"  # both repeat in_progress
            code, out = await reply(client, rid, status, reply_id=f"W-{w}-{k}")
            assert code == 202, out
            accepted.append(f"W-{w}-{k}")

    async def writers() -> None:
        try:
            await asyncio.gather(*(writer(w, rid) for w, rid in enumerate(rids)))
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
            page = await _page(client, after, 3)
            seen.extend(page["items"])
            after = page["next"]
            if not page["items"]:
                if done_before_read:
                    return seen
                await asyncio.sleep(0.002)  # a polling reader's pause, not a wait for the writers

    _, seen = await asyncio.wait_for(asyncio.gather(writers(), reader()), timeout=30)
    assert reads_during_writes >= 1
    reply_ids = [i["reply"]["reply_id"] for i in seen]
    assert len(reply_ids) == len(set(reply_ids)), "an update was delivered twice"
    assert set(reply_ids) == set(accepted), set(accepted) ^ set(reply_ids)
    full = (await _page(client, None, 500))["items"]
    assert seen == full  # same items, same order, same cursors


# --- the intake inbox ---------------------------------------------------------------------------------


async def test_inbox_pages_until_next_is_null(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rids = [await new_case(client, f"INBOX-{i}") for i in range(5)]
    headers = auth(intake_token("08"))
    seen: list[str] = []
    pages = []
    after = None
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        r = await client.get("/v1/inbox", params=params, headers=headers)
        assert r.status == 200, await r.text()
        page = await r.json()
        pages.append(len(page["items"]))
        for item in page["items"]:
            assert item["state"] == "delivered" and item["area"] == "08"
            assert item["referral"]["kela_reference"] == item["kela_reference"]
            seen.append(item["referral_id"])
        after = page["next"]
        if after is None:
            break
        assert URL_SAFE.match(after)
        assert len(pages) < 10, "inbox paging does not end"
    assert pages == [2, 2, 1]
    assert seen == rids  # every case exactly once, oldest first

    # The state filter: one case acknowledged leaves the default (delivered) inbox.
    code, _ = await reply(client, rids[0], "received")
    assert code == 202
    r = await client.get("/v1/inbox", headers=headers)
    assert [i["referral_id"] for i in (await r.json())["items"]] == rids[1:]
    r = await client.get("/v1/inbox?state=acknowledged", headers=headers)
    assert [i["referral_id"] for i in (await r.json())["items"]] == rids[:1]
    r = await client.get("/v1/inbox?state=delivered,acknowledged&limit=500", headers=headers)
    assert [i["referral_id"] for i in (await r.json())["items"]] == rids
    # An exact last page (4 items, limit 2) also ends with next = null.
    r = await client.get("/v1/inbox?limit=2", headers=headers)
    page = await r.json()
    r = await client.get("/v1/inbox", params={"limit": "2", "after": page["next"]},
                         headers=headers)
    assert (await r.json())["next"] is None
    # Bad parameters.
    feed_cursor = (await _page(client, None, 1))["next"]
    for params, loc in (({"state": "sleeping"}, ["query", "state"]),
                        ({"after": "garbage!"}, ["query", "after"]),
                        ({"after": feed_cursor}, ["query", "after"]),
                        ({"limit": "0"}, ["query", "limit"])):
        r = await client.get("/v1/inbox", params=params, headers=headers)
        assert r.status == 422, (params, await r.text())
        assert loc in error_locs(await r.json())


async def test_fetching_the_inbox_is_recorded(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "INBOX-FETCH")
    r = await client.get("/v1/inbox", headers=auth(intake_token("08")))
    assert [i["referral_id"] for i in (await r.json())["items"]] == [rid]

    async def fetched() -> bool:
        r = await client.get(f"/v1/referrals/{rid}", headers=auth(ADMIN_TOKEN))
        return any(e["type"] == "fetched" for e in (await r.json())["events"])
    await wait_for(fetched, what="a fetched event")


async def test_dead_letters_list_is_a_paged_list(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    r = await client.get("/v1/admin/dead-letters?limit=5", headers=auth(ADMIN_TOKEN))
    assert r.status == 200
    assert await r.json() == {"items": [], "next": None}
    r = await client.get("/v1/admin/dead-letters?after=garbage!", headers=auth(ADMIN_TOKEN))
    assert r.status == 422


async def test_a_kela_partys_feed_pages_through_its_own_cases_only(make_client, store_url) -> None:
    """Issue 15: entries of two senders interleave in the ledger; each sender pages through its own
    (cursors as for the whole feed), and Kela's central reader through all of them."""
    client = await make_client(base_settings(store_url))
    rids: dict[str, list[str]] = {KELA_TOKEN: [], KELA2_TOKEN: []}
    for i in range(3):
        for token in rids:
            status, out = await post_referral(client, referral_body(f"FEED-S-{i}"), token)
            assert status == 202, out
            rids[token].append(out["referral_id"])
    for i in range(3):
        for token in rids:
            await wait_state(client, rids[token][i], "delivered")
            code, _ = await reply(client, rids[token][i], "received", reply_id=f"S-{i}-{token[-6:]}")
            assert code == 202

    async def pages(token: str, limit: int) -> list[list[str]]:
        out, after = [], None
        while True:
            page = await _page(client, after, limit, token)
            if not page["items"]:
                assert page["next"] == after
                return out
            out.append([i["referral_id"] for i in page["items"]])
            after = page["next"]

    assert await pages(KELA2_TOKEN, 2) == [rids[KELA2_TOKEN][:2], rids[KELA2_TOKEN][2:]]
    assert await pages(KELA_TOKEN, 2) == [rids[KELA_TOKEN][:2], rids[KELA_TOKEN][2:]]
    everything = [rid for pair in zip(rids[KELA_TOKEN], rids[KELA2_TOKEN], strict=True) for rid in pair]
    assert await pages(KELA_CENTRAL_TOKEN, 4) == [everything[:4], everything[4:]]
