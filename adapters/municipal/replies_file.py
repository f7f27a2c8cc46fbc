"""Reply files from municipal intakes that only export files: bytes in, (referral_id, reply) out.

An intake reached by `files` delivery (DESIGN § 5) answers by dropping one file per reply into its
replies directory (the broker's scanner, `broker.delivery.file_replies`, does the I/O). Two formats:

JSON (`*.json`): a reply in the common schema v1 with one extra, required top-level field,
`referral_id` (the broker's id of the case, as in the referral file's name and envelope). It is taken
out before the reply is validated, so the rest is exactly the body of
`POST /v1/referrals/{referral_id}/replies`. The same strictness as Kela's JSON applies: UTF-8 only
(a BOM is tolerated), no repeated keys, no NaN/Infinity.

XML (`*.xml`): one `Vastaus` document in the namespace `urn:kela:handoff:vastaus:1`, in the style of
Kela's notices (`adapters/kela/README.md`): ASCII element names and codes (ä -> a, ö -> o), children
in any order, no attributes except the optional `versio="1"` (and `xsi:*` validator hints), tokens
trimmed and free text taken as written, an empty element is an empty string. DTDs, entities and
external references are refused (defusedxml), and so is nesting deeper than 8 levels.

    Vastaus @versio="1"?            one Reply
      LaheteId                      referral_id (the case; required, not part of the reply)
      VastausId                     reply_id
      Tila                          status (STATUS_CODES)
      Tyontekija ?                  worker (the designated worker, omatyontekija)
        Nimi / Nimike ? / Puhelin ?     worker.name / worker.title / worker.phone
      Kysymys ?                     question          (Tila lisatietoja_pyydetty)
      Syy ?                         reason            (Tila palautettu)
      EhdotettuKuntakoodi ?         suggested_municipality_code (3 digits)
      Paatos ?                      decision (DECISION_CODES; Tila paatos_tehty)
      Lopputulos ?                  outcome (OUTCOME_CODES; Tila suljettu)
      Viesti ?                      message
      Lahetetty                     sent_at (xs:dateTime with a UTC offset)
      LahetteenLaatu ?              referral_quality (QUALITY_CODES)
      Havainnot ? / Havainto *      findings (FINDING_CODES)
      AsiakasPalaute ?              client_feedback
        Arvio / TuliKuulluksi ?         rating (1-5) / heard (true/false/1/0)

`parse_reply_file` only reads the file; the case's rules (kind fit, required fields per status, state
machine) are applied by the broker, as for the HTTP API, and their errors are pointed back at the
file's own names with `file_loc`. Errors never quote the file: it is personal data.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, TypeAlias

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

from adapters.kela.notices_json import MalformedBody, load_json_object
from adapters.xml_values import BadValue, checked_datetime_text, parse_boolean, parse_token
from schemas.enums import Decision, Finding, Outcome, ReferralQuality, ReplyStatus
from schemas.errors import ErrorItem, SchemaError

__all__ = [
    "DECISION_CODES", "FINDING_CODES", "MALFORMED_TYPES", "NAMESPACE", "OUTCOME_CODES",
    "QUALITY_CODES", "STATUS_CODES", "ReplyFileError", "file_loc", "parse_reply_file",
    "reply_xml_loc",
]

NAMESPACE: Final = "urn:kela:handoff:vastaus:1"
MAX_DEPTH: Final = 8

# Error types meaning "this is not a readable JSON/XML document at all" (HTTP's 400, not 422).
MALFORMED_TYPES: Final = frozenset({
    "file_type", "encoding_invalid", "json_invalid", "json_duplicate_key", "json_too_deep",
    "xml_malformed", "dtd_forbidden", "entities_forbidden", "external_reference_forbidden",
    "too_deep", "root_invalid", "version_unsupported",
})

_NS: Final = "{" + NAMESPACE + "}"
_XSI: Final = "{http://www.w3.org/2001/XMLSchema-instance}"
_ROOT: Final = "Vastaus"
_VERSION: Final = "1"

STATUS_CODES: Final[Mapping[str, ReplyStatus]] = {
    "vastaanotettu": ReplyStatus.RECEIVED,
    "tyontekija_nimetty": ReplyStatus.ASSIGNED,
    "asiakkaaseen_oltu_yhteydessa": ReplyStatus.CLIENT_CONTACTED,
    "arviointi_aloitettu": ReplyStatus.ASSESSMENT_STARTED,
    "lisatietoja_pyydetty": ReplyStatus.INFO_REQUESTED,
    "palautettu": ReplyStatus.RETURNED,
    "paatos_tehty": ReplyStatus.DECISION_MADE,
    "suljettu": ReplyStatus.CLOSED,
}
DECISION_CODES: Final[Mapping[str, Decision]] = {
    "myonnetty": Decision.GRANTED,
    "osittain_myonnetty": Decision.PARTLY_GRANTED,
    "hylatty": Decision.DENIED,
}
OUTCOME_CODES: Final[Mapping[str, Outcome]] = {
    "palvelut_jarjestetty": Outcome.SERVICES_ARRANGED,
    "asiakas_kieltaytyi": Outcome.CLIENT_DECLINED,
    "ei_tarvetta": Outcome.NO_NEED,
    "ei_tavoitettu": Outcome.UNREACHABLE,
    "muuttanut": Outcome.MOVED,
    "muu": Outcome.OTHER,
}
QUALITY_CODES: Final[Mapping[str, ReferralQuality]] = {
    "riittava": ReferralQuality.SUFFICIENT,
    "puutteellinen": ReferralQuality.INSUFFICIENT_INFORMATION,
    "tarpeeton": ReferralQuality.NOT_NEEDED,
}
FINDING_CODES: Final[Mapping[str, Finding]] = {
    "asuntopula": Finding.HOUSING_SHORTAGE,
    "etuusaukko": Finding.BENEFIT_GAP,
    "palveluaukko": Finding.SERVICE_GAP,
    "pitka_odotusaika": Finding.LONG_WAITING_TIME,
    "kielimuuri": Finding.LANGUAGE_BARRIER,
    "digitaalinen_este": Finding.DIGITAL_BARRIER,
    "yhteistyon_puute": Finding.COOPERATION_GAP,
    "muu": Finding.OTHER,
}


class ReplyFileError(ValueError):
    """The file cannot be read as a reply. `loc` names the field or element (never its value).

    `errors` holds this error first and any others found in the same file; `malformed` tells a
    file that is not a usable document at all (400) from one whose content is wrong (422).
    """

    def __init__(self, loc: Sequence[str | int], msg: str, type_: str, *,
                 more: Sequence[ErrorItem] = ()) -> None:
        self.loc: list[str | int] = list(loc)
        self.msg = msg
        self.type = type_
        self.errors: list[ErrorItem] = [{"loc": self.loc, "msg": msg, "type": type_}, *more]
        super().__init__(f"{type_}: {msg}")

    @property
    def malformed(self) -> bool:
        return self.type in MALFORMED_TYPES


_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                          re.ASCII)


def _referral_id(value: object, loc: list[str | int]) -> str:
    if value is None:
        raise ReplyFileError(loc, "the referral id of the case is required", "missing")
    if not isinstance(value, str) or _UUID.fullmatch(value.strip()) is None:
        raise ReplyFileError(loc, "must be the referral id (a UUID) of the case", "uuid_parsing")
    return value.strip().lower()


def parse_reply_file(name: str, raw: bytes) -> tuple[str, dict[str, Any]]:
    """Read one reply file: `(referral_id, reply)`, the reply as JSON-compatible data.

    The format comes from the name's suffix (`.json` or `.xml`, any case). Raises ReplyFileError.
    """
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix == "json":
        return _parse_json(raw)
    if suffix == "xml":
        return _parse_xml(raw)
    raise ReplyFileError([], "a reply file name must end in .json or .xml", "file_type")


# --- JSON -----------------------------------------------------------------------------------------

def _parse_json(raw: bytes) -> tuple[str, dict[str, Any]]:
    try:
        data = load_json_object(raw)
    except MalformedBody as exc:
        raise ReplyFileError([], exc.message.replace("body", "file", 1), exc.code) from None
    except SchemaError as exc:
        first, *rest = exc.errors
        raise ReplyFileError(first["loc"], "a reply file must hold one JSON object",
                             first["type"], more=rest) from None
    referral_id = _referral_id(data.pop("referral_id", None), ["referral_id"])
    problems = _unicode_problems(data)
    if problems:
        first, *rest = problems
        raise ReplyFileError(first["loc"], first["msg"], first["type"], more=rest)
    return referral_id, data


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unicode_problems(data: dict[str, Any]) -> list[ErrorItem]:
    """Strings JSON can spell (`"\\ud800"`) but Unicode text cannot hold: lone surrogates.

    Refused here, naming the field, so that nothing downstream meets a string it cannot encode.
    Iterative, because the document may nest as deep as the JSON decoder allowed.
    """
    problems: list[ErrorItem] = []
    stack: list[tuple[list[str | int], Any]] = [([], data)]
    while stack and len(problems) < 50:
        loc, value = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                problems.append({"loc": loc, "msg": "must be valid Unicode text (a lone surrogate "
                                 "is not a character)", "type": "string_unicode"})
        elif isinstance(value, dict):
            for key, item in value.items():
                if _encodable(key):
                    stack.append(([*loc, key], item))
                else:
                    problems.append({"loc": loc, "msg": "object keys must be valid Unicode text",
                                     "type": "string_unicode"})
        elif isinstance(value, list):
            stack.extend(([*loc, i], item) for i, item in enumerate(value))
    return sorted(problems, key=lambda p: [str(part) for part in p["loc"]])


# --- XML: vocabulary ------------------------------------------------------------------------------

_BadValue = BadValue
_INTEGER: Final = re.compile(r"-?\d{1,9}", re.ASCII)


def _text(text: str) -> object:
    return text


_token = parse_token
_boolean = parse_boolean
# Date-times are kept as text: the common schema parses them, and the idempotency hash sees what
# was sent.
_datetime = checked_datetime_text


def _integer(text: str) -> object:
    value = text.strip()
    if _INTEGER.fullmatch(value) is None:
        raise _BadValue("must be a whole number", "int_parsing")
    return int(value)


def _code(table: Mapping[str, Enum]) -> Callable[[str], object]:
    allowed = ", ".join(table)

    def parse(text: str) -> object:
        member = table.get(text.strip())
        if member is None:
            raise _BadValue(f"must be one of: {allowed}", "enum")
        return member.value

    return parse


@dataclass(frozen=True)
class _Leaf:
    key: str
    parse: Callable[[str], object]


@dataclass(frozen=True)
class _Record:
    key: str
    fields: Mapping[str, _Node]


@dataclass(frozen=True)
class _Repeated:
    key: str
    item_name: str
    item: _Leaf


_Node: TypeAlias = _Leaf | _Record | _Repeated

_LAHETE_ID: Final = "LaheteId"
_REPLY: Final = _Record("", {
    _LAHETE_ID: _Leaf("referral_id", _token),
    "VastausId": _Leaf("reply_id", _token),
    "Tila": _Leaf("status", _code(STATUS_CODES)),
    "Tyontekija": _Record("worker", {
        "Nimi": _Leaf("name", _text),
        "Nimike": _Leaf("title", _text),
        "Puhelin": _Leaf("phone", _token),
    }),
    "Kysymys": _Leaf("question", _text),
    "Syy": _Leaf("reason", _text),
    "EhdotettuKuntakoodi": _Leaf("suggested_municipality_code", _token),
    "Paatos": _Leaf("decision", _code(DECISION_CODES)),
    "Lopputulos": _Leaf("outcome", _code(OUTCOME_CODES)),
    "Viesti": _Leaf("message", _text),
    "Lahetetty": _Leaf("sent_at", _datetime),
    "LahetteenLaatu": _Leaf("referral_quality", _code(QUALITY_CODES)),
    "Havainnot": _Repeated("findings", "Havainto", _Leaf("", _code(FINDING_CODES))),
    "AsiakasPalaute": _Record("client_feedback", {
        "Arvio": _Leaf("rating", _integer),
        "TuliKuulluksi": _Leaf("heard", _boolean),
    }),
})


def reply_xml_loc(schema_loc: Sequence[str | int]) -> list[str | int]:
    """A common-schema error location as the path of the `Vastaus` element it is about."""
    out: list[str | int] = [_ROOT]
    node: _Node | None = _REPLY
    for segment in schema_loc:
        if isinstance(node, _Record) and isinstance(segment, str):
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


def file_loc(name: str, schema_loc: Sequence[str | int]) -> list[str | int]:
    """Where in the file `name` a common-schema error location points: the field itself for
    JSON (the file is the reply), the element path for XML."""
    if name.lower().endswith(".xml"):
        return reply_xml_loc(schema_loc)
    return list(schema_loc)


# --- XML: reading ---------------------------------------------------------------------------------

class _TooDeep(Exception):
    pass


class _DepthLimitedBuilder:
    """Refuses to nest deeper than the limit while expat is still reading."""

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


def _document(raw: bytes) -> ET.Element:
    parser = DefusedXMLParser(target=_DepthLimitedBuilder(MAX_DEPTH), forbid_dtd=True,
                              forbid_entities=True, forbid_external=True)
    try:
        parser.feed(raw)
        root: ET.Element = parser.close()
    except _TooDeep:
        raise ReplyFileError([], f"the document nests elements deeper than {MAX_DEPTH} levels",
                             "too_deep") from None
    except DTDForbidden:
        raise ReplyFileError([], "a document type declaration (DTD) is not allowed",
                             "dtd_forbidden") from None
    except EntitiesForbidden:
        raise ReplyFileError([], "entity declarations are not allowed", "entities_forbidden") from None
    except ExternalReferenceForbidden:
        raise ReplyFileError([], "references to external resources are not allowed",
                             "external_reference_forbidden") from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise ReplyFileError([], f"the file is not well-formed XML (line {line}, column {column})",
                             "xml_malformed") from None
    except (ValueError, LookupError):
        raise ReplyFileError([], "the file is not well-formed XML", "xml_malformed") from None
    return root


_ABSENT: Final = object()
_NAME_LIMIT: Final = 64


def _display(tag: str) -> str:
    local = tag[len(_NS):] if tag.startswith(_NS) else tag
    return local if len(local) <= _NAME_LIMIT else local[:_NAME_LIMIT] + "..."


class _Problems:
    LIMIT: Final = 50

    def __init__(self) -> None:
        self.items: list[ErrorItem] = []

    def add(self, loc: list[str | int], msg: str, type_: str) -> None:
        if len(self.items) < self.LIMIT:
            self.items.append({"loc": loc, "msg": msg, "type": type_})


def _check_attributes(elem: ET.Element, path: list[str | int], problems: _Problems) -> None:
    for name in elem.attrib:
        if not name.startswith(_XSI):
            problems.add([*path, "@" + _display(name)], "attribute not permitted", "extra_forbidden")


def _check_no_text(elem: ET.Element, path: list[str | int], problems: _Problems) -> None:
    if (elem.text or "").strip() or any((child.tail or "").strip() for child in elem):
        problems.add(path, "element must contain elements only, not text", "text_forbidden")


def _read_record(elem: ET.Element, spec: _Record, path: list[str | int],
                 problems: _Problems) -> dict[str, Any]:
    _check_no_text(elem, path, problems)
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for child in elem:
        name = _display(child.tag)
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
    _check_attributes(elem, path, problems)
    if isinstance(node, _Record):
        return _read_record(elem, node, path, problems)
    if isinstance(node, _Repeated):
        _check_no_text(elem, path, problems)
        items: list[Any] = []
        for child in elem:
            name = _display(child.tag)
            if not child.tag.startswith(_NS) or name != node.item_name:
                problems.add([*path, name], "element not permitted here", "extra_forbidden")
                continue
            value = _read_node(child, node.item, [*path, name, len(items)], problems)
            items.append(None if value is _ABSENT else value)
        return items
    if len(elem):
        problems.add(path, "element must contain text only", "elements_forbidden")
        return _ABSENT
    try:
        return node.parse(elem.text or "")
    except _BadValue as exc:
        problems.add(path, exc.msg, exc.type)
        return _ABSENT


def _parse_xml(raw: bytes) -> tuple[str, dict[str, Any]]:
    root = _document(raw)
    if root.tag != _NS + _ROOT:
        raise ReplyFileError([], f"the root element must be {_ROOT} in the namespace {NAMESPACE}",
                             "root_invalid")
    path: list[str | int] = [_ROOT]
    problems = _Problems()
    for name, value in root.attrib.items():
        if name == "versio":
            if value.strip() != _VERSION:
                raise ReplyFileError([_ROOT, "@versio"], f"this service reads version {_VERSION}",
                                     "version_unsupported")
        elif not name.startswith(_XSI):
            problems.add([_ROOT, "@" + _display(name)], "attribute not permitted", "extra_forbidden")
    data = _read_record(root, _REPLY, path, problems)
    referral_loc: list[str | int] = [_ROOT, _LAHETE_ID]
    if any(item["loc"] == referral_loc for item in problems.items):
        referral: object = None  # already reported (e.g. sent with child elements)
    else:
        referral = data.get("referral_id")
    data.pop("referral_id", None)
    try:
        referral_id = _referral_id(referral, referral_loc)
    except ReplyFileError as exc:
        if not any(item["loc"] == referral_loc for item in problems.items):
            problems.items.insert(0, exc.errors[0])
        referral_id = ""
    if problems.items:
        first, *rest = problems.items
        raise ReplyFileError(first["loc"], first["msg"], first["type"], more=rest)
    return referral_id, data
