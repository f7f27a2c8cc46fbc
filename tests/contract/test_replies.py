"""Replies through the HTTP API against the state machine of DESIGN § 10, on both stores.

Cases reach their starting state by earlier replies on the pull route, after the broker has
delivered them (`delivered` is awaited, never slept for). A 409 must change nothing: same state,
same history.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.helpers.app import (
    ADMIN_TOKEN,
    KELA2_TOKEN,
    KELA_TOKEN,
    auth,
    base_settings,
    intake_token,
)
from tests.helpers.support import (
    SENT_AT,
    assert_safe_422,
    case_events,
    closed_port,
    drive_to,
    error_locs,
    get_case,
    new_case,
    reply,
    reply_body,
    wait_for,
    wait_state,
)

# § 10, as a table: the state a reply moves the case to, or 409. `returned` is sent without a
# suggested municipality, so it ends in `unroutable`; `decision_made` runs on an
# application_transfer case (on other kinds it is a 422, see below).
TABLE = """
status              delivered       acknowledged    in_progress     info_requested  closed
received            acknowledged    409             409             409             409
assigned            in_progress     in_progress     in_progress     409             409
client_contacted    in_progress     in_progress     in_progress     409             409
assessment_started  in_progress     in_progress     in_progress     409             409
info_requested      info_requested  info_requested  info_requested  409             409
decision_made       409             in_progress     in_progress     409             409
returned            unroutable      unroutable      unroutable      unroutable      409
closed              closed          closed          closed          closed          409
"""


def _parse_table() -> dict[str, dict[str, str]]:
    lines = [ln.split() for ln in TABLE.strip().splitlines()]
    starts = lines[0][1:]
    return {row[0]: dict(zip(starts, row[1:], strict=True)) for row in lines[1:]}


EXPECTED = _parse_table()
STATUSES = list(EXPECTED)
STARTS = ["delivered", "acknowledged", "in_progress", "info_requested", "closed"]


async def _feed(client: Any) -> list[dict[str, Any]]:
    r = await client.get("/v1/updates?limit=500", headers=auth(KELA_TOKEN))
    assert r.status == 200
    items: list[dict[str, Any]] = (await r.json())["items"]
    return items


def _is_prefix(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> bool:
    return after[:len(before)] == before


@pytest.mark.parametrize("status", STATUSES)
async def test_transition_table(make_client, store_url, status: str) -> None:
    client = await make_client(base_settings(store_url))
    kind = "application_transfer" if status == "decision_made" else "support_need"
    problems: list[str] = []
    for start in STARTS:
        rid = await new_case(client, f"T-{status}-{start}", kind=kind)
        await drive_to(client, rid, start)
        before = await get_case(client, rid)
        code, out = await reply(client, rid, status, reply_id=f"T-{status}")
        after = await get_case(client, rid)
        expected = EXPECTED[status][start]
        where = f"{status} in {start}"
        if not _is_prefix(before["events"], after["events"]):
            problems.append(f"{where}: history lost or reordered events")
        new_events = after["events"][len(before["events"]):]
        if expected == "409":
            if code != 409:
                problems.append(f"{where}: expected 409, got {code} {out}")
            elif out.get("error", {}).get("code") != "conflict":
                problems.append(f"{where}: error body {out}")
            if after["state"] != start or new_events:
                problems.append(f"{where}: a 409 changed the case: {after['state']}, "
                                f"{[e['type'] for e in new_events]}")
            continue
        if code != 202:
            problems.append(f"{where}: expected 202 -> {expected}, got {code} {out}")
            continue
        if out.get("state") != expected or after["state"] != expected:
            problems.append(f"{where}: expected {expected}, answer {out.get('state')}, "
                            f"case {after['state']}")
        replies = [e for e in new_events if e["type"] == "reply"]
        if len(replies) != 1 or replies[0]["reply"]["status"] != status \
                or replies[0]["reply"]["reply_id"] != f"T-{status}":
            problems.append(f"{where}: reply events added: {replies}")
    assert not problems, "\n".join(problems)


async def test_decision_made_is_422_on_other_kinds_even_where_409_would_apply(
        make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    for kind in ("support_need", "support_need_without_consent", "basic_amount_reduction",
                 "urgent_assistance"):
        for start in (["delivered", "acknowledged", "closed"] if kind == "support_need"
                      else ["acknowledged"]):
            rid = await new_case(client, f"DM-{kind}-{start}", kind=kind)
            await drive_to(client, rid, start)
            before = await get_case(client, rid)
            r = await client.post(f"/v1/referrals/{rid}/replies",
                                  json=reply_body("decision_made", "DM-1"),
                                  headers=auth(intake_token("08")))
            out = await assert_safe_422(r)
            assert ["status"] in error_locs(out), (kind, start, out)
            assert await get_case(client, rid) == before
    rid = await new_case(client, "DM-AT", kind="application_transfer")
    await drive_to(client, rid, "acknowledged")
    code, out = await reply(client, rid, "decision_made", decision="partly_granted")
    assert code == 202 and out["state"] == "in_progress", out


# --- body rules (§ 4, § 11) ------------------------------------------------------------------------


def _without(status: str, field: str) -> dict[str, Any]:
    body = reply_body(status, f"REQ-{status}-{field}")
    del body[field]
    return body


BAD_REPLIES: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("assigned_without_worker", _without("assigned", "worker"), ["worker"]),
    ("assigned_worker_without_name", reply_body("assigned", "REQ-w", worker={"title": "x"}),
     ["worker", "name"]),
    ("info_requested_without_question", _without("info_requested", "question"), ["question"]),
    ("returned_without_reason", _without("returned", "reason"), ["reason"]),
    ("closed_without_outcome", _without("closed", "outcome"), ["outcome"]),
    ("decision_made_without_decision", _without("decision_made", "decision"), ["decision"]),
    ("referral_quality_on_assigned",
     reply_body("assigned", "REQ-q", referral_quality="sufficient"), ["referral_quality"]),
    ("findings_on_received", reply_body("received", "REQ-f", findings=["service_gap"]),
     ["findings"]),
    ("client_feedback_on_received",
     reply_body("received", "REQ-cf", client_feedback={"rating": 4}), ["client_feedback"]),
    ("rating_0", reply_body("closed", "REQ-r0", client_feedback={"rating": 0}),
     ["client_feedback", "rating"]),
    ("rating_6", reply_body("closed", "REQ-r6", client_feedback={"rating": 6}),
     ["client_feedback", "rating"]),
    ("rating_string", reply_body("closed", "REQ-rs", client_feedback={"rating": "5"}),
     ["client_feedback", "rating"]),
    ("rating_float", reply_body("closed", "REQ-rf", client_feedback={"rating": 4.5}),
     ["client_feedback", "rating"]),
    ("unknown_status", reply_body("forgotten", "REQ-s"), ["status"]),
    ("unknown_outcome", reply_body("closed", "REQ-o", outcome="vanished"), ["outcome"]),
    ("unknown_decision", reply_body("decision_made", "REQ-d", decision="maybe"), ["decision"]),
    ("unknown_finding", reply_body("closed", "REQ-uf", findings=["weather"]), ["findings", 0]),
    ("unknown_referral_quality", reply_body("received", "REQ-uq", referral_quality="great"),
     ["referral_quality"]),
    ("message_4001", reply_body("received", "REQ-m", message="x" * 4001), ["message"]),
    ("naive_sent_at", reply_body("received", "REQ-n", sent_at="2026-01-02T10:00:00"),
     ["sent_at"]),
    ("missing_reply_id", {"status": "received", "sent_at": SENT_AT}, ["reply_id"]),
    ("extra_field", reply_body("received", "REQ-x", colour="blue"), ["colour"]),
    ("suggested_code_format", reply_body("returned", "REQ-sc", suggested_municipality_code="91"),
     ["suggested_municipality_code"]),
]


async def test_reply_body_rules_are_422_naming_the_field(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "REQ-1", kind="application_transfer")  # every status fits
    before = await get_case(client, rid)
    problems = []
    for name, body, loc in BAD_REPLIES:
        r = await client.post(f"/v1/referrals/{rid}/replies", json=body,
                              headers=auth(intake_token("08")))
        try:
            out = await assert_safe_422(r)
        except AssertionError as exc:
            problems.append(f"{name}: {exc}")
            continue
        if loc not in error_locs(out):
            problems.append(f"{name}: loc {loc} not among {error_locs(out)}")
    for body in ([], None, "received"):
        r = await client.post(f"/v1/referrals/{rid}/replies", data=json.dumps(body),
                              headers={**auth(intake_token("08")),
                                       "Content-Type": "application/json"})
        if r.status != 422:
            problems.append(f"body {body!r}: {r.status}")
    assert not problems, "\n".join(problems)
    assert await get_case(client, rid) == before


async def test_statistics_fields_are_kept_on_received_and_closed(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "STAT-1")
    code, out = await reply(client, rid, "received", reply_id="S-1",
                            referral_quality="insufficient_information")
    assert code == 202, out
    code, out = await reply(client, rid, "closed", reply_id="S-2", referral_quality="sufficient",
                            findings=["housing_shortage", "long_waiting_time"],
                            client_feedback={"rating": 5, "heard": True})
    assert code == 202, out
    case = await get_case(client, rid)
    closed = case_events(case, "reply")[-1]["reply"]
    assert closed["findings"] == ["housing_shortage", "long_waiting_time"]
    assert closed["client_feedback"] == {"rating": 5, "heard": True}
    assert closed["referral_quality"] == "sufficient"
    for rating in (1, 5):
        rid = await new_case(client, f"STAT-R{rating}")
        code, out = await reply(client, rid, "closed", client_feedback={"rating": rating})
        assert code == 202, out


# --- idempotency -------------------------------------------------------------------------------------


async def test_same_reply_id_is_applied_once(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "IDR-1")
    code, first = await reply(client, rid, "received", reply_id="R-1", message="Otettu vastaan.")
    assert code == 202, first
    code, again = await reply(client, rid, "received", reply_id="R-1", message="Otettu vastaan.")
    assert code == 200 and again == first
    code, out = await reply(client, rid, "received", reply_id="R-1", message="Eri viesti.")
    assert code == 409, out
    # After the case moved on, the identical repeat still answers with the first result.
    code, out = await reply(client, rid, "assigned", reply_id="R-2")
    assert code == 202 and out["state"] == "in_progress"
    code, again = await reply(client, rid, "received", reply_id="R-1", message="Otettu vastaan.")
    assert code == 200 and again == first and again["state"] == "acknowledged"
    case = await get_case(client, rid)
    assert case["state"] == "in_progress"
    assert [e["reply"]["reply_id"] for e in case_events(case, "reply")] == ["R-1", "R-2"]
    feed = [i for i in await _feed(client) if i["referral_id"] == rid and i["type"] == "reply"]
    assert [i["reply"]["reply_id"] for i in feed] == ["R-1", "R-2"]


async def test_concurrent_identical_replies_apply_once(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "IDR-CONC")
    results = await asyncio.gather(*(reply(client, rid, "received", reply_id="R-C")
                                     for _ in range(20)))
    assert sorted(code for code, _ in results) == [200] * 19 + [202], results
    assert len({str(out) for _, out in results}) == 1
    case = await get_case(client, rid)
    assert len(case_events(case, "reply")) == 1
    feed = [i for i in await _feed(client) if i["referral_id"] == rid]
    assert [i["type"] for i in feed] == ["reply"]


async def test_concurrent_different_replies_one_wins(make_client, store_url) -> None:
    """Ten intake workers acknowledge at once: one `received` fits, the other nine are 409."""
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "RACE-1")
    results = await asyncio.gather(*(reply(client, rid, "received", reply_id=f"RACE-{i}")
                                     for i in range(10)))
    assert sorted(code for code, _ in results) == [202] + [409] * 9, results
    case = await get_case(client, rid)
    assert case["state"] == "acknowledged"
    assert len(case_events(case, "reply")) == 1
    assert [i["type"] for i in await _feed(client) if i["referral_id"] == rid] == ["reply"]


# --- a reply proves delivery (§ 10) ---------------------------------------------------------------


def _stuck_routes() -> list[dict[str, Any]]:
    """Area 08 delivers to a webhook that can never succeed (no secret, nothing listening), so
    its cases stay `routed` while the worker keeps retrying."""
    return [{"area": "08", "delivery": "webhook", "url": f"http://127.0.0.1:{closed_port()}/hook",
             "secret_env": "HANDOFF_TEST_SECRET_THAT_IS_NOT_SET"},
            *({"area": a, "delivery": "pull"} for a in ("90", "19", "03"))]


async def _retried_once(client: Any) -> bool:
    r = await client.get("/metrics")
    for line in (await r.text()).splitlines():
        if line.startswith('handoff_deliveries_total{area="08",outcome="retried"}'):
            return float(line.split()[-1]) >= 1
    return False


async def test_reply_while_routed_marks_delivered_first(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url, routes=_stuck_routes()))
    rid = await new_case(client, "ROUTED-1", wait_delivered=False)
    await wait_for(lambda: _retried_once(client), what="a failed delivery attempt")
    assert (await get_case(client, rid))["state"] == "routed"
    code, out = await reply(client, rid, "received", reply_id="R-routed")
    assert code == 202 and out["state"] == "acknowledged", out
    case = await get_case(client, rid)
    assert case["state"] == "acknowledged"
    types = [e["type"] for e in case["events"]]
    assert types.count("delivered") == 1 and types.count("reply") == 1, types
    assert types.index("delivered") < types.index("reply"), types
    assert case_events(case, "delivered")[0].get("via") == "reply"
    code, out = await reply(client, rid, "assigned")
    assert code == 202 and out["state"] == "in_progress"


async def test_every_status_on_a_routed_case_acts_as_on_delivered(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url, routes=_stuck_routes()))
    problems = []
    for status in STATUSES:
        kind = "application_transfer" if status == "decision_made" else "support_need"
        rid = await new_case(client, f"ROUTED-{status}", kind=kind, wait_delivered=False)
        before = await get_case(client, rid)
        assert before["state"] == "routed"
        code, out = await reply(client, rid, status)
        after = await get_case(client, rid)
        expected = EXPECTED[status]["delivered"]
        if expected == "409":
            if code != 409 or after != before:
                problems.append(f"{status}: {code} {out}; changed={after != before}")
            continue
        types = [e["type"] for e in after["events"]]
        if code != 202 or after["state"] != expected or "delivered" not in types \
                or types.index("delivered") > types.index("reply"):
            problems.append(f"{status}: {code} {out} {after['state']} {types}")
    assert not problems, "\n".join(problems)


# --- returned: re-routing and its guards ------------------------------------------------------------


async def _feed_types(client: Any, rid: str) -> list[str]:
    return [i["type"] for i in await _feed(client) if i["referral_id"] == rid]


async def test_returned_reroutes_then_guards_then_admin_routes(
        make_client, store_url, transport_url) -> None:
    client = await make_client(base_settings(store_url, transport_url))
    rid = await new_case(client, "RET-1")
    # 08 -> 90: Helsinki is suggested.
    code, out = await reply(client, rid, "returned", suggested_municipality_code="091")
    assert code == 202, out
    assert out["state"] == "routed" and out["area"] == "90", out
    case = await wait_state(client, rid, "delivered")
    assert case["area"] == "90"
    rerouted = case_events(case, "rerouted")
    assert len(rerouted) == 1 and rerouted[0]["from_area"] == "08" and rerouted[0]["to_area"] == "90"
    r = await client.get(f"/v1/referrals/{rid}", headers=auth(intake_token("08")))
    assert r.status == 404
    code, _ = await reply(client, rid, "received", area="08")
    assert code == 404
    r = await client.get("/v1/inbox", headers=auth(intake_token("90")))
    assert [i["referral_id"] for i in (await r.json())["items"]] == [rid]
    r = await client.get("/v1/inbox", headers=auth(intake_token("08")))
    assert (await r.json())["items"] == []
    assert await _feed_types(client, rid) == ["reply", "rerouted"]
    # 90 acknowledges, then returns it towards Tampere, which already had it: ping-pong guard.
    code, out = await reply(client, rid, "received", area="90")
    assert code == 202 and out["state"] == "acknowledged"
    code, out = await reply(client, rid, "returned", area="90", suggested_municipality_code="837")
    assert code == 202 and out["state"] == "unroutable", out
    case = await get_case(client, rid)
    assert case["state"] == "unroutable" and case["area"] == "90"
    assert case_events(case, "escalation"), [e["type"] for e in case["events"]]
    assert case["unroutable_reason"]
    assert await _feed_types(client, rid) == ["reply", "rerouted", "reply", "reply", "unroutable",
                                              "escalation"]
    code, _ = await reply(client, rid, "received", area="90")
    assert code == 409
    # An operator routes it by hand to area 19.
    r = await client.post(f"/v1/admin/referrals/{rid}/route", json={"area": "19"},
                          headers=auth(ADMIN_TOKEN))
    assert r.status == 202, await r.text()
    assert (await r.json())["area"] == "19"
    case = await wait_state(client, rid, "delivered")
    assert case["area"] == "19"
    r = await client.get("/v1/inbox", headers=auth(intake_token("19")))
    assert [i["referral_id"] for i in (await r.json())["items"]] == [rid]
    assert (await _feed_types(client, rid))[-1] == "rerouted"
    code, out = await reply(client, rid, "received", area="19")
    assert code == 202 and out["state"] == "acknowledged"


async def test_returned_without_suggestion_is_unroutable(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "RET-NONE")
    code, out = await reply(client, rid, "returned")
    assert code == 202 and out["state"] == "unroutable" and out["area"] == "08", out
    case = await get_case(client, rid)
    assert case["state"] == "unroutable" and case["unroutable_reason"]
    assert not case_events(case, "escalation")
    assert await _feed_types(client, rid) == ["reply", "unroutable"]


async def test_returned_towards_an_area_without_route_is_unroutable(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "RET-ALAND")
    code, out = await reply(client, rid, "returned", suggested_municipality_code="478")
    assert code == 202 and out["state"] == "unroutable", out
    case = await get_case(client, rid)
    assert case["area"] == "08"
    assert "91" in case["unroutable_reason"]


async def test_more_returns_than_max_returns_is_unroutable(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))  # routing.max_returns defaults to 2
    rid = await new_case(client, "RET-MAX")
    hops = [("08", "091", "90"), ("90", "564", "19")]
    for area, municipality, target in hops:
        await wait_state(client, rid, "delivered")
        code, out = await reply(client, rid, "returned", area=area,
                                suggested_municipality_code=municipality)
        assert code == 202 and out["state"] == "routed" and out["area"] == target, out
    await wait_state(client, rid, "delivered")
    code, out = await reply(client, rid, "returned", area="19", suggested_municipality_code="049")
    assert code == 202 and out["state"] == "unroutable", out  # the third return: over the limit
    case = await get_case(client, rid)
    assert case["state"] == "unroutable" and case["area"] == "19"
    assert len(case_events(case, "rerouted")) == 2
    assert case_events(case, "escalation")


async def test_admin_route_rules(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "ADM-1")
    url = f"/v1/admin/referrals/{rid}/route"
    r = await client.post(url, json={"area": "19"}, headers=auth(ADMIN_TOKEN))
    assert r.status == 409, await r.text()  # delivered cases are not re-routed by hand
    code, _ = await reply(client, rid, "returned")
    assert code == 202
    for body, loc in (({"area": "05"}, ["area"]), ({"area": "zz"}, ["area"]), ({}, ["area"]),
                      ({"area": "19", "why": "x"}, ["why"])):
        r = await client.post(url, json=body, headers=auth(ADMIN_TOKEN))
        out = await assert_safe_422(r)
        assert loc in error_locs(out), (body, out)
    r = await client.post("/v1/admin/referrals/00000000-0000-4000-8000-000000000000/route",
                          json={"area": "19"}, headers=auth(ADMIN_TOKEN))
    assert r.status == 404
    assert (await get_case(client, rid))["state"] == "unroutable"
    r = await client.post(url, json={"area": "19"}, headers=auth(ADMIN_TOKEN))
    assert r.status == 202, await r.text()
    await wait_state(client, rid, "delivered")


# --- Kela's answers -------------------------------------------------------------------------------


def _answer(answer_id: str, message: str = "Vuokrasopimus on voimassa (keksitty).") -> dict[str, Any]:
    return {"answer_id": answer_id, "message": message, "sent_at": SENT_AT}


async def test_answers(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "ANS-1")
    url = f"/v1/referrals/{rid}/answers"
    r = await client.post(url, json=_answer("A-0"), headers=auth(KELA_TOKEN))
    assert r.status == 409, await r.text()  # not waiting for Kela
    await drive_to(client, rid, "info_requested")
    r = await client.post(url, json={"answer_id": "A-x", "sent_at": SENT_AT},
                          headers=auth(KELA_TOKEN))
    assert ["message"] in error_locs(await assert_safe_422(r))
    r = await client.post(url, json=_answer("A-1"), headers=auth(KELA_TOKEN))
    assert r.status == 202, await r.text()
    first = await r.json()
    assert first["state"] == "in_progress"
    r = await client.post(url, json=_answer("A-1"), headers=auth(KELA_TOKEN))
    assert r.status == 200 and await r.json() == first
    r = await client.post(url, json=_answer("A-1", "Eri vastaus."), headers=auth(KELA_TOKEN))
    assert r.status == 409
    r = await client.post(url, json=_answer("A-2"), headers=auth(KELA_TOKEN))
    assert r.status == 409  # in_progress again: no second answer without a new question
    r = await client.post(url, json=_answer("A-2"), headers=auth(KELA2_TOKEN))
    assert r.status == 404  # another Kela party: not its case (tests/contract/test_access.py)
    case = await get_case(client, rid)
    assert case["state"] == "in_progress"
    assert [e["answer"]["answer_id"] for e in case_events(case, "answer")] == ["A-1"]

    async def answer_reached_intake() -> bool:
        return bool(case_events(await get_case(client, rid), "answer_delivered"))
    await wait_for(answer_reached_intake, what="the answer delivered to the intake")
    code, out = await reply(client, rid, "assigned")
    assert code == 202 and out["state"] == "in_progress"
    r = await client.post("/v1/referrals/00000000-0000-4000-8000-000000000000/answers",
                          json=_answer("A-3"), headers=auth(KELA_TOKEN))
    assert r.status == 404


async def test_closed_is_final(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "FINAL-1", kind="application_transfer")
    await drive_to(client, rid, "closed")
    before = await get_case(client, rid)
    for status in STATUSES:
        code, out = await reply(client, rid, status, suggested_municipality_code=(
            "091" if status == "returned" else None))
        assert code == 409, (status, out)
    r = await client.post(f"/v1/referrals/{rid}/answers", json=_answer("A-F"),
                          headers=auth(KELA_TOKEN))
    assert r.status == 409
    r = await client.post(f"/v1/admin/referrals/{rid}/route", json={"area": "19"},
                          headers=auth(ADMIN_TOKEN))
    assert r.status == 409
    assert await get_case(client, rid) == before


async def test_history_event_ids_are_unique(make_client, store_url) -> None:
    """Each history item names its own event: the `delivered` event must not show the id of the
    message it delivered (that belongs to the `routed` event) in place of its own."""
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "HIST-1")
    await drive_to(client, rid, "acknowledged")
    case = await get_case(client, rid)
    ids = [e["event_id"] for e in case["events"]]
    assert len(ids) == len(set(ids)), [(e["type"], e["event_id"]) for e in case["events"]]
    assert [e["type"] for e in case["events"]][:4] == ["received", "routed", "delivered", "reply"]
