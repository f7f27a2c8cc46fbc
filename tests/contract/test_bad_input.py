"""Bad input on `POST /v1/referrals` (DESIGN § 4, § 7, § 10): the full table, on both stores.

Every 422 must have the `{"errors": [{loc, msg, type}]}` shape, name the field in `loc`, never echo
the identity code that was sent, and carry no pydantic `input`/`ctx`. Transport-level refusals
(400, 401, 403, 413, 415) and the idempotency rules are here too; none of them may be a 500.

The 422 table is grouped by theme; each group runs its rows against one app per store and reports
every failing row at once, so one broken rule does not hide the others.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
import yarl
from structlog.testing import capture_logs

from broker.store.tables import cases as cases_table
from tests.helpers.app import (
    ADMIN_TOKEN,
    KELA2_TOKEN,
    KELA_TOKEN,
    auth,
    base_settings,
    intake_token,
    services_of,
)
from tests.helpers.support import (
    CHECK_CHARS,
    MUNICIPALITY_OF_AREA,
    SENT_AT,
    assert_safe_422,
    case_events,
    error_locs,
    get_case,
    hetu_with,
    new_case,
    post_referral,
    referral_body,
    reply_body,
)

MIB = 1024 * 1024
HETU = hetu_with(dt.date(1985, 3, 14), "-", 923)  # the valid code of the base body


def base(kind: str = "support_need", kela_reference: str = "BAD-1") -> dict[str, Any]:
    return referral_body(kela_reference, kind=kind, personal_id=HETU)


def raw_hetu(ddmmyy: str, sign: str, individual: str) -> str:
    """An identity code with a check character that is right for its digits (date unchecked)."""
    return f"{ddmmyy}{sign}{individual}{CHECK_CHARS[int(ddmmyy + individual) % 31]}"


def _wrong_check(code: str) -> str:
    return code[:-1] + ("A" if code[-1] != "A" else "B")


# Digits of other scripts that int() reads as ASCII ones (and that `\d` matches).
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))


def _lowercase_code() -> str:
    # Sign and check character are both letters here ("140305A900S"), so lowercasing changes both.
    code = raw_hetu("140305", "A", "900")
    assert code[-1].isalpha()
    return code.lower()


# --- the 422 table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    id: str
    mutate: Callable[[dict[str, Any]], Any]
    loc: list[Any]
    kind: str = "support_need"


def set_at(path: list[Any], value: Any) -> Callable[[dict[str, Any]], Any]:
    def mutate(body: dict[str, Any]) -> None:
        target: Any = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = copy.deepcopy(value)
    return mutate


def delete_at(path: list[Any]) -> Callable[[dict[str, Any]], Any]:
    def mutate(body: dict[str, Any]) -> None:
        target: Any = body
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


@dataclass(frozen=True)
class Whole:
    """A mutation's answer when the whole body is replaced (by a list, null, ...)."""

    value: Any


def replace_with(value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda _body: Whole(copy.deepcopy(value))


PID = ["client", "personal_id"]

GROUPS: dict[str, list[Bad]] = {
    "identity_code": [
        Bad("wrong_check_char", set_at(PID, _wrong_check(HETU)), PID),
        Bad("impossible_date_31_feb", set_at(PID, raw_hetu("310290", "-", "923")), PID),
        Bad("impossible_date_29_feb_2001", set_at(PID, raw_hetu("290201", "A", "931")), PID),
        Bad("impossible_month_13", set_at(PID, raw_hetu("011385", "-", "931")), PID),
        Bad("impossible_date_29_feb_1900", set_at(PID, raw_hetu("290200", "-", "931")), PID),
        Bad("impossible_day_00", set_at(PID, raw_hetu("000385", "-", "931")), PID),
        Bad("unknown_century_sign_G", set_at(PID, raw_hetu("140385", "G", "923")), PID),
        Bad("unknown_century_sign_Z", set_at(PID, raw_hetu("140385", "Z", "923")), PID),
        Bad("lowercase", set_at(PID, _lowercase_code()), PID),
        Bad("fullwidth_digits", set_at(PID, HETU.translate(FULLWIDTH)), PID),
        Bad("arabic_indic_digits", set_at(PID, HETU.translate(ARABIC_INDIC)), PID),
        Bad("one_fullwidth_digit", set_at(PID, HETU[:2] + HETU[2].translate(FULLWIDTH) + HETU[3:]), PID),
        Bad("too_short", set_at(PID, HETU[:-1]), PID),
        Bad("too_long", set_at(PID, HETU + "0"), PID),
        Bad("individual_number_000", set_at(PID, raw_hetu("140385", "-", "000")), PID),
        Bad("not_a_string", set_at(PID, 1403859235), PID),
        Bad("empty", set_at(PID, ""), PID),
        Bad("missing", delete_at(PID), PID),
    ],
    "municipality_and_kind_rules": [
        Bad("municipality_000", set_at(["client", "municipality_code"], "000"),
            ["client", "municipality_code"]),
        Bad("municipality_999", set_at(["client", "municipality_code"], "999"),
            ["client", "municipality_code"]),
        Bad("municipality_two_digits", set_at(["client", "municipality_code"], "91"),
            ["client", "municipality_code"]),
        Bad("municipality_as_number", set_at(["client", "municipality_code"], 837),
            ["client", "municipality_code"]),
        Bad("municipality_fullwidth", set_at(["client", "municipality_code"], "837".translate(FULLWIDTH)),
            ["client", "municipality_code"]),
        Bad("municipality_arabic_indic", set_at(["client", "municipality_code"],
                                                "091".translate(ARABIC_INDIC)),
            ["client", "municipality_code"]),
        Bad("support_need_without_consent_object", delete_at(["consent"]), ["consent", "given"]),
        Bad("support_need_consent_not_given", set_at(["consent"], {"given": False}),
            ["consent", "given"]),
        Bad("support_need_consent_given_missing", set_at(["consent"], {"method": "oral"}),
            ["consent", "given"]),
        Bad("without_consent_missing_justification", delete_at(["justification"]),
            ["justification"], kind="support_need_without_consent"),
        Bad("without_consent_blank_justification", set_at(["justification"], "   "),
            ["justification"], kind="support_need_without_consent"),
        Bad("without_consent_but_consent_given",
            set_at(["consent"], {"given": True, "method": "oral"}), ["consent", "given"],
            kind="support_need_without_consent"),
    ],
    "enums": [
        Bad("kind", set_at(["kind"], "support"), ["kind"]),
        Bad("urgency", set_at(["urgency"], "very_urgent"), ["urgency"]),
        Bad("needs_item", set_at(["needs"], ["housing", "spaceship"]), ["needs", 1]),
        Bad("needs_not_a_list", set_at(["needs"], "housing"), ["needs"]),
        Bad("consent_method", set_at(["consent", "method"], "telepathy"), ["consent", "method"]),
        Bad("schema_version", set_at(["schema_version"], "2"), ["schema_version"]),
        Bad("language_uppercase", set_at(["client", "language"], "FI"), ["client", "language"]),
        Bad("language_three_letters", set_at(["client", "language"], "fin"),
            ["client", "language"]),
        Bad("language_name", set_at(["client", "language"], "suomi"), ["client", "language"]),
    ],
    "text_limits": [
        Bad("description_4001", set_at(["description"], "x" * 4001), ["description"]),
        Bad("justification_4001", set_at(["justification"], "x" * 4001), ["justification"],
            kind="support_need_without_consent"),
        Bad("kela_reference_empty", set_at(["kela_reference"], ""), ["kela_reference"]),
        Bad("kela_reference_spaces", set_at(["kela_reference"], "K 1"), ["kela_reference"]),
        Bad("kela_reference_129", set_at(["kela_reference"], "K" * 129), ["kela_reference"]),
        Bad("first_names_empty", set_at(["client", "first_names"], ""),
            ["client", "first_names"]),
    ],
    "wrong_types": [
        Bad("interpreter_needed_yes", set_at(["client", "interpreter_needed"], "yes"),
            ["client", "interpreter_needed"]),
        Bad("interpreter_needed_1", set_at(["client", "interpreter_needed"], 1),
            ["client", "interpreter_needed"]),
        Bad("sent_at_number", set_at(["sent_at"], 5), ["sent_at"]),
        Bad("client_list", set_at(["client"], []), ["client"]),
        Bad("client_string", set_at(["client"], "Testi Testaaja"), ["client"]),
        Bad("kela_reference_number", set_at(["kela_reference"], 17), ["kela_reference"]),
        Bad("consent_given_string", set_at(["consent", "given"], "true"), ["consent", "given"]),
        Bad("attachments_object", set_at(["attachments"], {}), ["attachments"]),
        Bad("body_is_a_list", replace_with([]), []),
        Bad("body_is_null", replace_with(None), []),
    ],
    "extra_fields": [
        Bad("top_level", set_at(["favourite_colour"], "blue"), ["favourite_colour"]),
        Bad("in_client", set_at(["client", "nickname"], "Testi"), ["client", "nickname"]),
        Bad("in_consent", set_at(["consent", "witness"], "h-100"), ["consent", "witness"]),
        Bad("in_kela", set_at(["kela", "desk"], "3"), ["kela", "desk"]),
        Bad("in_attachment", set_at(["attachments"], [{
            "filename": "a.pdf", "media_type": "application/pdf", "sha256": "0" * 64, "size": 1,
            "url": "https://example.invalid/a.pdf"}]), ["attachments", 0, "url"]),
    ],
    "missing_fields": [
        Bad("kela_reference", delete_at(["kela_reference"]), ["kela_reference"]),
        Bad("kind", delete_at(["kind"]), ["kind"]),
        Bad("client", delete_at(["client"]), ["client"]),
        Bad("sent_at", delete_at(["sent_at"]), ["sent_at"]),
        Bad("client_first_names", delete_at(["client", "first_names"]),
            ["client", "first_names"]),
        Bad("client_last_name", delete_at(["client", "last_name"]), ["client", "last_name"]),
        Bad("client_language", delete_at(["client", "language"]), ["client", "language"]),
        Bad("client_municipality_code", delete_at(["client", "municipality_code"]),
            ["client", "municipality_code"]),
    ],
    "datetimes": [
        Bad("sent_at_naive", set_at(["sent_at"], "2026-01-02T10:00:00"), ["sent_at"]),
        Bad("sent_at_date_only", set_at(["sent_at"], "2026-01-02"), ["sent_at"]),
        Bad("sent_at_garbage", set_at(["sent_at"], "yesterday"), ["sent_at"]),
        Bad("consent_given_at_naive", set_at(["consent", "given_at"], "2026-01-02T09:00:00"),
            ["consent", "given_at"]),
    ],
}


def _bad_body(row: Bad) -> Any:
    body = base(row.kind, f"BAD-{row.id}")  # a reference per row: one accepted row hides no other
    replaced = row.mutate(body)
    return replaced.value if isinstance(replaced, Whole) else body


def _sent_codes(body: Any) -> list[str]:
    codes = [HETU]
    if isinstance(body, dict) and isinstance(body.get("client"), dict):
        pid = body["client"].get("personal_id")
        if isinstance(pid, str) and len(pid) >= 6:
            codes.append(pid)
    return codes


async def _metric(client: Any, name: str, labels: str) -> float:
    r = await client.get("/metrics")
    for line in (await r.text()).splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("group", list(GROUPS))
async def test_bad_referral_is_422_naming_the_field(make_client, store_url, group: str) -> None:
    client = await make_client(base_settings(store_url))
    problems: list[str] = []
    sent: list[str] = []
    rejected = 0
    with capture_logs() as logs:
        for row in GROUPS[group]:
            body = _bad_body(row)
            sent += _sent_codes(body)
            r = await client.post("/v1/referrals", data=json.dumps(body),
                                  headers={**auth(KELA_TOKEN), "Content-Type": "application/json"})
            rejected += r.status == 422
            try:
                out = await assert_safe_422(r, secrets=_sent_codes(body))
            except AssertionError as exc:
                problems.append(f"{row.id}: {exc}")
                continue
            if row.loc not in error_locs(out):
                problems.append(f"{row.id}: loc {row.loc} not among {error_locs(out)}")
    assert not problems, "\n".join(problems)
    logged = repr(logs)
    assert not [code for code in sent if code in logged], "a log event carries an identity code"
    assert await _metric(client, "handoff_validation_rejections_total", 'channel="api"') == rejected
    # Nothing of the rejected bodies reached the ledger.
    async with services_of(client).ledger.engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(cases_table))
                ).scalar_one() == 0


def letter_checked_code() -> str:
    """A valid test code whose check character is a letter, so that it has a lower-case spelling."""
    return next(code for n in range(900, 1000)
                if (code := hetu_with(dt.date(1977, 5, 6), "-", n))[-1].isalpha())


def key_spellings(code: str) -> list[str]:
    """Keys that hold `code`: as is, with a lower-case check character, all lower-case, and with
    letters, digits or an underscore for neighbours."""
    lower_check = code[:-1] + code[-1].lower()
    return [code, lower_check, code.lower(), f"x{lower_check}", f"{lower_check}abc",
            f"9{code}9", f"_{code.lower()}_"]


def assert_no_code(text: str, codes: list[str]) -> None:
    folded = text.casefold()
    for code in codes:
        assert code.casefold() not in folded, f"the body echoes an identity code: {text[:300]}"


async def test_unknown_key_shaped_like_an_identity_code_is_not_echoed(make_client,
                                                                      store_url) -> None:
    """`loc` names an unknown field, unless the key holds an identity code (in any case, whatever
    stands next to it): on referrals, replies, answers and the admin route alike."""
    client = await make_client(base_settings(store_url))
    code = letter_checked_code()
    rid = await new_case(client, "BAD-KEY-CASE")
    problems = []
    for i, key in enumerate(key_spellings(code)):
        body = base(kela_reference=f"BAD-KEY-{i}")
        body["client"][key] = "x"
        requests: list[tuple[str, Any, str]] = [
            ("/v1/referrals", body, KELA_TOKEN),
            (f"/v1/referrals/{rid}/replies", {**reply_body("received", f"R-{i}"), key: 1},
             intake_token("08")),
            (f"/v1/referrals/{rid}/answers",
             {"answer_id": f"A-{i}", "message": "Vastaus (keksitty).", "sent_at": SENT_AT, key: 1},
             KELA_TOKEN),
            (f"/v1/admin/referrals/{rid}/route", {"area": "08", key: 1}, ADMIN_TOKEN),
        ]
        for path, data, token in requests:
            r = await client.post(path, json=data, headers=auth(token))
            text = await r.text()
            if r.status != 422 or key.casefold() in text.casefold() or code.casefold() in text.casefold():
                problems.append(f"{key!r} on {path}: {r.status} {text[:200]}")
            elif path == "/v1/referrals":
                locs = [(e["loc"][0], e["type"]) for e in json.loads(text)["errors"]]
                if locs != [("client", "extra_forbidden")]:
                    problems.append(f"{key!r}: {locs}")
    assert not problems, "\n".join(problems)


# --- what must be accepted -------------------------------------------------------------------

SIGN_BIRTHDAYS = {
    "+": dt.date(1899, 12, 31),
    "-": dt.date(1985, 3, 14), "Y": dt.date(1950, 6, 1), "X": dt.date(1961, 7, 2),
    "W": dt.date(1972, 8, 3), "V": dt.date(1983, 9, 4), "U": dt.date(1999, 10, 5),
    "A": dt.date(2000, 2, 29), "B": dt.date(2001, 1, 6), "C": dt.date(2002, 2, 7),
    "D": dt.date(2003, 3, 8), "E": dt.date(2004, 4, 9), "F": dt.date(2005, 5, 10),
}


async def test_every_century_sign_is_accepted(make_client, store_url) -> None:
    """The 2023 signs (Y X W V U, B C D E F) and the old ones (+ - A) all pass."""
    client = await make_client(base_settings(store_url))
    refused = {}
    for sign, born in SIGN_BIRTHDAYS.items():
        body = referral_body(f"SIGN-{ord(sign)}", personal_id=hetu_with(born, sign, 917))
        status, out = await post_referral(client, body)
        if status != 202:
            refused[sign] = (status, out)
    assert not refused, refused


async def test_individual_numbers_900_to_999_are_valid(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    for n in (900, 901, 950, 998, 999):
        body = referral_body(f"IND-{n}", personal_id=hetu_with(dt.date(1990, 1, 15), "-", n))
        status, out = await post_referral(client, body)
        assert status == 202, (n, out)


async def test_description_of_exactly_4000_characters_is_accepted(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    body = base()
    body["description"] = "ä" * 4000
    status, out = await post_referral(client, body)
    assert status == 202, out


async def test_content_type_with_charset_is_accepted(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    r = await client.post("/v1/referrals", data=json.dumps(base()).encode(),
                          headers={**auth(KELA_TOKEN),
                                   "Content-Type": "application/json; charset=utf-8"})
    assert r.status == 202, await r.text()


# --- refusals before validation: 400, 401, 403, 413, 415 --------------------------------------


@dataclass(frozen=True)
class Raw:
    id: str
    status: int
    data: bytes
    headers: dict[str, str]
    skip_auto: tuple[str, ...] = ()


def _valid_bytes() -> bytes:
    return json.dumps(base()).encode()


def _padded(total: int) -> bytes:
    raw = _valid_bytes()
    assert len(raw) < total
    return raw + b" " * (total - len(raw))


JSON_CT = {"Content-Type": "application/json"}

RAW_CASES = [
    Raw("malformed_json", 400, b'{"kela_reference": "K-1", ', {**auth(KELA_TOKEN), **JSON_CT}),
    Raw("not_json_at_all", 400, b"kela_reference=K-1", {**auth(KELA_TOKEN), **JSON_CT}),
    Raw("empty_body", 400, b"", {**auth(KELA_TOKEN), **JSON_CT}),
    Raw("not_utf8", 400, json.dumps(base(), ensure_ascii=False).replace(
        "Keksitty", "Keksitty ÄÖ").encode("latin-1"), {**auth(KELA_TOKEN), **JSON_CT}),
    Raw("invalid_utf8_byte", 400, b'{"kela_reference": "K-\xff"}', {**auth(KELA_TOKEN), **JSON_CT}),
    Raw("text_plain", 415, _valid_bytes(), {**auth(KELA_TOKEN), "Content-Type": "text/plain"}),
    Raw("form_urlencoded", 415, _valid_bytes(),
        {**auth(KELA_TOKEN), "Content-Type": "application/x-www-form-urlencoded"}),
    Raw("no_content_type", 415, _valid_bytes(), auth(KELA_TOKEN), ("Content-Type",)),
    Raw("one_byte_over_1_mib", 413, _padded(MIB + 1), {**auth(KELA_TOKEN), **JSON_CT}),
    Raw("no_authorization", 401, _valid_bytes(), JSON_CT),
    Raw("wrong_token", 401, _valid_bytes(), {**auth("not-a-token"), **JSON_CT}),
    Raw("basic_scheme", 401, _valid_bytes(), {"Authorization": "Basic xyz", **JSON_CT}),
    Raw("bearer_without_token", 401, _valid_bytes(), {"Authorization": "Bearer ", **JSON_CT}),
    Raw("intake_token", 403, _valid_bytes(), {**auth(intake_token("08")), **JSON_CT}),
    Raw("admin_token", 403, _valid_bytes(), {**auth(ADMIN_TOKEN), **JSON_CT}),
]


async def test_refusals_before_validation(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    problems = []
    for case in RAW_CASES:
        r = await client.post("/v1/referrals", data=case.data, headers=case.headers,
                              skip_auto_headers=case.skip_auto)
        text = await r.text()
        if r.status != case.status:
            problems.append(f"{case.id}: {r.status} {text[:200]}")
            continue
        body = json.loads(text)
        if not (isinstance(body.get("error"), dict) and {"code", "message"} <= set(body["error"])):
            problems.append(f"{case.id}: error shape {body}")
        if HETU in text:
            problems.append(f"{case.id}: echoes the identity code")
    assert not problems, "\n".join(problems)
    async with services_of(client).ledger.engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(cases_table))
                ).scalar_one() == 0


async def test_body_of_exactly_1_mib_is_accepted(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    data = _padded(MIB)
    assert len(data) == 1_048_576
    r = await client.post("/v1/referrals", data=data, headers={**auth(KELA_TOKEN), **JSON_CT})
    assert r.status == 202, await r.text()


async def test_chunked_body_over_1_mib_is_413(make_client, store_url) -> None:
    """Without a Content-Length the limit is enforced while reading."""
    client = await make_client(base_settings(store_url))
    data = _padded(MIB + 1)

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(data), 64 * 1024):
            yield data[i:i + 64 * 1024]

    r = await client.post("/v1/referrals", data=chunks(), headers={**auth(KELA_TOKEN), **JSON_CT})
    assert r.status == 413, await r.text()


# --- kind rules that change what is stored ------------------------------------------------------


async def test_urgent_assistance_is_stored_as_urgent(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    body = referral_body("URG-1", kind="urgent_assistance", urgency="normal")
    status, out = await post_referral(client, body)
    assert status == 202, out
    case = await get_case(client, out["referral_id"])
    assert case["kind"] == "urgent_assistance"
    assert case["urgency"] == "urgent"
    assert case["referral"]["urgency"] == "urgent"


async def test_application_transfer_needs_no_consent(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    body = referral_body("AT-1", kind="application_transfer")
    body.pop("consent", None)
    status, out = await post_referral(client, body)
    assert status == 202, out


# --- idempotency (§ 10) --------------------------------------------------------------------------


async def test_same_reference_same_body_is_200_with_the_first_result(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    body = referral_body("IDEM-1")
    status, first = await post_referral(client, body)
    assert status == 202, first
    status, again = await post_referral(client, body)
    assert status == 200, again
    assert again == first
    # Same meaning, keys in another order and other whitespace: still the same referral.
    reordered = json.loads(json.dumps(body, sort_keys=True))
    reordered = dict(reversed(list(reordered.items())))
    reordered["client"] = dict(reversed(list(reordered["client"].items())))
    r = await client.post("/v1/referrals", data=json.dumps(reordered, indent=3),
                          headers={**auth(KELA_TOKEN), **JSON_CT})
    assert r.status == 200, await r.text()
    assert (await r.json())["referral_id"] == first["referral_id"]
    case = await get_case(client, first["referral_id"])
    assert len(case_events(case, "received")) == 1


async def test_same_reference_different_body_is_409(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    body = referral_body("IDEM-2")
    status, first = await post_referral(client, body)
    assert status == 202, first
    changed = copy.deepcopy(body)
    changed["description"] = "Toinen kuvaus (keksitty)."
    status, out = await post_referral(client, changed)
    assert status == 409, out
    assert out["error"]["code"] == "conflict"
    assert body["client"]["personal_id"] not in json.dumps(out)
    case = await get_case(client, first["referral_id"])
    assert case["referral"]["description"] == body["description"]


async def test_same_reference_from_another_kela_party_is_a_new_case(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    body = referral_body("IDEM-3")
    status, first = await post_referral(client, body, KELA_TOKEN)
    assert status == 202, first
    status, second = await post_referral(client, body, KELA2_TOKEN)
    assert status == 202, second
    assert second["referral_id"] != first["referral_id"]
    status, again = await post_referral(client, body, KELA2_TOKEN)
    assert status == 200 and again["referral_id"] == second["referral_id"]


async def test_fifty_concurrent_sends_make_one_case(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    body = referral_body("IDEM-CONC")
    results = await asyncio.gather(*(post_referral(client, body) for _ in range(50)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] * 49 + [202], statuses
    ids = {out["referral_id"] for _, out in results}
    assert len(ids) == 1, ids
    rid = ids.pop()
    assert {(out["state"], out["area"]) for _, out in results} == {("routed", "08")}
    case = await get_case(client, rid)
    assert case["kela_reference"] == "IDEM-CONC"
    assert len(case_events(case, "received")) == 1
    assert len(case_events(case, "routed")) == 1
    async with services_of(client).ledger.engine.connect() as conn:
        n = (await conn.execute(sa.select(sa.func.count()).select_from(cases_table).where(
            cases_table.c.kela_reference == "IDEM-CONC"))).scalar_one()
    assert n == 1


# --- Åland without a route (§ 5, § 10) --------------------------------------------------------------


async def test_aland_without_route_is_unroutable_in_area_91(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    body = referral_body("ALAND-1", municipality_code="478")  # Maarianhamina
    status, out = await post_referral(client, body)
    assert status == 202, out
    assert out["state"] == "unroutable" and out["area"] == "91", out
    rid = out["referral_id"]
    case = await get_case(client, rid)
    assert case["state"] == "unroutable" and case["area"] == "91"
    assert case_events(case, "unroutable")
    r = await client.get("/v1/updates", headers=auth(KELA_TOKEN))
    assert r.status == 200
    items = (await r.json())["items"]
    unroutable = [i for i in items if i["type"] == "unroutable"]
    assert len(unroutable) == 1, items
    assert unroutable[0]["referral_id"] == rid
    assert unroutable[0]["kela_reference"] == "ALAND-1"
    assert body["client"]["personal_id"] not in json.dumps(items)
    # The repeat answers with the first result: still unroutable, still area 91.
    status, again = await post_referral(client, body)
    assert status == 200 and again["state"] == "unroutable" and again["area"] == "91", again


# --- hostile input: 4xx, never 500 (issue 15) ----------------------------------------------------

DEEP_BODIES = {
    "200000_open_brackets": b"[" * 200_000,
    "5000_levels_of_arrays": b"[" * 5_000 + b"]" * 5_000,
    "5000_levels_of_objects": b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    "65_levels_of_arrays": b"[" * 65 + b"]" * 65,
}


def json_endpoints(rid: str) -> list[tuple[str, str]]:
    """Every route that takes a JSON body, with a token allowed to call it."""
    return [("/v1/referrals", KELA_TOKEN), (f"/v1/referrals/{rid}/replies", intake_token("08")),
            (f"/v1/referrals/{rid}/answers", KELA_TOKEN),
            (f"/v1/admin/referrals/{rid}/route", ADMIN_TOKEN)]


async def assert_client_error(resp: Any, *, statuses: tuple[int, ...] = (400, 422),
                              codes: tuple[str, ...] = ()) -> dict[str, Any]:
    """A 4xx in one of the API's two error shapes, echoing none of `codes`."""
    text = await resp.text()
    assert resp.status in statuses, (resp.status, text[:300])
    assert_no_code(text, list(codes))
    body: dict[str, Any] = json.loads(text)
    if "errors" in body:
        for item in body["errors"]:
            assert {"loc", "msg", "type"} <= set(item), item
    else:
        assert {"code", "message"} <= set(body["error"]), body
    return body


async def test_deep_json_is_a_4xx_naming_the_body_on_every_json_endpoint(make_client,
                                                                         store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "DEEP-1")
    problems = []
    for path, token in json_endpoints(rid):
        for name, raw in DEEP_BODIES.items():
            r = await client.post(path, data=raw, headers={**auth(token), **JSON_CT})
            try:
                body = await assert_client_error(r)
            except AssertionError as exc:
                problems.append(f"{path} {name}: {exc}")
                continue
            if "body" not in json.dumps(body):
                problems.append(f"{path} {name}: the error does not name the body: {body}")
    assert not problems, "\n".join(problems)
    # Honest nesting is untouched, and the service still takes referrals.
    status, out = await post_referral(client, referral_body("DEEP-AFTER"))
    assert status == 202, out


# Characters str.isdigit() or int() take that are not ASCII digits: superscripts, fullwidth,
# Arabic-Indic, Devanagari, and a mix with ASCII digits.
UNICODE_NUMBERS = ["\u00b2", "\u00b9\u2070", "3".translate(FULLWIDTH), "10".translate(FULLWIDTH),
                   "3".translate(ARABIC_INDIC), "\u0967\u0966", "1\u00b2", "30".translate(ARABIC_INDIC),
                   "5\u0663"]


async def test_unicode_digits_in_numbers_from_the_url_are_refused(make_client, store_url) -> None:
    """Only ASCII digits are numbers: `limit` is 422 naming it, a dead-letter id 404 (no such id),
    a cursor 422, a statistics month 422."""
    client = await make_client(base_settings(store_url))
    lists = [("/v1/inbox", intake_token("08")), ("/v1/updates", KELA_TOKEN),
             ("/v1/admin/dead-letters", ADMIN_TOKEN)]
    problems = []

    async def expect(method: str, url: str, token: str, status: int, loc: list[str] | None) -> None:
        r = await client.request(method, url, headers=auth(token))
        text = await r.text()
        if r.status != status:
            problems.append(f"{method} {url}: {r.status} {text[:200]}")
        elif loc is not None and loc not in error_locs(json.loads(text)):
            problems.append(f"{method} {url}: {loc} not named: {text[:200]}")

    for value in UNICODE_NUMBERS:
        quoted = urllib.parse.quote(value)
        for path, token in lists:
            await expect("GET", f"{path}?limit={quoted}", token, 422, ["query", "limit"])
        await expect("POST", f"/v1/admin/dead-letters/{quoted}/replay", ADMIN_TOKEN, 404, None)
        cursor = base64.urlsafe_b64encode(f"u:{value}".encode()).decode().rstrip("=")
        await expect("GET", f"/v1/updates?after={cursor}", KELA_TOKEN, 422, ["query", "after"])
        await expect("GET", f"/v1/statistics?from=2026-0{quoted}&to=2026-03", ADMIN_TOKEN, 422,
                     ["query", "from"])
        await expect("GET", f"/v1/statistics?from={urllib.parse.quote('2026'.translate(FULLWIDTH))}-01&to=2026-03",
                     ADMIN_TOKEN, 422, ["query", "from"])
    # ASCII digits still work.
    for path, token in lists:
        await expect("GET", f"{path}?limit=5", token, 200, None)
    assert not problems, "\n".join(problems)


def hostile_ids(rid: str) -> list[str]:
    """Percent-encoded path ids that are no referral id: NUL and other control characters, alone
    or around a real id, and Unicode look-alikes of one."""
    return ["a%00b", "%00", f"{rid}%00", f"%00{rid}", f"{rid[:8]}%00{rid[9:]}", f"{rid}%01", "%7F",
            f"{rid}%0A", "%C2%85", f"{rid.upper()}", urllib.parse.quote(rid.translate(FULLWIDTH))]


async def test_control_characters_in_path_ids_are_404(make_client, store_url) -> None:
    """A NUL byte reaches PostgreSQL as an error unless it is stopped first: every route with a
    referral id (and the dashboard's lookup) answers as for an unknown id."""
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "NUL-1")
    answer = {"answer_id": "A-nul", "message": "Vastaus (keksitty).", "sent_at": SENT_AT}
    problems = []
    for bad in hostile_ids(rid):
        calls: list[tuple[str, str, Any, str]] = [
            ("GET", f"/v1/referrals/{bad}", None, ADMIN_TOKEN),
            ("GET", f"/v1/referrals/{bad}", None, KELA_TOKEN),
            ("POST", f"/v1/referrals/{bad}/replies", reply_body("received", "R-nul"),
             intake_token("08")),
            ("POST", f"/v1/referrals/{bad}/answers", answer, KELA_TOKEN),
            ("POST", f"/v1/admin/referrals/{bad}/route", {"area": "08"}, ADMIN_TOKEN),
        ]
        if bad not in (f"{rid}%0A", rid.upper()):  # a search box: trimmed, any case, by design
            calls.append(("GET", f"/dashboard/cases?q={bad}", None, ADMIN_TOKEN))
        for method, url, data, token in calls:
            r = await client.request(method, yarl.URL(url, encoded=True), json=data,
                                     headers=auth(token))
            text = await r.text()
            if r.status not in (404, 422):
                problems.append(f"{method} {url}: {r.status} {text[:200]}")
    assert not problems, "\n".join(problems)
    # The case itself was not touched.
    assert (await get_case(client, rid))["state"] == "delivered"


async def test_kela_reference_with_control_characters_is_not_looked_up(make_client,
                                                                        store_url) -> None:
    client = await make_client(base_settings(store_url))
    await new_case(client, "REF-CTRL", wait_delivered=False)
    for q in ("REF-CTRL%00", "%00", "REF%01CTRL", "REF-CTRL%0D%0Ax"):
        r = await client.get(yarl.URL(f"/dashboard/cases?q={q}", encoded=True), headers=auth(ADMIN_TOKEN))
        assert r.status == 404, (q, r.status)
    r = await client.get("/dashboard/cases?q=REF-CTRL", headers=auth(ADMIN_TOKEN))
    assert r.status == 200


async def test_unicode_digits_in_reply_municipality_code_are_422(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "RET-UNI")
    for code in (MUNICIPALITY_OF_AREA["90"].translate(FULLWIDTH),
                 MUNICIPALITY_OF_AREA["90"].translate(ARABIC_INDIC)):
        body = {**reply_body("returned", f"R-{code}"), "suggested_municipality_code": code}
        r = await client.post(f"/v1/referrals/{rid}/replies", json=body,
                              headers=auth(intake_token("08")))
        out = await assert_safe_422(r)
        assert ["suggested_municipality_code"] in error_locs(out), out
    assert (await get_case(client, rid))["state"] == "delivered"
