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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final, TypeAlias

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser
from pydantic import TypeAdapter, ValidationError

from adapters.xml_values import BadValue, checked_datetime_text, parse_boolean, parse_token
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

_NS: Final = "{" + NAMESPACE + "}"
_XSI: Final = "{http://www.w3.org/2001/XMLSchema-instance}"
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


class NoticeBatchError(ValueError):
    """The batch as a whole cannot be read; no notice in it was looked at.

    `message` is written for Kela's developer and never quotes the document, because the document
    is special-category personal data and the message may end up in a log.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


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

_BadValue = BadValue
_INTEGER = re.compile(r"\d{1,15}", re.ASCII)
# Characters XML 1.0 cannot carry at all, not even as character references.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _parse_text(text: str) -> str:
    return text


_parse_token = parse_token
_parse_boolean = parse_boolean


def _parse_datetime(text: str) -> datetime:
    value = checked_datetime_text(text)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise _BadValue("is not a real date and time", "datetime_parsing") from None


def _parse_integer(text: str) -> int:
    value = text.strip()
    if _INTEGER.fullmatch(value) is None:
        raise _BadValue("must be a non-negative whole number", "int_parsing")
    return int(value)


def _render_str(value: Any) -> str:
    return str(value)


def _render_boolean(value: Any) -> str:
    return "true" if value else "false"


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

@dataclass(frozen=True)
class _Leaf:
    key: str
    parse: Callable[[str], object]
    render: Callable[[Any], str]


@dataclass(frozen=True)
class _Record:
    key: str
    fields: Mapping[str, _Node]  # XML name -> node, in the order rendered


@dataclass(frozen=True)
class _Repeated:
    key: str
    item_name: str
    item: _Leaf | _Record


_Node: TypeAlias = _Leaf | _Record | _Repeated


def _text(key: str) -> _Leaf:
    return _Leaf(key, _parse_text, _render_str)


def _token(key: str) -> _Leaf:
    return _Leaf(key, _parse_token, _render_str)


def _boolean(key: str) -> _Leaf:
    return _Leaf(key, _parse_boolean, _render_boolean)


def _datetime(key: str) -> _Leaf:
    return _Leaf(key, _parse_datetime, _render_datetime)


def _integer(key: str) -> _Leaf:
    return _Leaf(key, _parse_integer, _render_str)


def _code(key: str, table: Mapping[str, Enum]) -> _Leaf:
    allowed = ", ".join(table)
    reverse = {member.value: code for code, member in table.items()}

    def parse(text: str) -> object:
        member = table.get(text.strip())
        if member is None:
            raise _BadValue(f"must be one of: {allowed}", "enum")
        return member.value

    def render(value: Any) -> str:
        return reverse[value.value if isinstance(value, Enum) else value]

    return _Leaf(key, parse, render)


_NOTICE: Final = _Record("", {
    "KelanViite": _token("kela_reference"),
    "LaheteId": _token("referral_id"),
    "Laji": _code("kind", KIND_CODES),
    "Kiireellisyys": _code("urgency", URGENCY_CODES),
    "Asiakas": _Record("client", {
        "Henkilotunnus": _token("personal_id"),
        "Etunimet": _text("first_names"),
        "Sukunimi": _text("last_name"),
        "Kieli": _token("language"),
        "TulkkiTarvitaan": _boolean("interpreter_needed"),
        "Puhelin": _token("phone"),
        "Sahkoposti": _token("email"),
        "Osoite": _text("address"),
        "Kotikuntakoodi": _token("municipality_code"),
    }),
    "Suostumus": _Record("consent", {
        "Annettu": _boolean("given"),
        "AnnettuAika": _datetime("given_at"),
        "Tapa": _code("method", CONSENT_METHOD_CODES),
        "Laajuus": _text("scope"),
    }),
    "Perustelu": _text("justification"),
    "Tarpeet": _Repeated("needs", "Tarve", _code("", NEED_CODES)),
    "Kuvaus": _text("description"),
    "Kela": _Record("kela", {
        "Toimisto": _text("office"),
        "KasittelijaId": _token("handler_id"),
        "Yhteyspuhelin": _token("contact_phone"),
        "Paatosviitteet": _Repeated("decision_refs", "Paatosviite", _token("")),
    }),
    "Liitteet": _Repeated("attachments", "Liite", _Record("", {
        "Tiedostonimi": _text("filename"),
        "Mediatyyppi": _token("media_type"),
        "Sha256": _token("sha256"),
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
    out: list[str | int] = []
    node: _Node | None = _NOTICE
    for segment in schema_loc:
        if segment == "schema_version" and node is _NOTICE:
            out.append("@versio")
            node = None
        elif isinstance(node, _Record) and isinstance(segment, str):
            name = next((n for n, child in node.fields.items() if child.key == segment), None)
            if name is None:
                out.append(segment)
                node = None
            else:
                out.append(name)
                node = node.fields[name]
        elif isinstance(node, _Repeated) and isinstance(segment, int):
            out.extend((node.item_name, segment))
            node = node.item
        else:
            out.append(segment)
            node = None
    return out


# --- Reading --------------------------------------------------------------------------------------

class _TooDeep(Exception):
    pass


class _DepthLimitedBuilder:
    """Tree builder that refuses to go deeper than the limit while expat is still reading.

    Checking depth after the parse would let a hostile document build its whole tree first.
    """

    def __init__(self, max_depth: int) -> None:
        self._builder = ET.TreeBuilder()
        self._depth = 0
        self._max_depth = max_depth

    def start(self, tag: str, attrib: dict[str, str]) -> ET.Element:
        self._depth += 1
        if self._depth > self._max_depth:
            raise _TooDeep
        return self._builder.start(tag, attrib)

    def end(self, tag: str) -> ET.Element:
        self._depth -= 1
        return self._builder.end(tag)

    def data(self, data: str) -> None:
        self._builder.data(data)

    def close(self) -> ET.Element:
        return self._builder.close()


def _parse_document(raw: bytes, *, max_bytes: int, max_depth: int) -> ET.Element:
    if len(raw) > max_bytes:
        raise NoticeBatchError("too_large", f"the document is larger than {max_bytes} bytes")
    parser = DefusedXMLParser(
        target=_DepthLimitedBuilder(max_depth),
        forbid_dtd=True, forbid_entities=True, forbid_external=True,
    )
    try:
        parser.feed(raw)
        root: ET.Element = parser.close()
    except _TooDeep:
        raise NoticeBatchError(
            "too_deep", f"the document nests elements deeper than {max_depth} levels"
        ) from None
    except DTDForbidden:
        raise NoticeBatchError(
            "dtd_forbidden", "a document type declaration (DTD) is not allowed"
        ) from None
    except EntitiesForbidden:
        raise NoticeBatchError(
            "entities_forbidden", "entity declarations are not allowed"
        ) from None
    except ExternalReferenceForbidden:
        raise NoticeBatchError(
            "external_reference_forbidden", "references to external resources are not allowed"
        ) from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise NoticeBatchError(
            "xml_malformed", f"the document is not well-formed XML (line {line}, column {column})"
        ) from None
    except (ValueError, LookupError):
        # Unknown or multi-byte declared encodings, and other refusals of expat itself.
        raise NoticeBatchError("xml_malformed", "the document is not well-formed XML") from None
    return root


_ABSENT: Final = object()
_NAME_LIMIT: Final = 64


def _display_name(name: str) -> str:
    local = name[len(_NS):] if name.startswith(_NS) else name
    return local if len(local) <= _NAME_LIMIT else local[:_NAME_LIMIT] + "..."


class _Problems:
    """Errors found while translating one notice, before the common schema sees it."""

    def __init__(self) -> None:
        self.items: list[ErrorItem] = []

    def add(self, loc: list[str | int], msg: str, type_: str) -> None:
        # Past the cut the list is truncated anyway; keeping it short keeps a notice of a
        # hundred thousand stray elements cheap.
        if len(self.items) <= MAX_ERRORS_PER_NOTICE:
            self.items.append({"loc": loc, "msg": msg, "type": type_})

    def covers(self, loc: Sequence[str | int]) -> bool:
        # A schema error at or below a spot already reported is the same fault seen again
        # (a value that could not be read is left out and then reported "missing").
        return any(list(loc[: len(item["loc"])]) == item["loc"] for item in self.items)


def _check_attributes(elem: ET.Element, path: list[str | int], problems: _Problems,
                      *, versioned: bool = False) -> None:
    for name, value in elem.attrib.items():
        if name.startswith(_XSI):
            continue  # schemaLocation and friends are hints for validators, not data
        if versioned and name == "versio":
            if value.strip() != _VERSION:
                problems.add([*path, "@versio"], f"must be {_VERSION}", "literal_error")
            continue
        problems.add([*path, "@" + _display_name(name)], "attribute not permitted",
                     "extra_forbidden")


def _check_no_text(elem: ET.Element, path: list[str | int], problems: _Problems) -> None:
    if (elem.text or "").strip() or any((child.tail or "").strip() for child in elem):
        problems.add(path, "element must contain elements only, not text", "text_forbidden")


def _read_record(elem: ET.Element, spec: _Record, path: list[str | int], problems: _Problems,
                 *, versioned: bool = False) -> dict[str, Any]:
    _check_attributes(elem, path, problems, versioned=versioned)
    _check_no_text(elem, path, problems)
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for child in elem:
        name = _display_name(child.tag)
        node = spec.fields.get(name) if child.tag.startswith(_NS) else None
        child_path: list[str | int] = [*path, name]
        if node is None:
            problems.add(child_path, "element not permitted here", "extra_forbidden")
            continue
        if name in seen:
            problems.add(child_path, "element may appear only once", "duplicate_element")
            continue
        seen.add(name)
        value = _read_node(child, node, child_path, problems)
        if value is not _ABSENT:
            out[node.key] = value
    return out


def _read_node(elem: ET.Element, node: _Node, path: list[str | int], problems: _Problems) -> Any:
    if isinstance(node, _Record):
        return _read_record(elem, node, path, problems)
    if isinstance(node, _Repeated):
        _check_attributes(elem, path, problems)
        _check_no_text(elem, path, problems)
        items: list[Any] = []
        for child in elem:
            name = _display_name(child.tag)
            if not child.tag.startswith(_NS) or name != node.item_name:
                problems.add([*path, name], "element not permitted here", "extra_forbidden")
                continue
            value = _read_node(child, node.item, [*path, name, len(items)], problems)
            # A placeholder keeps later items at their own index; the schema then rejects it,
            # and that duplicate report is dropped because the spot is already covered.
            items.append(None if value is _ABSENT else value)
        return items
    _check_attributes(elem, path, problems)
    if len(elem):
        problems.add(path, "element must contain text only", "elements_forbidden")
        return _ABSENT
    try:
        return node.parse(elem.text or "")
    except _BadValue as exc:
        problems.add(path, exc.msg, exc.type)
        return _ABSENT


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
    problems = _Problems()
    data = _read_record(elem, _NOTICE, path, problems, versioned=True)
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
        elif not name.startswith(_XSI):
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


def _render_node(name: str, node: _Node, value: Any, depth: int, out: list[str]) -> None:
    pad = _INDENT * depth
    if isinstance(node, _Leaf):
        out.append(f"{pad}<{name}>{_escape(node.render(value))}</{name}>")
    elif isinstance(node, _Record):
        inner: list[str] = []
        _render_fields(node, value, depth + 1, inner)
        if inner:
            out.extend((f"{pad}<{name}>", *inner, f"{pad}</{name}>"))
    elif value:
        out.append(f"{pad}<{name}>")
        for item in value:
            _render_node(node.item_name, node.item, item, depth + 1, out)
        out.append(f"{pad}</{name}>")


def _render_fields(spec: _Record, data: Mapping[str, Any], depth: int, out: list[str]) -> None:
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
