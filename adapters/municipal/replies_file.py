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
from collections.abc import Mapping, Sequence
from typing import Any, Final

from adapters.kela.notices_json import MalformedBody, load_json_object
from adapters.xml_reader import (
    DocumentError,
    Leaf,
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

_READER: Final = XmlReader(NAMESPACE)
_NS: Final = _READER.ns
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

_INTEGER: Final = re.compile(r"-?\d{1,9}", re.ASCII)


def _integer(text: str) -> object:
    value = text.strip()
    if _INTEGER.fullmatch(value) is None:
        raise BadValue("must be a whole number", "int_parsing")
    return int(value)


_LAHETE_ID: Final = "LaheteId"
# Date-times are kept as text: the common schema parses them, and the idempotency hash sees what
# was sent.
_REPLY: Final = Record("", {
    _LAHETE_ID: token("referral_id"),
    "VastausId": token("reply_id"),
    "Tila": code("status", STATUS_CODES),
    "Tyontekija": Record("worker", {
        "Nimi": text("name"),
        "Nimike": text("title"),
        "Puhelin": token("phone"),
    }),
    "Kysymys": text("question"),
    "Syy": text("reason"),
    "EhdotettuKuntakoodi": token("suggested_municipality_code"),
    "Paatos": code("decision", DECISION_CODES),
    "Lopputulos": code("outcome", OUTCOME_CODES),
    "Viesti": text("message"),
    "Lahetetty": Leaf("sent_at", checked_datetime_text),
    "LahetteenLaatu": code("referral_quality", QUALITY_CODES),
    "Havainnot": Repeated("findings", "Havainto", code("", FINDING_CODES)),
    "AsiakasPalaute": Record("client_feedback", {
        "Arvio": Leaf("rating", _integer),
        "TuliKuulluksi": boolean("heard"),
    }),
})

def reply_xml_loc(schema_loc: Sequence[str | int]) -> list[str | int]:
    """A common-schema error location as the path of the `Vastaus` element it is about."""
    return [_ROOT, *element_path(_REPLY, schema_loc)]

def file_loc(name: str, schema_loc: Sequence[str | int]) -> list[str | int]:
    """Where in the file `name` a common-schema error location points: the field itself for
    JSON (the file is the reply), the element path for XML."""
    if name.lower().endswith(".xml"):
        return reply_xml_loc(schema_loc)
    return list(schema_loc)


# --- XML: reading ---------------------------------------------------------------------------------

def _parse_xml(raw: bytes) -> tuple[str, dict[str, Any]]:
    try:
        root = parse_document(raw, max_depth=MAX_DEPTH, what="file")
    except DocumentError as exc:
        raise ReplyFileError([], exc.message, exc.code) from None
    if root.tag != _NS + _ROOT:
        raise ReplyFileError([], f"the root element must be {_ROOT} in the namespace {NAMESPACE}",
                             "root_invalid")
    path: list[str | int] = [_ROOT]
    problems = Problems(keep=50)
    version = root.get("versio")
    if version is not None and version.strip() != _VERSION:
        raise ReplyFileError([_ROOT, "@versio"], f"this service reads version {_VERSION}",
                             "version_unsupported")
    _READER.check_attributes(root, path, problems, version=_VERSION)
    data = _READER.record(root, _REPLY, path, problems)
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
