"""Kela's JSON referral body: 400-class MalformedBody apart from 422-class SchemaError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.kela import MalformedBody, parse_referral_json
from adapters.kela.notices_json import MALFORMED_CODES
from schemas import Kind, Referral, SchemaError, Urgency

HETU = "010170-999R"
BAD_HETU = "010170-999S"


def body(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kela_reference": "KELA-J-1",
        "kind": "application_transfer",
        "client": {
            "personal_id": HETU,
            "first_names": "Olli",
            "last_name": "Oikeellinen",
            "language": "fi",
            "municipality_code": "091",
        },
        "needs": ["income"],
        "sent_at": "2025-03-05T17:00:00+02:00",
    }
    data.update(changes)
    return data


def encode(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


def malformed(raw: bytes) -> MalformedBody:
    with pytest.raises(MalformedBody) as info:
        parse_referral_json(raw)
    assert info.value.code in MALFORMED_CODES
    return info.value


def test_valid_body() -> None:
    ref = parse_referral_json(encode(body()))
    assert isinstance(ref, Referral)
    assert ref.kind is Kind.APPLICATION_TRANSFER
    assert ref.client.personal_id == HETU


def test_rules_of_the_common_schema_apply() -> None:
    ref = parse_referral_json(encode(body(kind="urgent_assistance", urgency="normal")))
    assert ref.urgency is Urgency.URGENT
    with pytest.raises(SchemaError) as info:
        parse_referral_json(encode(body(kind="support_need")))
    assert info.value.errors[0]["loc"] == ["consent", "given"]


def test_schema_errors_name_the_field_and_never_the_code() -> None:
    data = body()
    data["client"]["personal_id"] = BAD_HETU
    with pytest.raises(SchemaError) as info:
        parse_referral_json(encode(data))
    assert info.value.errors == [{
        "loc": ["client", "personal_id"],
        "msg": "personal identity code has a wrong check character",
        "type": "value_error",
    }]
    assert BAD_HETU not in json.dumps(info.value.errors) + str(info.value)


@pytest.mark.parametrize("raw", [b"", b"{", b"{'a': 1}", b'{"a": 1,}', b"nul", b'{"a": 1} x'])
def test_invalid_json(raw: bytes) -> None:
    error = malformed(raw)
    assert error.code == "json_invalid"
    assert error.message.startswith("body is not valid JSON")


def test_invalid_json_message_gives_position_not_content() -> None:
    raw = b'{"client": {"personal_id": "' + BAD_HETU.encode() + b'" oops}}'
    error = malformed(raw)
    assert error.message == "body is not valid JSON (line 1, column 42)"
    assert BAD_HETU not in str(error)


@pytest.mark.parametrize("raw", [b"NaN", b'{"size": Infinity}', b"[-Infinity]"])
def test_non_json_constants(raw: bytes) -> None:
    assert malformed(raw).code == "json_invalid"


def test_huge_integer_literal() -> None:
    assert malformed(b'{"n": ' + b"9" * 5000 + b"}").code == "json_invalid"


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", b'{"a": "\xe4"}', "{}".encode("utf-16")])
def test_not_utf8(raw: bytes) -> None:
    error = malformed(raw)
    assert error.code == "encoding_invalid"


def test_byte_order_mark_is_tolerated() -> None:
    assert parse_referral_json(b"\xef\xbb\xbf" + encode(body())).kela_reference == "KELA-J-1"


@pytest.mark.parametrize("raw", [
    b'{"kela_reference": "A", "kela_reference": "B"}',
    b'{"client": {"personal_id": "' + HETU.encode() + b'", "personal_id": "'
    + BAD_HETU.encode() + b'"}}',
    b'{"attachments": [{"size": 1, "size": 2}]}',
])
def test_duplicate_keys_are_refused_without_naming_them(raw: bytes) -> None:
    error = malformed(raw)
    assert error.code == "json_duplicate_key"
    for secret in ("kela_reference", "personal_id", HETU, "size"):
        assert secret not in str(error)


def test_deep_nesting_is_malformed_not_a_crash() -> None:
    assert malformed(b"[" * 100_000 + b"]" * 100_000).code == "json_too_deep"
    assert malformed(b'{"a":' * 100_000 + b"1" + b"}" * 100_000).code == "json_too_deep"


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"1", b"null", b"true"])
def test_json_that_is_not_an_object_is_a_schema_error(raw: bytes) -> None:
    with pytest.raises(SchemaError) as info:
        parse_referral_json(raw)
    assert info.value.errors == [
        {"loc": [], "msg": "body must be a JSON object", "type": "model_type"}]


def test_malformed_body_is_a_value_error_but_not_a_schema_error() -> None:
    error = malformed(b"{")
    assert isinstance(error, ValueError)
    assert not isinstance(error, SchemaError)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=20), st.sampled_from([HETU, BAD_HETU, "support_need", "091"])),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.sampled_from(["kind", "client", "personal_id", "needs", "sent_at",
                                         "kela_reference", "x"]) | st.text(max_size=8),
                        children, max_size=6),
    ),
    max_leaves=30,
)


def _mutations(data: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = sorted(data)
    return st.dictionaries(st.sampled_from(keys), json_values, max_size=4).map(
        lambda changes: {**data, **changes})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=512),
    json_values.map(lambda v: json.dumps(v).encode()),
    _mutations(body()).map(lambda v: json.dumps(v).encode()),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
))
def test_fuzz_parse_referral_json_raises_only_schema_error_or_malformed_body(raw: bytes) -> None:
    try:
        ref = parse_referral_json(raw)
    except MalformedBody as exc:
        assert exc.code in MALFORMED_CODES
    except SchemaError as exc:
        for error in exc.errors:
            assert set(error) == {"loc", "msg", "type"}
            assert BAD_HETU not in error["msg"] and HETU not in error["msg"]
    else:
        assert isinstance(ref, Referral)
