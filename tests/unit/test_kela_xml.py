"""Kela's XML notices: vocabulary, per-notice errors as XML paths, hostile documents, round trip.

Identity codes here are test codes (individual numbers 900-999) with correct check characters.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.kela import (
    NAMESPACE,
    NoticeBatchError,
    NoticeResult,
    notices_xsd,
    parse_notices,
    render_notice_batch,
    render_referral_xml,
)
from adapters.kela.notices_xml import (
    BATCH_ERROR_CODES,
    CONSENT_METHOD_CODES,
    DEFAULT_MAX_BYTES,
    KIND_CODES,
    MAX_ERRORS_PER_NOTICE,
    NEED_CODES,
    URGENCY_CODES,
    xml_loc,
)
from schemas import Kind, Referral, Urgency
from schemas.enums import ConsentMethod, Need
from schemas.models import Attachment, Client, Consent, KelaInfo

SAMPLES = Path(__file__).parents[1] / "samples" / "kela"
XSD = Path(__file__).parents[2] / "schemas" / "kela-notices.xsd"

HETU = "010170-999R"
BAD_HETU = "010170-999S"
OPEN = f'<Ilmoitusera xmlns="{NAMESPACE}">'
CLOSE = "</Ilmoitusera>"

CLIENT = (
    f"<Asiakas><Henkilotunnus>{HETU}</Henkilotunnus><Etunimet>Olli</Etunimet>"
    "<Sukunimi>Oikeellinen</Sukunimi><Kieli>fi</Kieli><Kotikuntakoodi>091</Kotikuntakoodi></Asiakas>"
)
BASE: dict[str, str] = {
    "KelanViite": "<KelanViite>KELA-T-1</KelanViite>",
    "Laji": "<Laji>hakemuksen_siirto</Laji>",
    "Asiakas": CLIENT,
    "Lahetetty": "<Lahetetty>2025-03-05T17:00:00+02:00</Lahetetty>",
}


def notice(attributes: str = "", **parts: str) -> str:
    """A minimal valid notice (an application transfer); parts replaced, removed ("") or added."""
    merged = {**BASE, **parts}
    return f"<Ilmoitus{attributes}>" + "".join(merged.values()) + "</Ilmoitus>"


def client(**parts: str) -> str:
    fields = {
        "Henkilotunnus": f"<Henkilotunnus>{HETU}</Henkilotunnus>",
        "Etunimet": "<Etunimet>Olli</Etunimet>",
        "Sukunimi": "<Sukunimi>Oikeellinen</Sukunimi>",
        "Kieli": "<Kieli>fi</Kieli>",
        "Kotikuntakoodi": "<Kotikuntakoodi>091</Kotikuntakoodi>",
        **parts,
    }
    return "<Asiakas>" + "".join(fields.values()) + "</Asiakas>"


def batch(*notices: str) -> bytes:
    return (OPEN + "".join(notices) + CLOSE).encode("utf-8")


def one(attributes: str = "", **parts: str) -> NoticeResult:
    [result] = parse_notices(batch(notice(attributes, **parts)))
    return result


def referral_of(**parts: str) -> Referral:
    result = one(**parts)
    assert result.errors == []
    assert result.referral is not None
    return result.referral


def only_error(result: NoticeResult) -> dict[str, Any]:
    assert result.referral is None
    assert len(result.errors) == 1, result.errors
    return dict(result.errors[0])


def batch_error(raw: bytes, **limits: int) -> NoticeBatchError:
    with pytest.raises(NoticeBatchError) as info:
        parse_notices(raw, **limits)
    return info.value


# --- Samples --------------------------------------------------------------------------------------

def test_valid_sample_batch_maps_every_field() -> None:
    results = parse_notices((SAMPLES / "valid_batch.xml").read_bytes())
    assert [r.index for r in results] == [0, 1, 2]
    assert all(r.ok and r.errors == [] for r in results)
    assert [r.kela_reference for r in results] == [
        "KELA-2025-000101", "KELA-2025-000102", "KELA-2025-000103"]
    first, second, third = (r.referral for r in results)
    assert first is not None and second is not None and third is not None

    assert first.model_dump(mode="json") == {
        "schema_version": "1",
        "kela_reference": "KELA-2025-000101",
        "referral_id": None,
        "kind": "support_need",
        "urgency": "normal",
        "client": {
            "personal_id": "150385-912E",
            "first_names": "Aino Määttä",
            "last_name": "Testinen",
            "language": "fi",
            "interpreter_needed": False,
            "phone": "+358 40 000 0001",
            "email": "aino.testinen@example.invalid",
            "address": "Esimerkkikatu 1 A 2\n00100 Helsinki",
            "municipality_code": "091",
        },
        "consent": {
            "given": True,
            "given_at": "2025-03-03T09:15:00+02:00",
            "method": "oral",
            "scope": "Tiedot saa luovuttaa sosiaalitoimen vastaanotolle.",
        },
        "justification": None,
        "needs": ["housing", "debt", "unemployment"],
        "description": "Asiakas kertoi vuokrarästeistä ja häätöuhasta; toivoo yhteydenottoa.",
        "kela": {
            "office": "Kela Helsinki Itä",
            "handler_id": "kasittelija-7f3a",
            "contact_phone": "020 000 0000",
            "decision_refs": ["TOTU-2025-55501"],
        },
        "attachments": [],
        "sent_at": "2025-03-03T09:20:00+02:00",
        "received_at": None,
    }

    # Children in another order, defaults, 2000s century sign, attachments, UTC "Z".
    assert second.kind is Kind.APPLICATION_TRANSFER
    assert second.urgency is Urgency.NORMAL
    assert second.consent is None
    assert second.client.personal_id == "051105B9279"
    assert second.client.interpreter_needed is False
    assert second.needs == [Need.INCOME, Need.YOUTH_WITHOUT_INCOME]
    assert second.kela == KelaInfo(office="Kela Tampere",
                                   decision_refs=["TOTU-2025-55502", "TOTU-2025-55503"])
    assert second.attachments == [
        Attachment(filename="täydentävä_hakemus.pdf", media_type="application/pdf",
                   sha256="ed3f9dae455ffc43c6c6ae82c705324aac7db9c3eb12ee7586efbec1e25af9cd",
                   size=48213),
        Attachment(filename="päätös.pdf", media_type="application/pdf",
                   sha256="c4becb88eebcb2b793380c29c011c723622e44a17e5b54dda1045a9b8ce3ec41",
                   size=10240),
    ]
    assert second.sent_at == datetime(2025, 3, 3, 10, 5, 30, 250000, tzinfo=UTC)

    # Without consent: justification, "0"/"1" booleans, the 2023 sign Y.
    assert third.kind is Kind.SUPPORT_NEED_WITHOUT_CONSENT
    assert third.urgency is Urgency.URGENT
    assert third.client.personal_id == "240797Y9582"
    assert third.client.interpreter_needed is True
    assert third.consent == Consent(given=False)
    assert third.justification is not None and third.justification.startswith("Asiakkaan")
    assert third.needs == [Need.VIOLENCE, Need.IMMIGRATION]
    assert third.sent_at == datetime(2025, 3, 4, 6, 0, tzinfo=UTC)


def test_batch_with_one_invalid_notice_reports_it_by_xml_path_without_the_code() -> None:
    raw = (SAMPLES / "batch_with_invalid_notice.xml").read_bytes()
    results = parse_notices(raw)
    assert [r.ok for r in results] == [True, False, True]

    assert results[0].referral is not None
    assert results[0].referral.kind is Kind.URGENT_ASSISTANCE
    assert results[0].referral.urgency is Urgency.URGENT  # written as normaali: forced urgent
    assert results[2].referral is not None
    assert results[2].referral.kind is Kind.BASIC_AMOUNT_REDUCTION

    bad = results[1]
    assert bad.index == 1
    assert bad.kela_reference == "KELA-2025-000202"
    assert bad.referral is None
    assert bad.errors == [{
        "loc": ["Ilmoitus", 1, "Asiakas", "Henkilotunnus"],
        "msg": "personal identity code has a wrong check character",
        "type": "value_error",
    }]
    text = json.dumps(bad.errors, ensure_ascii=False) + repr(bad)
    for secret in (BAD_HETU, "010170", "999S", "Liisa", "Virheellinen"):
        assert secret not in text


@pytest.mark.parametrize(
    ("sample", "code"),
    [
        ("billion_laughs.xml", "dtd_forbidden"),
        ("external_entity.xml", "dtd_forbidden"),
        ("deeply_nested.xml", "too_deep"),
    ],
)
def test_attack_samples_are_refused_as_a_batch(sample: str, code: str) -> None:
    error = batch_error((SAMPLES / sample).read_bytes())
    assert error.code == code
    for content in ("lol", "xxe", "passwd", "KELA-2025", "Kuvaus"):
        assert content not in error.message
        assert content not in str(error)


# --- Vocabulary -----------------------------------------------------------------------------------

def test_code_tables_are_one_to_one_with_the_common_schema_enums() -> None:
    for table, enum in ((KIND_CODES, Kind), (URGENCY_CODES, Urgency),
                        (CONSENT_METHOD_CODES, ConsentMethod), (NEED_CODES, Need)):
        assert sorted(m.value for m in table.values()) == sorted(m.value for m in enum)
        assert all(code.isascii() and code == code.lower() for code in table)


@pytest.mark.parametrize(("code", "kind"), list(KIND_CODES.items()))
def test_laji_codes(code: str, kind: Kind) -> None:
    parts = {"Laji": f"<Laji>{code}</Laji>"}
    if kind is Kind.SUPPORT_NEED:
        parts["Suostumus"] = "<Suostumus><Annettu>true</Annettu></Suostumus>"
    if kind is Kind.SUPPORT_NEED_WITHOUT_CONSENT:
        parts["Perustelu"] = "<Perustelu>Turvallisuus vaarassa.</Perustelu>"
    assert referral_of(**parts).kind is kind


@pytest.mark.parametrize(("code", "urgency"), list(URGENCY_CODES.items()))
def test_kiireellisyys_codes(code: str, urgency: Urgency) -> None:
    ref = referral_of(Kiireellisyys=f"<Kiireellisyys>{code}</Kiireellisyys>")
    assert ref.urgency is urgency


def test_kiireellinen_apu_is_always_urgent() -> None:
    ref = referral_of(Laji="<Laji>kiireellinen_apu</Laji>",
                      Kiireellisyys="<Kiireellisyys>normaali</Kiireellisyys>")
    assert ref.urgency is Urgency.URGENT


@pytest.mark.parametrize(("code", "method"), list(CONSENT_METHOD_CODES.items()))
def test_tapa_codes(code: str, method: ConsentMethod) -> None:
    ref = referral_of(
        Suostumus=f"<Suostumus><Annettu>true</Annettu><Tapa>{code}</Tapa></Suostumus>")
    assert ref.consent is not None and ref.consent.method is method


@pytest.mark.parametrize(("code", "need"), list(NEED_CODES.items()))
def test_tarve_codes(code: str, need: Need) -> None:
    ref = referral_of(Tarpeet=f"<Tarpeet><Tarve> {code} </Tarve></Tarpeet>")
    assert ref.needs == [need]


def test_empty_tarpeet_is_no_needs() -> None:
    assert referral_of(Tarpeet="<Tarpeet/>").needs == []


@pytest.mark.parametrize(
    ("element", "codes"),
    [("Laji", KIND_CODES), ("Kiireellisyys", URGENCY_CODES)],
)
def test_unknown_code_is_an_enum_error_listing_the_finnish_codes(
        element: str, codes: dict[str, Any]) -> None:
    error = only_error(one(**{element: f"<{element}>support_need</{element}>"}))
    assert error["loc"] == ["Ilmoitus", 0, element]
    assert error["type"] == "enum"
    assert all(code in error["msg"] for code in codes)


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("false", False), ("1", True), ("0", False), ("  true\n", True),
])
def test_booleans(text: str, value: bool) -> None:
    ref = referral_of(Asiakas=client(TulkkiTarvitaan=f"<TulkkiTarvitaan>{text}</TulkkiTarvitaan>"))
    assert ref.client.interpreter_needed is value


@pytest.mark.parametrize("text", ["yes", "kyllä", "TRUE", "True", "", "2", "on"])
def test_other_booleans_are_refused(text: str) -> None:
    error = only_error(one(
        Asiakas=client(TulkkiTarvitaan=f"<TulkkiTarvitaan>{text}</TulkkiTarvitaan>")))
    assert error == {"loc": ["Ilmoitus", 0, "Asiakas", "TulkkiTarvitaan"],
                     "msg": "must be true, false, 1 or 0", "type": "bool_parsing"}


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-03-05T17:00:00+02:00", datetime(2025, 3, 5, 15, 0, tzinfo=UTC)),
    ("2025-03-05T15:00:00Z", datetime(2025, 3, 5, 15, 0, tzinfo=UTC)),
    ("2025-03-05T15:00:00.5-01:30", datetime(2025, 3, 5, 16, 30, 0, 500000, tzinfo=UTC)),
    (" 2025-03-05T15:00:00+00:00 ", datetime(2025, 3, 5, 15, 0, tzinfo=UTC)),
])
def test_datetimes_with_offset(text: str, expected: datetime) -> None:
    ref = referral_of(Lahetetty=f"<Lahetetty>{text}</Lahetetty>")
    assert ref.sent_at == expected
    assert ref.sent_at.utcoffset() is not None


@pytest.mark.parametrize(("text", "type_"), [
    ("2025-03-05T15:00:00", "timezone_aware"),
    ("2025-02-30T15:00:00+02:00", "datetime_parsing"),
    ("2025-03-05", "datetime_parsing"),
    ("1741186800", "datetime_parsing"),
    ("5.3.2025 klo 15", "datetime_parsing"),
    ("2025-03-05T15:00:00+25:00", "datetime_parsing"),
])
def test_bad_datetimes(text: str, type_: str) -> None:
    error = only_error(one(Lahetetty=f"<Lahetetty>{text}</Lahetetty>"))
    assert error["loc"] == ["Ilmoitus", 0, "Lahetetty"]
    assert error["type"] == type_


def attachment(**parts: str) -> str:
    fields = {
        "Tiedostonimi": "<Tiedostonimi>liite.pdf</Tiedostonimi>",
        "Mediatyyppi": "<Mediatyyppi>application/pdf</Mediatyyppi>",
        "Sha256": f"<Sha256>{'a' * 64}</Sha256>",
        "Koko": "<Koko>1</Koko>",
        **parts,
    }
    return "<Liite>" + "".join(fields.values()) + "</Liite>"


@pytest.mark.parametrize("text", ["-1", "1e3", "12.0", "abc", "", "9" * 40])
def test_bad_sizes(text: str) -> None:
    bad = attachment(Koko=f"<Koko>{text}</Koko>")
    error = only_error(one(Liitteet=f"<Liitteet>{attachment()}{bad}</Liitteet>"))
    assert error["loc"] == ["Ilmoitus", 0, "Liitteet", "Liite", 1, "Koko"]
    assert error["type"] == "int_parsing"


def test_schema_errors_in_repeated_items_name_the_item() -> None:
    result = one(
        Liitteet=f"<Liitteet>{attachment()}{attachment(Sha256='<Sha256>xyz</Sha256>')}</Liitteet>",
        Kela="<Kela><Paatosviitteet><Paatosviite>ok-1</Paatosviite>"
             "<Paatosviite>ei käy</Paatosviite></Paatosviitteet></Kela>",
        Tarpeet="<Tarpeet><Tarve>asuminen</Tarve><Tarve>housing</Tarve><Tarve>muu</Tarve></Tarpeet>",
    )
    assert result.referral is None
    locs = sorted((e["loc"], e["type"]) for e in result.errors)
    assert locs == sorted([
        (["Ilmoitus", 0, "Liitteet", "Liite", 1, "Sha256"], "string_pattern_mismatch"),
        (["Ilmoitus", 0, "Kela", "Paatosviitteet", "Paatosviite", 1], "string_pattern_mismatch"),
        (["Ilmoitus", 0, "Tarpeet", "Tarve", 1], "enum"),
    ])


def test_whitespace_handling_tokens_stripped_text_kept() -> None:
    ref = referral_of(
        KelanViite="<KelanViite>\n  KELA-T-9\n</KelanViite>",
        Kuvaus="<Kuvaus>  rivi 1\n\trivi 2  </Kuvaus>",
        Asiakas=client(Kotikuntakoodi="<Kotikuntakoodi> 837 </Kotikuntakoodi>",
                       Etunimet="<Etunimet>  Olli  </Etunimet>"),
    )
    assert ref.kela_reference == "KELA-T-9"
    assert ref.description == "  rivi 1\n\trivi 2  "
    assert ref.client.municipality_code == "837"
    assert ref.client.first_names == "Olli"  # the common schema strips short texts


def test_empty_element_is_an_empty_value_not_an_absent_one() -> None:
    assert referral_of(Kuvaus="<Kuvaus/>").description == ""
    error = only_error(one(Asiakas=client(Puhelin="<Puhelin/>")))
    assert error["loc"] == ["Ilmoitus", 0, "Asiakas", "Puhelin"]


def test_cdata_and_character_references_are_text() -> None:
    ref = referral_of(Kuvaus="<Kuvaus><![CDATA[a < b & c]]> &#228;&#x00F6;</Kuvaus>")
    assert ref.description == "a < b & c äö"


# --- Per-notice errors ----------------------------------------------------------------------------

def test_xml_loc_maps_every_field_of_the_common_schema() -> None:
    def check(prefix: list[str | int], model: type[Any]) -> None:
        for name in model.model_fields:
            loc = xml_loc([*prefix, name])
            assert name not in loc, (prefix, name)
            assert all(isinstance(s, int) or s[0].isupper() or s.startswith("@") for s in loc)

    check([], Referral)
    check(["client"], Client)
    check(["consent"], Consent)
    check(["kela"], KelaInfo)
    check(["attachments", 3], Attachment)
    assert xml_loc(["needs", 2]) == ["Tarpeet", "Tarve", 2]
    assert xml_loc(["kela", "decision_refs", 0]) == ["Kela", "Paatosviitteet", "Paatosviite", 0]
    assert xml_loc(["attachments", 1, "size"]) == ["Liitteet", "Liite", 1, "Koko"]
    assert xml_loc([]) == []
    assert xml_loc(["unknown", 1]) == ["unknown", 1]


def test_missing_required_elements_are_named() -> None:
    result = one(Lahetetty="", Asiakas=client(Henkilotunnus=""))
    assert result.referral is None
    assert sorted(e["loc"] for e in result.errors) == [
        ["Ilmoitus", 0, "Asiakas", "Henkilotunnus"], ["Ilmoitus", 0, "Lahetetty"]]
    assert {e["type"] for e in result.errors} == {"missing"}
    assert result.kela_reference == "KELA-T-1"


def test_missing_client_and_kind() -> None:
    result = one(Asiakas="", Laji="")
    assert sorted(e["loc"] for e in result.errors) == [
        ["Ilmoitus", 0, "Asiakas"], ["Ilmoitus", 0, "Laji"]]


def test_cross_field_rules_point_at_the_xml_elements() -> None:
    error = only_error(one(Laji="<Laji>sosiaalihuollon_tarve</Laji>"))
    assert error["loc"] == ["Ilmoitus", 0, "Suostumus", "Annettu"]
    assert error["type"] == "consent_required"

    result = one(Laji="<Laji>sosiaalihuollon_tarve_ilman_suostumusta</Laji>",
                 Suostumus="<Suostumus><Annettu>true</Annettu></Suostumus>")
    assert sorted(e["loc"] for e in result.errors) == [
        ["Ilmoitus", 0, "Perustelu"], ["Ilmoitus", 0, "Suostumus", "Annettu"]]


@pytest.mark.parametrize(("parts", "loc"), [
    ({"Lempinimi": "<Lempinimi>x</Lempinimi>"}, ["Lempinimi"]),
    ({"Asiakas": client(Syntymaaika="<Syntymaaika>1970</Syntymaaika>")},
     ["Asiakas", "Syntymaaika"]),
    ({"Kela": "<Kela><Yksikko>x</Yksikko></Kela>"}, ["Kela", "Yksikko"]),
    ({"Tarpeet": "<Tarpeet><Tarve>muu</Tarve><Muu>x</Muu></Tarpeet>"}, ["Tarpeet", "Muu"]),
    ({"Liitteet": f"<Liitteet>{attachment(Url='<Url>x</Url>')}</Liitteet>"},
     ["Liitteet", "Liite", 0, "Url"]),
    ({"Suostumus": '<Suostumus><Annettu>1</Annettu><x:Extra xmlns:x="urn:other">1</x:Extra>'
                   "</Suostumus>"}, ["Suostumus", "{urn:other}Extra"]),
    ({"Kuvaus": '<Kuvaus xmlns="">no namespace</Kuvaus>'}, ["Kuvaus"]),
])
def test_unknown_elements_are_extra_forbidden_with_their_path(
        parts: dict[str, str], loc: list[str | int]) -> None:
    result = one(**parts)
    assert result.referral is None
    assert {"loc": ["Ilmoitus", 0, *loc], "msg": "element not permitted here",
            "type": "extra_forbidden"} in result.errors


def test_attributes() -> None:
    error = only_error(one(Asiakas=client(Kieli='<Kieli koodisto="iso">fi</Kieli>')))
    assert error["loc"] == ["Ilmoitus", 0, "Asiakas", "Kieli", "@koodisto"]
    assert error["type"] == "extra_forbidden"

    assert one(' versio="1"').ok
    error = only_error(one(' versio="2"'))
    assert error["loc"] == ["Ilmoitus", 0, "@versio"]

    xsi = ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="IlmoitusTyyppi"'
    assert one(xsi).ok  # validator hints are not data


def test_repeated_singular_element() -> None:
    error = only_error(one(Extra="<KelanViite>KELA-T-2</KelanViite>"))
    assert error == {"loc": ["Ilmoitus", 0, "KelanViite"], "msg": "element may appear only once",
                     "type": "duplicate_element"}


def test_text_where_elements_belong_and_elements_where_text_belongs() -> None:
    error = only_error(one(Asiakas=client().replace("<Kieli>", "loose text<Kieli>")))
    assert error == {"loc": ["Ilmoitus", 0, "Asiakas"],
                     "msg": "element must contain elements only, not text",
                     "type": "text_forbidden"}
    error = only_error(one(Kuvaus="<Kuvaus>a <b>lihavoitu</b></Kuvaus>"))
    assert error == {"loc": ["Ilmoitus", 0, "Kuvaus"], "msg": "element must contain text only",
                     "type": "elements_forbidden"}


def test_kela_reference_is_echoed_only_when_well_formed() -> None:
    assert one(KelanViite="").kela_reference is None
    assert one(KelanViite="<KelanViite>ei kelpaa ä</KelanViite>").kela_reference is None
    assert one(KelanViite="<KelanViite><x/></KelanViite>").kela_reference is None
    invalid_but_correlatable = one(Lahetetty="")
    assert invalid_but_correlatable.kela_reference == "KELA-T-1"


SECRET = "120456-987X"  # right shape, wrong check character


@pytest.mark.parametrize("parts", [
    {"Asiakas": client(Henkilotunnus=f"<Henkilotunnus>{SECRET}</Henkilotunnus>")},
    {"Asiakas": client(Kieli=f"<Kieli>{SECRET}</Kieli>")},
    {"Asiakas": client(Puhelin=f"<Puhelin>{SECRET}</Puhelin>")},
    {"Asiakas": client(Kotikuntakoodi=f"<Kotikuntakoodi>{SECRET}</Kotikuntakoodi>")},
    {"Asiakas": client(TulkkiTarvitaan=f"<TulkkiTarvitaan>{SECRET}</TulkkiTarvitaan>")},
    {"Lahetetty": f"<Lahetetty>{SECRET}</Lahetetty>"},
    {"Laji": f"<Laji>{SECRET}</Laji>"},
    {"Tarpeet": f"<Tarpeet><Tarve>{SECRET}</Tarve></Tarpeet>"},
    {"Liitteet": f"<Liitteet>{attachment(Koko=f'<Koko>{SECRET}</Koko>')}</Liitteet>"},
    {"Kela": f"<Kela><Paatosviitteet><Paatosviite>{SECRET} ä</Paatosviite>"
             "</Paatosviitteet></Kela>"},
    {"Perustelu": f"<Perustelu>{'x' * 4001}{SECRET}</Perustelu>"},
    {"Asiakas": client(Etunimet=f"<Etunimet>{SECRET * 30}</Etunimet>")},
])
def test_errors_never_repeat_document_values(parts: dict[str, str]) -> None:
    result = one(**parts)
    assert result.errors
    assert SECRET not in json.dumps(result.errors)
    assert SECRET[:6] not in json.dumps(result.errors)


def test_too_many_errors_are_cut() -> None:
    noise = "".join(f"<Tuntematon{i}/>" for i in range(MAX_ERRORS_PER_NOTICE * 2))
    result = one(Extra=noise)
    assert len(result.errors) == MAX_ERRORS_PER_NOTICE
    assert result.errors[-1] == {"loc": ["Ilmoitus", 0],
                                 "msg": "further errors in this notice were left out",
                                 "type": "too_many_errors"}


def test_each_notice_is_judged_alone_and_keeps_its_index() -> None:
    results = parse_notices(batch(
        notice(Lahetetty=""), notice(KelanViite="<KelanViite>B</KelanViite>"),
        notice(Laji="<Laji>x</Laji>"), notice(KelanViite="<KelanViite>D</KelanViite>"),
    ))
    assert [(r.index, r.ok) for r in results] == [(0, False), (1, True), (2, False), (3, True)]
    assert results[2].errors[0]["loc"] == ["Ilmoitus", 2, "Laji"]
    assert [r.kela_reference for r in results] == ["KELA-T-1", "B", "KELA-T-1", "D"]


def test_notice_result_is_frozen() -> None:
    result = one()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.index = 3  # type: ignore[misc]


# --- Batch-level refusals -------------------------------------------------------------------------

def test_size_limit_is_inclusive() -> None:
    head, tail = OPEN.encode() + notice().encode(), CLOSE.encode()
    exact = head + b" " * (DEFAULT_MAX_BYTES - len(head) - len(tail)) + tail
    assert len(exact) == 1_048_576
    assert parse_notices(exact)[0].ok
    assert batch_error(exact + b" ").code == "too_large"
    assert batch_error(batch(notice()), max_bytes=100).code == "too_large"


def nested(depth: int) -> bytes:
    """A batch whose deepest element sits at `depth` (the root is depth 1)."""
    xs = depth - 2  # below Ilmoitusera and Ilmoitus
    return batch("<Ilmoitus>" + "<X>" * xs + "</X>" * xs + "</Ilmoitus>")


def test_depth_limit_boundary() -> None:
    [result] = parse_notices(nested(32))
    assert result.errors[0]["type"] == "extra_forbidden"
    assert batch_error(nested(33)).code == "too_deep"
    assert batch_error(nested(5), max_depth=4).code == "too_deep"


@pytest.mark.parametrize(("raw", "code"), [
    (b"", "xml_malformed"),
    (b"not xml", "xml_malformed"),
    (OPEN.encode() + b"<Ilmoitus>", "xml_malformed"),
    (OPEN.encode() + b"<Ilmoitus><Kuvaus>&xxe;</Kuvaus></Ilmoitus>" + CLOSE.encode(),
     "xml_malformed"),
    (b'<?xml version="1.0" encoding="no-such-encoding"?>' + batch(notice()), "xml_malformed"),
    (b'<?xml version="1.0" encoding="UTF-8"?>' + b"\xff\xfe" + batch(notice()), "xml_malformed"),
    (b'<!DOCTYPE Ilmoitusera SYSTEM "http://example.invalid/x.dtd">' + batch(notice()),
     "dtd_forbidden"),
    (b'<!DOCTYPE Ilmoitusera [<!ENTITY % p SYSTEM "http://example.invalid/p">%p;]>'
     + batch(notice()), "dtd_forbidden"),
    (b"<Ilmoitusera>" + notice().encode() + b"</Ilmoitusera>", "root_invalid"),
    (f'<Ilmoitus xmlns="{NAMESPACE}"/>'.encode(), "root_invalid"),
    (f'<Ilmoitusera xmlns="{NAMESPACE}" versio="2">'.encode() + notice().encode() + CLOSE.encode(),
     "version_unsupported"),
    (f'<Ilmoitusera xmlns="{NAMESPACE}" id="x">'.encode() + notice().encode() + CLOSE.encode(),
     "batch_structure"),
    (batch(notice(), "<Muu/>"), "batch_structure"),
    (batch(notice(), "teksti"), "batch_structure"),
    (batch(), "batch_empty"),
])
def test_unusable_batches(raw: bytes, code: str) -> None:
    error = batch_error(raw)
    assert error.code == code
    assert error.code in BATCH_ERROR_CODES
    for content in ("xxe", "example.invalid", "no-such-encoding", "Muu", "teksti", "KELA-T"):
        assert content not in error.message


def test_xsi_schema_location_on_the_batch_is_allowed() -> None:
    raw = (f'<Ilmoitusera xmlns="{NAMESPACE}" versio="1" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           f'xsi:schemaLocation="{NAMESPACE} kela-notices.xsd">'
           + notice() + "<!-- kommentti --><?pi x?>" + CLOSE).encode()
    assert parse_notices(raw)[0].ok


def test_too_many_notices() -> None:
    assert len(parse_notices(batch(notice(), notice()), max_notices=2)) == 2
    error = batch_error(batch(notice(), notice(), notice()), max_notices=2)
    assert error.code == "too_many_notices"


def test_other_encodings_declared_in_the_prolog_are_read() -> None:
    text = ('<?xml version="1.0" encoding="ISO-8859-1"?>'
            + OPEN + notice(Kuvaus="<Kuvaus>Hämeenlinna</Kuvaus>") + CLOSE)
    [result] = parse_notices(text.encode("iso-8859-1"))
    assert result.referral is not None and result.referral.description == "Hämeenlinna"


# --- Rendering and round trip ---------------------------------------------------------------------

RECEIVED = datetime(2025, 3, 5, 15, 0, 1, 123456, tzinfo=UTC)


def wrap(document: bytes) -> bytes:
    """Put a rendered standalone Ilmoitus into a batch, as an integrator would."""
    declaration, body = document.split(b"\n", 1)
    assert declaration.startswith(b"<?xml")
    return OPEN.encode() + body + CLOSE.encode()


def sample_referrals() -> list[Referral]:
    results = parse_notices((SAMPLES / "valid_batch.xml").read_bytes())
    return [r.referral for r in results if r.referral is not None]


@pytest.mark.parametrize("position", [0, 1, 2])
def test_round_trip_render_then_parse(position: int) -> None:
    referral = sample_referrals()[position]
    referral_id = str(uuid.uuid4())
    document = render_referral_xml(referral, referral_id=referral_id, received_at=RECEIVED)
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Ilmoitus ')
    [result] = parse_notices(wrap(document))
    assert result.errors == []
    assert result.referral == referral.model_copy(
        update={"referral_id": uuid.UUID(referral_id), "received_at": RECEIVED})


def test_rendered_document_carries_broker_fields_in_finnish() -> None:
    referral = sample_referrals()[0].model_copy(update={"referral_id": uuid.uuid4()})
    referral_id = "3f1c2a4e-9b7d-4c1e-8a2f-0d9e8b7c6a51"
    helsinki = timezone(timedelta(hours=2))
    text = render_referral_xml(referral, referral_id=referral_id,
                               received_at=RECEIVED.astimezone(helsinki)).decode()
    assert f"<LaheteId>{referral_id}</LaheteId>" in text
    assert "<Vastaanotettu>2025-03-05T17:00:01.123456+02:00</Vastaanotettu>" in text
    assert "<Laji>sosiaalihuollon_tarve</Laji>" in text
    assert "<Tapa>suullinen</Tapa>" in text
    assert "<Tarve>tyottomyys</Tarve>" in text
    assert "support_need" not in text and "housing" not in text


def test_round_trip_of_awkward_text() -> None:
    awkward = "  alku\r\nrivi <b> & \"lainaus\" 'yksi' ]]> \ttab ✓ 𝄞 loppu  "
    referral = sample_referrals()[1].model_copy(
        update={"description": awkward, "justification": ""})
    document = render_referral_xml(referral, referral_id=str(uuid.uuid4()), received_at=RECEIVED)
    [result] = parse_notices(wrap(document))
    assert result.referral is not None
    assert result.referral.description == awkward
    assert result.referral.justification == ""


def test_characters_xml_cannot_carry_are_replaced() -> None:
    referral = sample_referrals()[1].model_copy(update={"description": "a\x00b\x1bc\ufffed"})
    document = render_referral_xml(referral, referral_id=str(uuid.uuid4()), received_at=RECEIVED)
    [result] = parse_notices(wrap(document))
    assert result.referral is not None
    assert result.referral.description == "a\ufffdb\ufffdc\ufffdd"


def test_offsets_with_seconds_are_written_in_utc() -> None:
    odd = timezone(timedelta(hours=1, seconds=30))
    referral = sample_referrals()[1].model_copy(
        update={"sent_at": datetime(2025, 1, 1, 12, 0, tzinfo=odd)})
    [result] = parse_notices(render_notice_batch([referral]))
    assert result.referral is not None and result.referral.sent_at == referral.sent_at


def test_render_notice_batch_round_trip() -> None:
    referrals = sample_referrals()
    results = parse_notices(render_notice_batch(referrals))
    assert [r.referral for r in results] == referrals


def test_render_refuses_naive_time_and_non_uuid_id() -> None:
    referral = sample_referrals()[0]
    with pytest.raises(ValueError, match="timezone-aware"):
        render_referral_xml(referral, referral_id=str(uuid.uuid4()),
                            received_at=datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        render_referral_xml(referral, referral_id="not-a-uuid", received_at=RECEIVED)


def test_a_kela_batch_may_carry_broker_fields_and_the_http_layer_must_overwrite_them() -> None:
    ref = referral_of(LaheteId="<LaheteId>3f1c2a4e-9b7d-4c1e-8a2f-0d9e8b7c6a51</LaheteId>",
                      Vastaanotettu="<Vastaanotettu>2025-01-01T00:00:00Z</Vastaanotettu>")
    assert ref.referral_id == uuid.UUID("3f1c2a4e-9b7d-4c1e-8a2f-0d9e8b7c6a51")
    assert ref.received_at == datetime(2025, 1, 1, tzinfo=UTC)


# --- XML Schema -----------------------------------------------------------------------------------

def test_notices_xsd_is_the_shipped_file() -> None:
    assert notices_xsd() == XSD.read_bytes()


def full_referral() -> Referral:
    """Every optional field set, so that the rendering shows every element of the vocabulary."""
    base = sample_referrals()[0]
    return base.model_copy(update={
        "justification": "perustelu",
        "attachments": sample_referrals()[1].attachments,
        "referral_id": uuid.uuid4(),
        "received_at": RECEIVED,
    })


def test_samples_and_renderings_are_valid_against_the_xsd() -> None:
    etree = pytest.importorskip("lxml.etree")
    schema = etree.XMLSchema(etree.fromstring(XSD.read_bytes()))
    documents = {
        "valid_batch": (SAMPLES / "valid_batch.xml").read_bytes(),
        # the bad check character is beyond what a pattern can check: valid for the XSD
        "invalid_notice": (SAMPLES / "batch_with_invalid_notice.xml").read_bytes(),
        "rendered": render_referral_xml(full_referral(), referral_id=str(uuid.uuid4()),
                                        received_at=RECEIVED),
        "rendered_batch": render_notice_batch(sample_referrals()),
        "wrapped": wrap(render_referral_xml(sample_referrals()[2], referral_id=str(uuid.uuid4()),
                                            received_at=RECEIVED)),
        "minimal": batch(notice()),
    }
    for name, raw in documents.items():
        assert schema.validate(etree.fromstring(raw)), (name, str(schema.error_log))
    for bad in (batch(notice(Laji="<Laji>support_need</Laji>")), batch(),
                batch(notice(Extra="<Tuntematon/>"))):
        assert not schema.validate(etree.fromstring(bad))


def test_xsd_and_parser_agree_on_vocabulary() -> None:
    etree = pytest.importorskip("lxml.etree")
    xs = "{http://www.w3.org/2001/XMLSchema}"
    tree = etree.fromstring(XSD.read_bytes())
    declared = {e.get("name") for e in tree.iter(f"{xs}element") if e.get("name")}
    rendered = etree.fromstring(render_referral_xml(
        full_referral(), referral_id=str(uuid.uuid4()), received_at=RECEIVED))
    used = {etree.QName(e).localname for e in rendered.iter()}
    assert declared == used | {"Ilmoitusera"}

    def enumeration(type_name: str) -> set[str]:
        [simple] = [t for t in tree.iter(f"{xs}simpleType") if t.get("name") == type_name]
        return {e.get("value") for e in simple.iter(f"{xs}enumeration")}

    assert enumeration("LajiKoodi") == set(KIND_CODES)
    assert enumeration("KiireellisyysKoodi") == set(URGENCY_CODES)
    assert enumeration("TapaKoodi") == set(CONSENT_METHOD_CODES)
    assert enumeration("TarveKoodi") == set(NEED_CODES)


# --- Fuzz -----------------------------------------------------------------------------------------

NAMES = [
    "Ilmoitus", "KelanViite", "LaheteId", "Laji", "Kiireellisyys", "Asiakas", "Henkilotunnus",
    "Etunimet", "Sukunimi", "Kieli", "TulkkiTarvitaan", "Puhelin", "Sahkoposti", "Osoite",
    "Kotikuntakoodi", "Suostumus", "Annettu", "AnnettuAika", "Tapa", "Laajuus", "Perustelu",
    "Tarpeet", "Tarve", "Kuvaus", "Kela", "Toimisto", "KasittelijaId", "Yhteyspuhelin",
    "Paatosviitteet", "Paatosviite", "Liitteet", "Liite", "Tiedostonimi", "Mediatyyppi", "Sha256",
    "Koko", "Lahetetty", "Vastaanotettu", "Tuntematon",
]
VALUES = [
    HETU, BAD_HETU, "true", "0", "kyllä", "2025-03-05T17:00:00+02:00", "2025-03-05T17:00:00",
    "091", "fi", *KIND_CODES, *NEED_CODES, *URGENCY_CODES, *CONSENT_METHOD_CODES, "a" * 64, "12",
    "-1", "", " ", "&amp;", "&#x1F600;", "<![CDATA[x]]>", "<!-- c -->", "\u200b",
]
FRAGMENTS = [
    OPEN, CLOSE, "<Ilmoitus>", "</Ilmoitus>", "<", ">", "</", "/>", "&", ";", '"', "=",
    '<?xml version="1.0"?>', '<?xml version="1.0" encoding="utf-16"?>', "<!DOCTYPE a>",
    "<!ENTITY e 'x'>", "<![CDATA[", "]]>", "<!--", "-->", 'versio="1"', 'versio="9"',
    'xmlns:x="urn:x"', "x:", "\x00", "&#0;", "\ufeff", *(f"<{n}>" for n in NAMES),
    *(f"</{n}>" for n in NAMES), *VALUES,
]

text_value = st.one_of(
    st.sampled_from(VALUES),
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn")), max_size=12).map(
        lambda s: s.replace("&", "&amp;").replace("<", "&lt;")),
)
element = st.recursive(
    st.tuples(st.sampled_from(NAMES), text_value).map(lambda t: f"<{t[0]}>{t[1]}</{t[0]}>"),
    lambda children: st.tuples(st.sampled_from(NAMES), st.lists(children, max_size=5)).map(
        lambda t: f"<{t[0]}>{''.join(t[1])}</{t[0]}>"),
    max_leaves=40,
)
structured_batch = st.lists(
    st.one_of(st.lists(element, max_size=12).map(
                  lambda cs: "<Ilmoitus>" + "".join(cs) + "</Ilmoitus>"),
              st.builds(lambda base: notice(**base), st.fixed_dictionaries(
                  {}, optional={n: element for n in ("Asiakas", "Laji", "Lahetetty", "Tarpeet",
                                                     "Suostumus", "Kela", "Liitteet")}))),
    min_size=1, max_size=4,
).map(lambda notices: batch(*notices))
xmlish = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=40).map(
    lambda parts: "".join(parts).encode("utf-8", "surrogatepass"))
VALID = (SAMPLES / "valid_batch.xml").read_bytes()
mutated = st.lists(
    st.tuples(st.integers(0, len(VALID)), st.integers(0, 8), st.binary(max_size=8)), max_size=6,
).map(lambda edits: _apply(VALID, edits))


def _apply(raw: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for at, cut, insert in edits:
        at = min(at, len(raw))
        raw = raw[:at] + insert + raw[at + cut:]
    return raw


def _check_results(results: list[NoticeResult]) -> None:
    for index, result in enumerate(results):
        assert result.index == index
        assert (result.referral is None) == bool(result.errors)
        for error in result.errors:
            assert error["loc"][:2] == ["Ilmoitus", index]
            assert set(error) == {"loc", "msg", "type"}
            assert HETU not in error["msg"] and BAD_HETU not in error["msg"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2048), xmlish, structured_batch, mutated))
def test_fuzz_parse_notices_raises_only_notice_batch_error(raw: bytes) -> None:
    try:
        results = parse_notices(raw)
    except NoticeBatchError as exc:
        assert exc.code in BATCH_ERROR_CODES
        return
    _check_results(results)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structured_batch)
def test_fuzz_structured_batches_always_parse_to_per_notice_results(raw: bytes) -> None:
    try:
        results = parse_notices(raw)
    except NoticeBatchError as exc:
        raise AssertionError(f"well-formed batch refused: {exc.code}") from exc
    _check_results(results)
