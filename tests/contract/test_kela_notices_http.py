"""POST /v1/kela/notices through the real app (DESIGN § 7): a batch of XML notices, 207 per notice.

Samples in tests/samples/kela/ hold invented people with test identity codes (900-999).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from adapters.kela import NAMESPACE, notices_xsd, parse_notices, render_notice_batch
from schemas.models import Referral
from tests.helpers.app import ADMIN_TOKEN, KELA2_TOKEN, KELA_TOKEN, auth, base_settings, intake_token
from tests.helpers.support import get_case, hetu_with, post_referral, referral_body

SAMPLES = Path(__file__).parents[1] / "samples" / "kela"
VALID = (SAMPLES / "valid_batch.xml").read_bytes()
WITH_INVALID = (SAMPLES / "batch_with_invalid_notice.xml").read_bytes()
VALID_REFS = ["KELA-2025-000101", "KELA-2025-000102", "KELA-2025-000103"]
VALID_AREAS = ["90", "08", "19"]  # 091 Helsinki, 837 Tampere, 564 Oulu
XML = "application/xml"


async def post_notices(client: Any, raw: bytes, *, token: str | None = KELA_TOKEN,
                       content_type: str = XML) -> tuple[int, Any]:
    headers = {"Content-Type": content_type, **(auth(token) if token else {})}
    r = await client.post("/v1/kela/notices", data=raw, headers=headers)
    text = await r.text()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


def without_broker_fields(referral: Referral) -> dict[str, Any]:
    return referral.model_dump(mode="json", exclude={"referral_id", "received_at"}, exclude_none=True)


def sample_referrals(raw: bytes = VALID) -> list[Referral]:
    out = []
    for result in parse_notices(raw):
        assert result.referral is not None
        out.append(result.referral)
    return out


def walk_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in walk_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in walk_keys(v)}
    return set()


@pytest.fixture
async def client(make_client: Any, store_url: str) -> Any:
    return await make_client(base_settings(store_url))


async def test_valid_batch_is_207_with_a_result_per_notice(client: Any) -> None:
    status, body = await post_notices(client, VALID)
    assert status == 207, body
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["kela_reference"] for r in results] == VALID_REFS
    assert [r["status"] for r in results] == [202, 202, 202]
    assert [r["area"] for r in results] == VALID_AREAS
    assert [r["state"] for r in results] == ["routed"] * 3
    assert len({r["referral_id"] for r in results}) == 3
    for result, referral in zip(results, sample_referrals(), strict=True):
        uuid.UUID(result["referral_id"])
        case = await get_case(client, result["referral_id"], KELA_TOKEN)
        assert case["kela_reference"] == result["kela_reference"] and case["area"] == result["area"]
        assert case["kind"] == referral.kind.value and case["urgency"] == referral.urgency.value
        stored = {k: v for k, v in case["referral"].items() if k not in ("referral_id", "received_at")}
        assert stored == referral.model_dump(mode="json", exclude={"referral_id", "received_at"})
        assert case["referral"]["referral_id"] == result["referral_id"]
        assert case["events"][0]["type"] == "received"


async def test_created_cases_are_readable_by_their_area_only(client: Any) -> None:
    _status, body = await post_notices(client, VALID)
    first = body["results"][0]
    assert first["area"] == "90"
    own = await client.get(f"/v1/referrals/{first['referral_id']}", headers=auth(intake_token("90")))
    assert own.status == 200
    other = await client.get(f"/v1/referrals/{first['referral_id']}", headers=auth(intake_token("08")))
    assert other.status == 404


async def test_resending_the_batch_is_200_with_the_same_referrals(client: Any) -> None:
    _status, first = await post_notices(client, VALID)
    status, again = await post_notices(client, VALID)
    assert status == 207
    assert [r["status"] for r in again["results"]] == [200, 200, 200]
    assert [r["referral_id"] for r in again["results"]] == [r["referral_id"] for r in first["results"]]
    assert [(r["state"], r["area"]) for r in again["results"]] == [
        (r["state"], r["area"]) for r in first["results"]]


async def test_concurrent_resends_make_one_case_per_notice(client: Any) -> None:
    answers = await asyncio.gather(*(post_notices(client, VALID) for _ in range(8)))
    assert all(status == 207 for status, _ in answers)
    for i in range(3):
        statuses = sorted(body["results"][i]["status"] for _s, body in answers)
        assert statuses == [200] * 7 + [202]
        assert len({body["results"][i]["referral_id"] for _s, body in answers}) == 1


async def test_invalid_notice_gets_its_own_422_naming_the_element(client: Any) -> None:
    status, body = await post_notices(client, WITH_INVALID)
    assert status == 207
    results = body["results"]
    assert [r["status"] for r in results] == [202, 422, 202]
    assert [r["index"] for r in results] == [0, 1, 2]
    bad = results[1]
    assert bad["kela_reference"] == "KELA-2025-000202"
    assert "referral_id" not in bad
    assert [e["loc"] for e in bad["errors"]] == [["Ilmoitus", 1, "Asiakas", "Henkilotunnus"]]
    assert all(set(e) == {"loc", "msg", "type"} for e in bad["errors"])
    text = json.dumps(body, ensure_ascii=False)
    for secret in ("010170-999S", "010170-999R", "280290-9662", "Liisa", "Virheellinen"):
        assert secret not in text
    assert not {"input", "ctx", "url"} & walk_keys(body)
    urgent = await get_case(client, results[0]["referral_id"])
    assert urgent["kind"] == "urgent_assistance" and urgent["urgency"] == "urgent"


def one_notice(**client_parts: str) -> bytes:
    referral = Referral.model_validate(referral_body("KELA-T-UNK", municipality_code="837"))
    raw = render_notice_batch([referral]).decode()
    for element, value in client_parts.items():
        start, end = raw.index(f"<{element}>"), raw.index(f"</{element}>")
        raw = raw[:start] + f"<{element}>{value}" + raw[end:]
    return raw.encode()


async def test_unknown_municipality_is_422_at_kotikuntakoodi(client: Any) -> None:
    unknown = one_notice(Kotikuntakoodi="999")
    batch = VALID.replace(b"</Ilmoitusera>", unknown.split(b"<Ilmoitusera", 1)[1].split(b">", 1)[1])
    status, body = await post_notices(client, batch)
    assert status == 207
    results = body["results"]
    assert [r["status"] for r in results] == [202, 202, 202, 422]
    assert results[3]["errors"] == [{"loc": ["Ilmoitus", 3, "Asiakas", "Kotikuntakoodi"],
                                     "msg": "unknown municipality code (not in the Statistics Finland "
                                            "classification)", "type": "unknown_municipality"}]
    assert results[3]["kela_reference"] == "KELA-T-UNK"


async def test_aland_without_route_is_202_unroutable_in_area_91(client: Any) -> None:
    status, body = await post_notices(client, one_notice(Kotikuntakoodi="478"))
    assert status == 207
    (result,) = body["results"]
    assert (result["status"], result["state"], result["area"]) == (202, "unroutable", "91")
    feed = await (await client.get("/v1/updates", headers=auth(KELA_TOKEN))).json()
    assert [(i["type"], i["referral_id"]) for i in feed["items"]] == [
        ("unroutable", result["referral_id"])]


async def test_a_notice_and_the_same_referral_as_json_are_one_referral(client: Any) -> None:
    _status, body = await post_notices(client, VALID)
    for result, referral in zip(body["results"], sample_referrals(), strict=True):
        status, out = await post_referral(client, without_broker_fields(referral))
        assert status == 200, out
        assert out == {"referral_id": result["referral_id"], "state": result["state"],
                       "area": result["area"]}


async def test_a_json_referral_then_the_same_notice_is_200(client: Any) -> None:
    body = referral_body("KELA-J-1", municipality_code="564")
    status, created = await post_referral(client, body)
    assert status == 202
    raw = render_notice_batch([Referral.model_validate(body)])
    status, out = await post_notices(client, raw)
    assert status == 207
    (result,) = out["results"]
    assert (result["status"], result["referral_id"]) == (200, created["referral_id"])


async def test_same_reference_with_another_body_is_409_for_that_notice(client: Any) -> None:
    await post_notices(client, VALID)
    changed = VALID.replace(b"<Sukunimi>Esimerkki</Sukunimi>", b"<Sukunimi>Muutettu</Sukunimi>")
    status, body = await post_notices(client, changed)
    assert status == 207
    assert [r["status"] for r in body["results"]] == [200, 409, 200]
    assert body["results"][1]["error"]["code"] == "conflict"


async def test_same_reference_from_another_kela_party_is_a_new_case(client: Any) -> None:
    _s, first = await post_notices(client, VALID)
    _s, other = await post_notices(client, VALID, token=KELA2_TOKEN)
    assert [r["status"] for r in other["results"]] == [202, 202, 202]
    assert {r["referral_id"] for r in other["results"]}.isdisjoint(
        {r["referral_id"] for r in first["results"]})


async def test_broker_fields_in_a_notice_are_overwritten(client: Any) -> None:
    given_id = str(uuid.uuid4())
    raw = VALID.replace(b"<KelanViite>KELA-2025-000101</KelanViite>",
                        b"<KelanViite>KELA-2025-000101</KelanViite>"
                        + f"<LaheteId>{given_id}</LaheteId>".encode()
                        + b"<Vastaanotettu>2000-01-01T00:00:00Z</Vastaanotettu>")
    _s, body = await post_notices(client, raw)
    result = body["results"][0]
    assert result["status"] == 202 and result["referral_id"] != given_id
    case = await get_case(client, result["referral_id"])
    assert case["referral"]["referral_id"] == result["referral_id"]
    received = dt.datetime.fromisoformat(case["referral"]["received_at"])
    assert received > dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    # The same notice without the broker's fields is the same referral.
    _s, again = await post_notices(client, VALID)
    assert (again["results"][0]["status"], again["results"][0]["referral_id"]) == (
        200, result["referral_id"])


@pytest.mark.parametrize("sample", ["billion_laughs.xml", "external_entity.xml", "deeply_nested.xml"])
async def test_hostile_documents_are_400_and_the_service_stays_healthy(client: Any, sample: str) -> None:
    status, body = await post_notices(client, (SAMPLES / sample).read_bytes())
    assert status == 400, body
    assert body["error"]["code"] == "malformed_request"
    for content in ("lol", "passwd", "xxe", "KELA-2025"):
        assert content not in body["error"]["message"]
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    status, _body = await post_notices(client, VALID)
    assert status == 207


@pytest.mark.parametrize("raw", [
    b"", b"<", b"not xml at all", b"\xff\xfe\x00<", f'<Ilmoitusera xmlns="{NAMESPACE}"/>'.encode(),
    b"<Ilmoitusera/>", f'<Ilmoitusera xmlns="{NAMESPACE}" versio="2"><Ilmoitus/></Ilmoitusera>'.encode(),
])
async def test_unusable_batches_are_400(client: Any, raw: bytes) -> None:
    status, body = await post_notices(client, raw)
    assert status == 400, body
    assert body["error"]["code"] == "malformed_request"


async def test_batch_over_1_mib_is_413(client: Any) -> None:
    padding = b"<!--" + b"x" * (1024 * 1024) + b"-->"
    status, body = await post_notices(client, VALID.replace(b"<Ilmoitusera", padding + b"<Ilmoitusera", 1))
    assert status == 413, body
    assert body["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/octet-stream"])
async def test_other_content_types_are_415(client: Any, content_type: str) -> None:
    status, body = await post_notices(client, VALID, content_type=content_type)
    assert status == 415, body
    assert body["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("content_type", ["text/xml", "application/xml; charset=utf-8"])
async def test_xml_content_types_are_accepted(client: Any, content_type: str) -> None:
    status, body = await post_notices(client, VALID, content_type=content_type)
    assert status == 207 and [r["status"] for r in body["results"]] == [202, 202, 202]


@pytest.mark.parametrize(("token", "expected"), [
    (None, 401), ("no-such-token", 401), (ADMIN_TOKEN, 403), (intake_token("08"), 403),
])
async def test_only_kela_may_send_notices(client: Any, token: str | None, expected: int) -> None:
    status, body = await post_notices(client, VALID, token=token)
    assert status == expected, body
    feed = await (await client.get("/v1/updates", headers=auth(KELA_TOKEN))).json()
    assert feed["items"] == []
    # Nothing was created: sending the batch as Kela now creates all three.
    _s, created = await post_notices(client, VALID)
    assert [r["status"] for r in created["results"]] == [202, 202, 202]


async def test_notices_xsd_is_served_as_xml(client: Any) -> None:
    r = await client.get("/v1/schema/kela-notices.xsd")
    assert r.status == 200
    assert r.content_type == "application/xml"
    body = await r.read()
    assert body == notices_xsd()
    assert NAMESPACE.encode() in body and b"Ilmoitusera" in body


async def test_metrics_count_xml_notices_and_rejections(client: Any) -> None:
    await post_notices(client, WITH_INVALID)
    text = await (await client.get("/metrics")).text()
    assert 'handoff_referrals_received_total{channel="xml",kind="urgent_assistance"} 1.0' in text
    assert 'handoff_validation_rejections_total{channel="xml"} 1.0' in text


async def test_a_kela_reference_holding_an_identity_code_is_not_echoed(client: Any) -> None:
    """`kela_reference` in the 207 names Kela's reference back, but never a code it holds: for an
    accepted notice and for a refused one, in any case."""
    code = hetu_with(dt.date(1970, 1, 1), "-", 999)  # 010170-999R
    references = [code, f"REF-{code.lower()}", f"{code}X1"]
    raw = VALID.decode()
    for i, reference in enumerate(references):
        raw = raw.replace(f"KELA-2025-00010{i + 1}", reference)
    # The third notice also gets an unknown municipality: a 422 result still names its reference.
    third = raw.index("<Ilmoitus>", raw.index(references[2]) - 200)
    start = raw.index("<Kotikuntakoodi>", third)
    end = raw.index("</Kotikuntakoodi>", start)
    raw = raw[:start] + "<Kotikuntakoodi>999" + raw[end:]
    status, body = await post_notices(client, raw.encode())
    assert status == 207, body
    text = json.dumps(body, ensure_ascii=False)
    assert code.casefold() not in text.casefold(), text
    statuses = [r["status"] for r in body["results"]]
    assert statuses[:2] == [202, 202] and 422 in statuses, statuses
    assert all(r["kela_reference"] is None or "<redacted>" in r["kela_reference"]
               for r in body["results"][:3]), body["results"]
