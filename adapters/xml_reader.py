"""The reader both XML vocabularies share (Kela's notices, intakes' reply files).

A vocabulary is a mapping table of `Record`, `Repeated` and `Leaf` nodes (XML name -> model key);
`XmlReader` walks a document against it and collects `{"loc", "msg", "type"}` problems with the XML
path as `loc`, never a value from the document. `parse_document` reads the bytes with defusedxml
(DTDs, entities and external references refused) and a depth limit enforced while expat is still
reading, so a hostile document is refused before it is expanded or built.

The conventions: children in any order, each at most once; attributes refused except `xsi:*`
validator hints (and a vocabulary's own version attribute); records and lists hold elements only,
leaves text only; an empty element is an empty string, not an absent one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, TypeAlias

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

from adapters.xml_values import BadValue, parse_boolean, parse_token
from schemas.errors import ErrorItem

__all__ = [
    "ABSENT",
    "XSI",
    "DocumentError",
    "Leaf",
    "Node",
    "Problems",
    "Record",
    "Repeated",
    "XmlReader",
    "boolean",
    "code",
    "element_path",
    "parse_document",
    "text",
    "token",
]

XSI: Final = "{http://www.w3.org/2001/XMLSchema-instance}"
ABSENT: Final = object()  # a value that could not be read (its problem is already recorded)
_NAME_LIMIT: Final = 64


# --- mapping tables -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Leaf:
    key: str
    parse: Callable[[str], object]
    render: Callable[[Any], str] = str


@dataclass(frozen=True)
class Record:
    key: str
    fields: Mapping[str, Node]  # XML name -> node, in the order rendered


@dataclass(frozen=True)
class Repeated:
    key: str
    item_name: str
    item: Leaf | Record


Node: TypeAlias = Leaf | Record | Repeated


def _as_text(text: str) -> str:
    return text


def text(key: str) -> Leaf:
    """Free text, taken as written so that it survives a round trip."""
    return Leaf(key, _as_text)


def token(key: str) -> Leaf:
    """An identifier: surrounding whitespace ignored."""
    return Leaf(key, parse_token)


def boolean(key: str) -> Leaf:
    return Leaf(key, parse_boolean, lambda value: "true" if value else "false")


def code(key: str, table: Mapping[str, Enum]) -> Leaf:
    """A code of the vocabulary, read as the enum value it stands for (and written back)."""
    allowed = ", ".join(table)
    reverse = {member.value: name for name, member in table.items()}

    def parse(text: str) -> object:
        member = table.get(text.strip())
        if member is None:
            raise BadValue(f"must be one of: {allowed}", "enum")
        return member.value

    def render(value: Any) -> str:
        return reverse[value.value if isinstance(value, Enum) else value]

    return Leaf(key, parse, render)


def element_path(spec: Record, schema_loc: Sequence[str | int], *,
                 attributes: Mapping[str, str] | None = None) -> list[str | int]:
    """A common-schema error location as the path of the element (or `@attribute` of the root,
    from `attributes`: model key -> XML name) it is about. A segment the table does not know
    (there should be none) is passed through rather than dropped."""
    out: list[str | int] = []
    node: Node | None = spec
    for segment in schema_loc:
        if node is spec and attributes and isinstance(segment, str) and segment in attributes:
            out.append(attributes[segment])
            node = None
        elif isinstance(node, Record) and isinstance(segment, str):
            name = next((n for n, child in node.fields.items() if child.key == segment), None)
            if name is None:
                out.append(segment)
                node = None
            else:
                out.append(name)
                node = node.fields[name]
        elif isinstance(node, Repeated) and isinstance(segment, int):
            out.extend((node.item_name, segment))
            node = node.item
        else:
            out.append(segment)
            node = None
    return out


# --- the document ---------------------------------------------------------------------------------

class DocumentError(ValueError):
    """The bytes are not a document this service reads; `message` never quotes them."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


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


def parse_document(raw: bytes, *, max_depth: int, what: str = "document") -> ET.Element:
    """The root element, or DocumentError (codes too_deep, dtd_forbidden, entities_forbidden,
    external_reference_forbidden, xml_malformed); `what` names the input in the messages."""
    parser = DefusedXMLParser(target=_DepthLimitedBuilder(max_depth), forbid_dtd=True,
                              forbid_entities=True, forbid_external=True)
    try:
        parser.feed(raw)
        root: ET.Element = parser.close()
    except _TooDeep:
        raise DocumentError("too_deep",
                            f"the document nests elements deeper than {max_depth} levels") from None
    except DTDForbidden:
        raise DocumentError("dtd_forbidden",
                            "a document type declaration (DTD) is not allowed") from None
    except EntitiesForbidden:
        raise DocumentError("entities_forbidden", "entity declarations are not allowed") from None
    except ExternalReferenceForbidden:
        raise DocumentError("external_reference_forbidden",
                            "references to external resources are not allowed") from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise DocumentError(
            "xml_malformed", f"the {what} is not well-formed XML (line {line}, column {column})"
        ) from None
    except (ValueError, LookupError):
        # Unknown or multi-byte declared encodings, and other refusals of expat itself.
        raise DocumentError("xml_malformed", f"the {what} is not well-formed XML") from None
    return root


# --- reading against a table ----------------------------------------------------------------------

@dataclass
class Problems:
    """Errors found while reading one record, at most `keep` of them (the caller decides what a
    longer list becomes)."""

    keep: int
    items: list[ErrorItem] = field(default_factory=list)

    def add(self, loc: list[str | int], msg: str, type_: str) -> None:
        if len(self.items) < self.keep:
            self.items.append({"loc": loc, "msg": msg, "type": type_})

    def covers(self, loc: Sequence[str | int]) -> bool:
        # A schema error at or below a spot already reported is the same fault seen again
        # (a value that could not be read is left out and then reported "missing").
        return any(list(loc[: len(item["loc"])]) == item["loc"] for item in self.items)


class XmlReader:
    """Reads elements of one namespace against a mapping table."""

    def __init__(self, namespace: str) -> None:
        self.ns = "{" + namespace + "}"

    def display(self, tag: str) -> str:
        """An element or attribute name as errors show it: local, and cut if absurdly long."""
        local = tag[len(self.ns):] if tag.startswith(self.ns) else tag
        return local if len(local) <= _NAME_LIMIT else local[:_NAME_LIMIT] + "..."

    def check_attributes(self, elem: ET.Element, path: list[str | int], problems: Problems, *,
                         version: str | None = None) -> None:
        """Attributes are refused, except `xsi:*` hints and, given `version`, `versio` with it."""
        for name, value in elem.attrib.items():
            if name.startswith(XSI):
                continue  # schemaLocation and friends are hints for validators, not data
            if version is not None and name == "versio":
                if value.strip() != version:
                    problems.add([*path, "@versio"], f"must be {version}", "literal_error")
                continue
            problems.add([*path, "@" + self.display(name)], "attribute not permitted",
                         "extra_forbidden")

    @staticmethod
    def check_no_text(elem: ET.Element, path: list[str | int], problems: Problems) -> None:
        if (elem.text or "").strip() or any((child.tail or "").strip() for child in elem):
            problems.add(path, "element must contain elements only, not text", "text_forbidden")

    def record(self, elem: ET.Element, spec: Record, path: list[str | int],
               problems: Problems) -> dict[str, Any]:
        """The children of `elem` (its own attributes are the caller's) as model data."""
        self.check_no_text(elem, path, problems)
        out: dict[str, Any] = {}
        seen: set[str] = set()
        for child in elem:
            name = self.display(child.tag)
            node = spec.fields.get(name) if child.tag.startswith(self.ns) else None
            child_path: list[str | int] = [*path, name]
            if node is None:
                problems.add(child_path, "element not permitted here", "extra_forbidden")
                continue
            if name in seen:
                problems.add(child_path, "element may appear only once", "duplicate_element")
                continue
            seen.add(name)
            value = self.node(child, node, child_path, problems)
            if value is not ABSENT:
                out[node.key] = value
        return out

    def node(self, elem: ET.Element, node: Node, path: list[str | int], problems: Problems) -> Any:
        """One element, attributes checked, as model data; ABSENT when it could not be read."""
        self.check_attributes(elem, path, problems)
        if isinstance(node, Record):
            return self.record(elem, node, path, problems)
        if isinstance(node, Repeated):
            self.check_no_text(elem, path, problems)
            items: list[Any] = []
            for child in elem:
                name = self.display(child.tag)
                if not child.tag.startswith(self.ns) or name != node.item_name:
                    problems.add([*path, name], "element not permitted here", "extra_forbidden")
                    continue
                value = self.node(child, node.item, [*path, name, len(items)], problems)
                # A placeholder keeps later items at their own index; the schema then rejects it,
                # and that duplicate report is dropped because the spot is already covered.
                items.append(None if value is ABSENT else value)
            return items
        if len(elem):
            problems.add(path, "element must contain text only", "elements_forbidden")
            return ABSENT
        try:
            return node.parse(elem.text or "")
        except BadValue as exc:
            problems.add(path, exc.msg, exc.type)
            return ABSENT
