"""Kela's notices as XML: a batch in, a result per notice out; one notice out for file intakes.

Kela publishes no XML schema for its notices (ilmoitus sosiaalihuollon tarpeesta, sent through
Kelmu/eTotu today), so the broker defines one in Kela's own Finnish vocabulary:
`schemas/kela-notices.xsd`, namespace `urn:kela:handoff:ilmoitus:1`. A Kela integrator maps from
the words their own system already uses; the broker maps to the common schema v1 here, in one table.

Names and codes are ASCII (ä -> a, ö -> o, as Finnish identifiers are usually spelled): XML compares
names code point by code point, so "Ilmoituserä" written in NFD, or re-encoded by a gateway that
guessed the charset, would stop matching without anyone noticing. Text content stays UTF-8.

Mapping (XML -> common schema v1; `?` = optional, `*` = repeated inside its plural wrapper):

    Ilmoitusera @versio="1"?          a batch (POST /v1/kela/notices)
      Ilmoitus @versio="1"?  *        one Referral
        KelanViite                    kela_reference
        LaheteId ?                    referral_id   (broker-assigned; in rendered documents)
        Laji                          kind          (KIND_CODES)
        Kiireellisyys ?               urgency       (URGENCY_CODES; default normaali)
        Asiakas                       client
          Henkilotunnus               client.personal_id
          Etunimet / Sukunimi         client.first_names / client.last_name
          Kieli                       client.language (ISO 639-1, not translated)
          TulkkiTarvitaan ?           client.interpreter_needed (true/false/1/0)
          Puhelin ? / Sahkoposti ?    client.phone / client.email
          Osoite ?                    client.address
          Kotikuntakoodi              client.municipality_code
        Suostumus ?                   consent
          Annettu                     consent.given (true/false/1/0)
          AnnettuAika ?               consent.given_at
          Tapa ?                      consent.method (CONSENT_METHOD_CODES)
          Laajuus ?                   consent.scope
        Perustelu ?                   justification
        Tarpeet ? / Tarve *           needs (NEED_CODES)
        Kuvaus ?                      description
        Kela ?                        kela
          Toimisto ?                  kela.office
          KasittelijaId ?             kela.handler_id
          Yhteyspuhelin ?             kela.contact_phone
          Paatosviitteet ? / Paatosviite *   kela.decision_refs
        Liitteet ? / Liite *          attachments
          Tiedostonimi / Mediatyyppi / Sha256 / Koko   filename / media_type / sha256 / size
        Lahetetty                     sent_at (xs:dateTime with a UTC offset)
        Vastaanotettu ?               received_at   (broker-assigned; in rendered documents)

A record's children may come in any order. Identifier and code elements are tokens (surrounding
whitespace ignored); free text (names, Osoite, Laajuus, Perustelu, Kuvaus, Toimisto, Tiedostonimi)
is taken as written so that it survives a round trip. An empty element is an empty string, not an
absent one: the sender said something, and the schema decides whether it is acceptable.

The document is parsed by defusedxml with DTDs, entities and external references forbidden, and
with a depth counter in the tree builder, so a hostile document is refused before it is expanded or
built.
A broken document refuses the whole batch (`NoticeBatchError`); a notice that is well-formed but
wrong gets its own errors, with `loc` as the XML path, e.g.
`["Ilmoitus", 2, "Asiakas", "Henkilotunnus"]`, so that one bad notice never blocks the others and
Kela's developer can find the element to fix.
No message, here or in the errors, ever repeats a value from the document.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from adapters.xml_reader import (
    XSI,
    DocumentError,
    Leaf,
    Node,
    Problems,
    Record,
    Repeated,
    XmlReader,
    boolean,
    code,
    element_path,
    parse_document,
    text,
    token,
)
from adapters.xml_values import BadValue, checked_datetime_text
from schemas.enums import ConsentMethod, Kind, Need, Urgency
from schemas.errors import ErrorItem, SchemaError
from schemas.models import Key, Referral
from schemas.rules import parse_referral

__all__ = [
    "BATCH_ERROR_CODES", "CONSENT_METHOD_CODES", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_NOTICES", "KIND_CODES", "MAX_ERRORS_PER_NOTICE", "NAMESPACE", "NEED_CODES",
    "URGENCY_CODES", "NoticeBatchError", "NoticeResult", "notices_xsd", "parse_notices",
    "render_notice_batch", "render_referral_xml", "xml_loc",
]

NAMESPACE: Final = "urn:kela:handoff:ilmoitus:1"
DEFAULT_MAX_BYTES: Final = 1024 * 1024
DEFAULT_MAX_DEPTH: Final = 32
DEFAULT_MAX_NOTICES: Final = 2000
# An error list bigger than this helps nobody fix a sender, and bounds the 207 body a hostile batch
# can make the broker write.
MAX_ERRORS_PER_NOTICE: Final = 50

_READER: Final = XmlReader(NAMESPACE)
_NS: Final = _READER.ns
_BATCH: Final = "Ilmoitusera"
_NOTICE_NAME: Final = "Ilmoitus"
_VERSION: Final = "1"

# --- Vocabulary -----------------------------------------------------------------------------------

KIND_CODES: Final[Mapping[str, Kind]] = {
    "sosiaalihuollon_tarve": Kind.SUPPORT_NEED,
    "sosiaalihuollon_tarve_ilman_suostumusta": Kind.SUPPORT_NEED_WITHOUT_CONSENT,
    "hakemuksen_siirto": Kind.APPLICATION_TRANSFER,
    "perusosan_alentaminen": Kind.BASIC_AMOUNT_REDUCTION,
    "kiireellinen_apu": Kind.URGENT_ASSISTANCE,
}
URGENCY_CODES: Final[Mapping[str, Urgency]] = {
    "kiireellinen": Urgency.URGENT,
    "normaali": Urgency.NORMAL,
}
CONSENT_METHOD_CODES: Final[Mapping[str, ConsentMethod]] = {
    "suullinen": ConsentMethod.ORAL,
    "kirjallinen": ConsentMethod.WRITTEN,
    "sahkoinen": ConsentMethod.ELECTRONIC,
}
NEED_CODES: Final[Mapping[str, Need]] = {
    "asuminen": Need.HOUSING,
    "toimeentulo": Need.INCOME,
    "velat": Need.DEBT,
    "paihteet": Need.SUBSTANCE_USE,
    "mielenterveys": Need.MENTAL_HEALTH,
    "tyottomyys": Need.UNEMPLOYMENT,
    "nuori_ilman_tuloja": Need.YOUTH_WITHOUT_INCOME,
    "maahanmuutto": Need.IMMIGRATION,
    "vammaisuus": Need.DISABILITY,
    "ikaantyminen": Need.OLD_AGE,
    "perhe": Need.FAMILY,
    "vakivalta": Need.VIOLENCE,
    "terveys": Need.HEALTH,
    "digitaalinen_syrjaytyminen": Need.DIGITAL_EXCLUSION,
    "muu": Need.OTHER,
}

# Batch-level refusals; the HTTP layer answers 413 for too_large and 400 for the rest.
BATCH_ERROR_CODES: Final = (
    "too_large", "xml_malformed", "dtd_forbidden", "entities_forbidden",
    "external_reference_forbidden", "too_deep", "root_invalid", "version_unsupported",
    "batch_structure", "batch_empty", "too_many_notices",
)


class NoticeBatchError(DocumentError):
    """The batch as a whole cannot be read; no notice in it was looked at.

    `message` is written for Kela's developer and never quotes the document, because the document
    is special-category personal data and the message may end up in a log.
    """



@dataclass(frozen=True)
class NoticeResult:
    """The outcome for one notice of a batch: a referral, or the errors that stopped it."""

    index: int
    kela_reference: str | None
    referral: Referral | None
    errors: list[ErrorItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.referral is not None


# --- Value conversions ----------------------------------------------------------------------------

_INTEGER = re.compile(r"\d{1,15}", re.ASCII)
# Characters XML 1.0 cannot carry at all, not even as character references.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _parse_datetime(text: str) -> datetime:
    value = checked_datetime_text(text)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise BadValue("is not a real date and time", "datetime_parsing") from None


def _parse_integer(text: str) -> int:
    value = text.strip()
    if _INTEGER.fullmatch(value) is None:
        raise BadValue("must be a non-negative whole number", "int_parsing")
    return int(value)


def _render_datetime(value: Any) -> str:
    moment = value if isinstance(value, datetime) else None
    offset = moment.utcoffset() if moment is not None else None
    if moment is None or offset is None:
        raise ValueError("date-times to render must be timezone-aware")
    if offset.total_seconds() % 60:
        # xs:dateTime offsets have no seconds; the instant is what matters.
        moment = moment.astimezone(UTC)
    return moment.isoformat()


# --- Mapping table --------------------------------------------------------------------------------

def _datetime(key: str) -> Leaf:
    return Leaf(key, _parse_datetime, _render_datetime)


def _integer(key: str) -> Leaf:
    return Leaf(key, _parse_integer)


_NOTICE: Final = Record("", {
    "KelanViite": token("kela_reference"),
    "LaheteId": token("referral_id"),
    "Laji": code("kind", KIND_CODES),
    "Kiireellisyys": code("urgency", URGENCY_CODES),
    "Asiakas": Record("client", {
        "Henkilotunnus": token("personal_id"),
        "Etunimet": text("first_names"),
        "Sukunimi": text("last_name"),
        "Kieli": token("language"),
        "TulkkiTarvitaan": boolean("interpreter_needed"),
        "Puhelin": token("phone"),
        "Sahkoposti": token("email"),
        "Osoite": text("address"),
        "Kotikuntakoodi": token("municipality_code"),
    }),
    "Suostumus": Record("consent", {
        "Annettu": boolean("given"),
        "AnnettuAika": _datetime("given_at"),
        "Tapa": code("method", CONSENT_METHOD_CODES),
        "Laajuus": text("scope"),
    }),
    "Perustelu": text("justification"),
    "Tarpeet": Repeated("needs", "Tarve", code("", NEED_CODES)),
    "Kuvaus": text("description"),
    "Kela": Record("kela", {
        "Toimisto": text("office"),
        "KasittelijaId": token("handler_id"),
        "Yhteyspuhelin": token("contact_phone"),
        "Paatosviitteet": Repeated("decision_refs", "Paatosviite", token("")),
    }),
    "Liitteet": Repeated("attachments", "Liite", Record("", {
        "Tiedostonimi": text("filename"),
        "Mediatyyppi": token("media_type"),
        "Sha256": token("sha256"),
        "Koko": _integer("size"),
    })),
    "Lahetetty": _datetime("sent_at"),
    "Vastaanotettu": _datetime("received_at"),
})

def xml_loc(schema_loc: Sequence[str | int]) -> list[str | int]:
    """Translate a common-schema error location into the XML path of the element it is about.

    Kela's developer sees their own element names, not the broker's JSON field names. A segment
    the table does not know (there should be none) is passed through rather than dropped.
    """
    return element_path(_NOTICE, schema_loc, attributes={"schema_version": "@versio"})

# --- Reading --------------------------------------------------------------------------------------

def _parse_document(raw: bytes, *, max_bytes: int, max_depth: int) -> ET.Element:
    if len(raw) > max_bytes:
        raise NoticeBatchError("too_large", f"the document is larger than {max_bytes} bytes")
    try:
        return parse_document(raw, max_depth=max_depth)
    except DocumentError as exc:
        raise NoticeBatchError(exc.code, exc.message) from None


_KEY: Final = TypeAdapter(Key)


def _safe_reference(value: object) -> str | None:
    """Echo Kela's reference back only if it is a well-formed one, so results stay correlatable
    without the broker repeating arbitrary document text."""
    if not isinstance(value, str):
        return None
    try:
        return _KEY.validate_python(value)
    except ValidationError:
        return None


def _read_notice(elem: ET.Element, index: int) -> NoticeResult:
    path: list[str | int] = [_NOTICE_NAME, index]
    # One more than is shown, so that a longer list is seen to be cut.
    problems = Problems(keep=MAX_ERRORS_PER_NOTICE + 1)
    _READER.check_attributes(elem, path, problems, version=_VERSION)
    data = _READER.record(elem, _NOTICE, path, problems)
    referral: Referral | None
    try:
        referral = parse_referral(data)
    except SchemaError as exc:
        referral = None
        schema_errors: list[ErrorItem] = [
            {"loc": [*path, *xml_loc(e["loc"])], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors
        ]
    else:
        schema_errors = []
    errors = problems.items + [e for e in schema_errors if not problems.covers(e["loc"])]
    if len(errors) > MAX_ERRORS_PER_NOTICE:
        errors = errors[: MAX_ERRORS_PER_NOTICE - 1]
        errors.append({"loc": path, "msg": "further errors in this notice were left out",
                       "type": "too_many_errors"})
    if errors:
        referral = None
    reference = referral.kela_reference if referral is not None else _safe_reference(
        data.get("kela_reference"))
    return NoticeResult(index=index, kela_reference=reference, referral=referral, errors=errors)


def parse_notices(
    raw: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_notices: int = DEFAULT_MAX_NOTICES,
) -> list[NoticeResult]:
    """Read a batch (root `Ilmoitusera`) into one result per `Ilmoitus`, in document order.

    Raises NoticeBatchError when the batch itself is unusable (size, DTD or entities, nesting,
    not well-formed, wrong root or structure); a notice with bad content is a result with errors,
    so its neighbours are still accepted.
    """
    root = _parse_document(raw, max_bytes=max_bytes, max_depth=max_depth)
    if root.tag != _NS + _BATCH:
        raise NoticeBatchError(
            "root_invalid", f"the root element must be {_BATCH} in the namespace {NAMESPACE}"
        )
    for name, value in root.attrib.items():
        if name == "versio":
            if value.strip() != _VERSION:
                raise NoticeBatchError("version_unsupported",
                                       f"this service reads version {_VERSION} of the format")
        elif not name.startswith(XSI):
            raise NoticeBatchError("batch_structure", f"{_BATCH} carries only the attribute versio")
    if (root.text or "").strip() or any(
        child.tag != _NS + _NOTICE_NAME or (child.tail or "").strip() for child in root
    ):
        raise NoticeBatchError("batch_structure",
                               f"{_BATCH} may contain only {_NOTICE_NAME} elements")
    if len(root) == 0:
        raise NoticeBatchError("batch_empty", f"the batch contains no {_NOTICE_NAME} element")
    if len(root) > max_notices:
        raise NoticeBatchError("too_many_notices",
                               f"a batch may contain at most {max_notices} notices")
    return [_read_notice(elem, index) for index, elem in enumerate(root)]


# --- Writing --------------------------------------------------------------------------------------

_INDENT: Final = "  "


def _escape(text: str) -> str:
    # XML 1.0 cannot carry control characters even escaped; replacing one in a free-text field
    # is better than handing an intake a file its importer refuses. A bare CR would become LF on
    # reading, so it is written as a character reference.
    text = _XML_INVALID.sub("\ufffd", text)
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


def _render_node(name: str, node: Node, value: Any, depth: int, out: list[str]) -> None:
    pad = _INDENT * depth
    if isinstance(node, Leaf):
        out.append(f"{pad}<{name}>{_escape(node.render(value))}</{name}>")
    elif isinstance(node, Record):
        inner: list[str] = []
        _render_fields(node, value, depth + 1, inner)
        if inner:
            out.extend((f"{pad}<{name}>", *inner, f"{pad}</{name}>"))
    elif value:
        out.append(f"{pad}<{name}>")
        for item in value:
            _render_node(node.item_name, node.item, item, depth + 1, out)
        out.append(f"{pad}</{name}>")


def _render_fields(spec: Record, data: Mapping[str, Any], depth: int, out: list[str]) -> None:
    for name, node in spec.fields.items():
        value = data.get(node.key)
        if value is not None:
            _render_node(name, node, value, depth, out)


def _notice_lines(referral: Referral, depth: int, root_attributes: str) -> list[str]:
    pad = _INDENT * depth
    lines = [f"{pad}<{_NOTICE_NAME}{root_attributes}>"]
    _render_fields(_NOTICE, referral.model_dump(mode="python"), depth + 1, lines)
    lines.append(f"{pad}</{_NOTICE_NAME}>")
    return lines


def _document(lines: Iterable[str]) -> bytes:
    return ("\n".join(('<?xml version="1.0" encoding="UTF-8"?>', *lines)) + "\n").encode("utf-8")


def render_referral_xml(referral: Referral, *, referral_id: str, received_at: datetime) -> bytes:
    """One referral as a standalone `Ilmoitus` document, for intakes that import XML files.

    The broker's `referral_id` (as `LaheteId`) and `received_at` (as `Vastaanotettu`) are written
    from the arguments, whatever the model holds, because the file is the broker's statement of
    what it received and when.
    """
    if received_at.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    stamped = referral.model_copy(
        update={"referral_id": uuid.UUID(referral_id), "received_at": received_at}
    )
    return _document(_notice_lines(stamped, 0, f' xmlns="{NAMESPACE}" versio="{_VERSION}"'))


def render_notice_batch(referrals: Iterable[Referral]) -> bytes:
    """Referrals as a batch the way Kela would send it: for the demo's simulated Kela and tests."""
    lines = [f'<{_BATCH} xmlns="{NAMESPACE}" versio="{_VERSION}">']
    for referral in referrals:
        lines.extend(_notice_lines(referral, 1, ""))
    lines.append(f"</{_BATCH}>")
    return _document(lines)


def notices_xsd() -> bytes:
    """The XML Schema served at GET /v1/schema/kela-notices.xsd, from the installed package."""
    import schemas

    return (Path(schemas.__file__).resolve().parent / "kela-notices.xsd").read_bytes()
