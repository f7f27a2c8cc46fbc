"""The access matrix of DESIGN § 7: every role against every endpoint, on both stores.

An intake of another area must not learn that a case exists: it gets the same 404, byte for byte in
the JSON body, as for an id that does not exist.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from broker.domain.workdays import helsinki_date
from broker.store.tables import audit
from tests.helpers.app import (
    ADMIN_TOKEN,
    KELA2_TOKEN,
    KELA_CENTRAL_TOKEN,
    KELA_TOKEN,
    auth,
    base_settings,
    intake_token,
    services_of,
)
from tests.helpers.support import (
    SENT_AT,
    case_events,
    drive_to,
    get_case,
    new_case,
    post_referral,
    referral_body,
    reply,
    reply_body,
    wait_state,
)

# Columns: the caller. `kela` sent the cases, `kela2` is another Kela party (it sees only the cases it
# sent), `kelac` Kela's central reader (it sees every sender's); `in08` is the intake of the cases'
# area (837 Tampere -> 08), `in90` the intake of another area (Helsinki), `none` sends no
# Authorization header, `bad` an unknown bearer token.
ROLES: dict[str, dict[str, str]] = {
    "kela": auth(KELA_TOKEN),
    "kela2": auth(KELA2_TOKEN),
    "kelac": auth(KELA_CENTRAL_TOKEN),
    "admin": auth(ADMIN_TOKEN),
    "in08": auth(intake_token("08")),
    "in90": auth(intake_token("90")),
    "none": {},
    "bad": auth("no-such-token"),
}

# Rows: an endpoint (with the case or body it is called on). `{A}` is a delivered case of area 08,
# `{I}` a case of area 08 waiting in info_requested, `{U}` an unroutable Åland case, `{X}` an id
# that does not exist.
MATRIX = """
row                              method path                                 kela kela2 kelac admin in08 in90 none bad
create_referral                  POST   /v1/referrals                         202  202   202   403   403  403  401  401
read_case                        GET    /v1/referrals/{A}                     200  404   200   200   200  404  401  401
read_unknown_case                GET    /v1/referrals/{X}                     404  404   404   404   404  404  401  401
inbox                            GET    /v1/inbox                             403  403   403   403   200  200  401  401
reply                            POST   /v1/referrals/{A}/replies             403  403   403   403   202  404  401  401
reply_invalid_body               POST   /v1/referrals/{A}/replies             403  403   403   403   422  404  401  401
reply_unknown_case               POST   /v1/referrals/{X}/replies             403  403   403   403   404  404  401  401
answer                           POST   /v1/referrals/{I}/answers             202  404   202   403   403  403  401  401
answer_not_info_requested        POST   /v1/referrals/{A}/answers             409  404   409   403   403  403  401  401
answer_unknown_case              POST   /v1/referrals/{X}/answers             404  404   404   403   403  403  401  401
updates                          GET    /v1/updates                           200  200   200   403   403  403  401  401
dead_letters                     GET    /v1/admin/dead-letters                403  403   403   200   403  403  401  401
replay_dead_letter               POST   /v1/admin/dead-letters/1/replay       403  403   403   404   403  403  401  401
admin_route_unroutable           POST   /v1/admin/referrals/{U}/route         403  403   403   202   403  403  401  401
admin_route_delivered            POST   /v1/admin/referrals/{A}/route         403  403   403   409   403  403  401  401
admin_route_unknown_area         POST   /v1/admin/referrals/{U}/route         403  403   403   422   403  403  401  401
"""


@dataclass(frozen=True)
class Cell:
    row: str
    method: str
    path: str
    expected: int


def _parse_matrix() -> dict[str, list[Cell]]:
    lines = [ln.split() for ln in MATRIX.strip().splitlines()]
    header, rows = lines[0], lines[1:]
    roles = header[3:]
    assert roles == list(ROLES), roles
    by_role: dict[str, list[Cell]] = {r: [] for r in roles}
    for name, method, path, *codes in rows:
        assert len(codes) == len(roles), name
        for role, code in zip(roles, codes, strict=True):
            by_role[role].append(Cell(name, method, path, int(code)))
    return by_role


CELLS = _parse_matrix()


def _body_for(row: str, role: str) -> Any:
    if row == "create_referral":
        return referral_body(f"ACC-NEW-{role}")
    if row == "reply":
        return reply_body("assigned", f"ACC-R-{role}")
    if row == "reply_invalid_body":
        return {"reply_id": f"ACC-BAD-{role}", "status": "assigned", "sent_at": SENT_AT}  # no worker
    if row == "reply_unknown_case":
        return reply_body("received", f"ACC-X-{role}")
    if row.startswith("answer"):
        return {"answer_id": f"ACC-A-{role}", "message": "Vuokrasopimus on voimassa (keksitty).",
                "sent_at": SENT_AT}
    if row in ("admin_route_unroutable", "admin_route_delivered"):
        return {"area": "19"}
    if row == "admin_route_unknown_area":
        return {"area": "zz"}
    return None


async def _world(client: Any) -> dict[str, str]:
    """The cases the matrix is called on (built with the right tokens, before the role acts)."""
    a = await new_case(client, "ACC-A")
    i = await new_case(client, "ACC-I")
    await drive_to(client, i, "info_requested")
    status, out = await post_referral(client, referral_body("ACC-U", municipality_code="478"))
    assert status == 202 and out["state"] == "unroutable", out
    return {"A": a, "I": i, "U": out["referral_id"], "X": str(uuid.uuid4())}


@pytest.mark.parametrize("role", list(ROLES))
async def test_access_matrix(make_client, store_url, role: str) -> None:
    client = await make_client(base_settings(store_url))
    ids = await _world(client)
    # The unknown-area row runs before the unroutable case is re-routed by the admin.
    cells = sorted(CELLS[role], key=lambda c: c.row != "admin_route_unknown_area")
    mismatches = []
    for cell in cells:
        path = cell.path.format(**ids)
        body = _body_for(cell.row, role)
        headers = dict(ROLES[role])
        if cell.method == "GET":
            r = await client.get(path, headers=headers)
        else:
            r = await client.post(path, json=body if body is not None else {}, headers=headers)
        text = await r.text()
        if r.status != cell.expected:
            mismatches.append(f"{cell.row} ({cell.method} {cell.path}) as {role}: expected "
                              f"{cell.expected}, got {r.status} {text[:160]}")
        elif r.status >= 400 and r.status != 422:
            payload = await r.json()
            if not ({"code", "message"} <= set(payload.get("error", {}))):
                mismatches.append(f"{cell.row} as {role}: error shape {payload}")
    assert not mismatches, "\n".join(mismatches)


async def test_other_area_sees_the_same_404_as_for_a_missing_id(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "ACC-404")
    missing = str(uuid.uuid4())
    other = auth(intake_token("90"))

    async def answer(method: str, path: str, json: Any = None) -> tuple[int, Any, str]:
        r = await (client.get(path, headers=other) if method == "GET"
                   else client.post(path, json=json, headers=other))
        return r.status, await r.json(), r.headers.get("Content-Type", "")

    for method, suffix, body in (("GET", "", None),
                                 ("POST", "/replies", reply_body("received", "R-404"))):
        existing = await answer(method, f"/v1/referrals/{rid}{suffix}", body)
        absent = await answer(method, f"/v1/referrals/{missing}{suffix}", body)
        not_an_id = await answer(method, f"/v1/referrals/not-a-referral-id{suffix}", body)
        assert existing[0] == 404, existing
        assert existing == absent == not_an_id
    # A reply body that is invalid too: still 404, not a 422 that would reveal the case exists.
    invalid = {"reply_id": "R-404-bad", "status": "assigned", "sent_at": SENT_AT}
    assert await answer("POST", f"/v1/referrals/{rid}/replies", invalid) == \
        await answer("POST", f"/v1/referrals/{missing}/replies", invalid)
    # Nothing changed, and the other area's inbox does not list the case.
    case = await get_case(client, rid)
    assert case["state"] == "delivered"
    assert not [e for e in case["events"] if e["type"] == "reply"]
    r = await client.get("/v1/inbox?state=delivered,acknowledged,in_progress", headers=other)
    assert (await r.json())["items"] == []


async def _feed(client: Any, token: str) -> list[dict[str, Any]]:
    r = await client.get("/v1/updates", params={"limit": "500"}, headers=auth(token))
    assert r.status == 200, await r.text()
    items: list[dict[str, Any]] = (await r.json())["items"]
    return items


async def test_a_kela_party_sees_only_the_cases_it_sent(make_client, store_url) -> None:
    """Issue 15: another Kela party gets the 404 of a missing id for a case it did not send, for
    reads and answers alike, and none of that case's feed entries; the central reader sees all."""
    client = await make_client(base_settings(store_url))
    mine = await new_case(client, "SCOPE-1")  # sent by kela-1
    await drive_to(client, mine, "info_requested")
    status, out = await post_referral(client, referral_body("SCOPE-2"), KELA2_TOKEN)
    assert status == 202, out
    theirs = out["referral_id"]
    await wait_state(client, theirs, "delivered")
    code, _ = await reply(client, theirs, "received")
    assert code == 202
    missing = str(uuid.uuid4())
    answer = {"answer_id": "SCOPE-A-1", "message": "Keksitty lisätieto.", "sent_at": SENT_AT}

    async def call(token: str, method: str, path: str) -> tuple[int, Any]:
        r = await (client.get(path, headers=auth(token)) if method == "GET"
                   else client.post(path, json=answer, headers=auth(token)))
        return r.status, await r.json()

    for method, suffix in (("GET", ""), ("POST", "/answers")):
        foreign = await call(KELA2_TOKEN, method, f"/v1/referrals/{mine}{suffix}")
        absent = await call(KELA2_TOKEN, method, f"/v1/referrals/{missing}{suffix}")
        assert foreign[0] == 404 and foreign == absent, (foreign, absent)
    # Nothing was answered, and the refusals are in the audit trail like any other.
    case = await get_case(client, mine)
    assert case["state"] == "info_requested" and not case_events(case, "answer")
    async with services_of(client).ledger.engine.connect() as conn:
        refused = (await conn.execute(sa.select(audit.c.action, audit.c.outcome).where(
            audit.c.party_id == "kela-2", audit.c.referral_id == mine).order_by(audit.c.seq))).all()
    assert [tuple(r) for r in refused] == [("case_read", "not_found"), ("answer_applied", "not_found")]

    # Each sender's feed holds its own cases' entries only, and the sender reads its own case.
    own1, own2 = await _feed(client, KELA_TOKEN), await _feed(client, KELA2_TOKEN)
    assert [i["referral_id"] for i in own1] == [mine, mine]  # received, info_requested
    assert [(i["referral_id"], i["reply"]["status"]) for i in own2] == [(theirs, "received")]
    assert (await call(KELA2_TOKEN, "GET", f"/v1/referrals/{theirs}"))[0] == 200
    # Kela's central reader sees the whole feed in order, reads and answers every sender's cases.
    every = await _feed(client, KELA_CENTRAL_TOKEN)
    assert sorted(i["cursor"] for i in every) == sorted(i["cursor"] for i in own1 + own2)
    assert {i["referral_id"] for i in every} == {mine, theirs}
    assert (await call(KELA_CENTRAL_TOKEN, "GET", f"/v1/referrals/{theirs}"))[0] == 200
    status, body = await call(KELA_CENTRAL_TOKEN, "POST", f"/v1/referrals/{mine}/answers")
    assert (status, body["state"]) == (202, "in_progress")
    # Statistics are aggregates: every Kela party gets the same, all senders' cases counted.
    month = f"{helsinki_date(dt.datetime.now(dt.UTC)):%Y-%m}"
    stats = [await call(t, "GET", f"/v1/statistics?from={month}&to={month}")
             for t in (KELA_TOKEN, KELA2_TOKEN, KELA_CENTRAL_TOKEN)]
    assert stats[0][0] == 200 and stats[0] == stats[1] == stats[2]


async def test_a_ledger_token_can_be_the_central_reader(make_client, store_url) -> None:
    from broker.security.audit import system_actor
    from broker.security.tokens import TokenStore

    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "SCOPE-L-1")
    store, now = TokenStore(services_of(client).ledger), dt.datetime.now(dt.UTC)
    central = await store.create("kela-hq", "kela", None, actor=system_actor("test"), now=now,
                                 central_reader=True)
    plain = await store.create("kela-office", "kela", None, actor=system_actor("test"), now=now)
    r = await client.get(f"/v1/referrals/{rid}", headers=auth(central.token))
    assert r.status == 200
    r = await client.get(f"/v1/referrals/{rid}", headers=auth(plain.token))
    assert r.status == 404
    # A rotation keeps the mark.
    rotated = await store.rotate("kela-hq", actor=system_actor("test"), now=now)
    assert rotated.info.central_reader
    r = await client.get(f"/v1/referrals/{rid}", headers=auth(rotated.token))
    assert r.status == 200
    with pytest.raises(ValueError, match="central_reader"):
        await store.create("admin-x", "admin", None, actor=system_actor("test"), now=now,
                           central_reader=True)


async def test_intake_inbox_shows_only_its_own_area(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    a = await new_case(client, "ACC-IN-08", area="08")
    h = await new_case(client, "ACC-IN-90", area="90")
    for area, rid in (("08", a), ("90", h)):
        r = await client.get("/v1/inbox", headers=auth(intake_token(area)))
        assert r.status == 200
        assert [i["referral_id"] for i in (await r.json())["items"]] == [rid]
    r = await client.get("/v1/inbox", headers=auth(intake_token("19")))
    assert (await r.json()) == {"items": [], "next": None}


async def test_reading_a_case_is_audited(make_client, store_url) -> None:
    """DESIGN § 1: every read of case data is audited: the audit trail names the reader, the case,
    the request and the outcome (tests/contract/test_audit.py covers every action and the hash chain)."""
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "AUDIT-1")
    r = await client.get(f"/v1/referrals/{rid}", headers={**auth(intake_token("08")),
                                                          "X-Request-Id": "read-1"})
    assert r.status == 200
    async with services_of(client).ledger.engine.connect() as conn:
        rows = (await conn.execute(sa.select(audit.c.action, audit.c.role, audit.c.outcome)
                                   .where(audit.c.referral_id == rid, audit.c.party_id == "intake-08",
                                          audit.c.request_id == "read-1"))).all()
    assert [tuple(row) for row in rows] == [("case_read", "intake", "ok")]


# --- public endpoints -------------------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _check_json_schema(schema: dict[str, Any], must_have: set[str]) -> None:
    """Structural checks of a JSON Schema (draft 2020-12) without a validator library."""
    assert schema.get("$schema", "").startswith("https://json-schema.org/"), schema.get("$schema")
    assert schema.get("type") == "object"
    props = schema.get("properties")
    assert isinstance(props, dict) and must_have <= set(props), sorted(props or {})
    assert set(schema.get("required", [])) <= set(props)
    assert schema.get("additionalProperties") is False  # unknown fields are a 422
    defs = schema.get("$defs", {})
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/") and ref.split("/")[-1] in defs, ref
    for name, sub in defs.items():
        if sub.get("type") == "object":
            assert isinstance(sub.get("properties"), dict), name


async def test_public_endpoints_need_no_token(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    r = await client.get("/healthz")
    assert r.status == 200 and (await r.json())["status"] == "ok"
    r = await client.get("/readyz")
    assert r.status == 200, await r.text()
    ready = await r.json()
    assert ready["store"] is True and ready["transport"] is True

    r = await client.get("/v1/schema/referral.json")
    assert r.status == 200 and r.content_type == "application/json"
    referral_schema = await r.json()
    _check_json_schema(referral_schema, {"kela_reference", "kind", "urgency", "client", "consent",
                                         "needs", "description", "kela", "attachments", "sent_at"})
    assert {"kela_reference", "kind", "client", "sent_at"} <= set(referral_schema["required"])
    r = await client.get("/v1/schema/reply.json")
    assert r.status == 200
    reply_schema = await r.json()
    _check_json_schema(reply_schema, {"reply_id", "status", "worker", "question", "reason",
                                      "suggested_municipality_code", "decision", "outcome",
                                      "message", "sent_at", "referral_quality", "findings",
                                      "client_feedback"})
    r = await client.get("/v1/schema/nothing.json")
    assert r.status == 404

    body = referral_body("ACC-METRICS")
    status, _ = await post_referral(client, body)
    assert status == 202
    r = await client.get("/metrics")
    assert r.status == 200
    text = await r.text()
    assert "handoff_referrals_received_total" in text
    assert 'handoff_referrals_received_total{channel="api",kind="support_need"} 1.0' in text
    assert body["client"]["personal_id"] not in text
    assert body["client"]["last_name"] not in text
