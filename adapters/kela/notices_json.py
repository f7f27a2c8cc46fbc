"""Kela's referral as a JSON body (POST /v1/referrals): bytes in, a common-schema Referral out.

Two kinds of failure, kept apart because the sender fixes them in different places:
`MalformedBody` (HTTP 400) when the bytes are not one unambiguous JSON document at all, and
`SchemaError` (HTTP 422, field-naming errors) when they are JSON but not a valid referral.

Stricter than `json.loads` on purpose:
- UTF-8 only (RFC 8259 § 8.1); a leading byte-order mark is tolerated, as § 8.1 allows.
- A repeated key in any object is refused. Parsers disagree on which copy wins (Python takes the
  last, others the first), so a gateway that checked one `personal_id` could pass on another.
- `NaN` and `Infinity` are refused: they are not JSON, whatever Python's decoder accepts.
- Nesting deeper than MAX_DEPTH arrays or objects is a MalformedBody, found by a scan before the
  decoder runs (the decoder, and everything after it that walks the value, recurses per level);
  a RecursionError from the decoder is caught as well, as a second line of defence.
The body size is the HTTP layer's to limit (413), before these bytes are read.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NoReturn

from schemas.errors import SchemaError
from schemas.models import Referral
from schemas.rules import parse_referral

__all__ = ["MALFORMED_CODES", "MAX_DEPTH", "MalformedBody", "load_json", "load_json_object",
           "parse_referral_json"]

MALFORMED_CODES: Final = ("encoding_invalid", "json_invalid", "json_duplicate_key", "json_too_deep")
# The common schema nests four levels at most; 64 leaves room for any honest body.
MAX_DEPTH: Final = 64
# A JSON string (skipped whole, so brackets inside it do not count), an opening bracket, or a
# closing one. On text that is not JSON the count may be off; the decoder refuses that text anyway.
_NESTING_TOKENS: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|([\[{])|[\]}]', re.DOTALL)


class MalformedBody(ValueError):
    """The body is not a usable JSON document; `message` never quotes it."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def _refuse_constant(_name: str) -> NoReturn:
    raise MalformedBody("json_invalid", "body is not valid JSON: NaN and Infinity are not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # The key is not named: a key is sender-chosen text and could be anything.
        raise MalformedBody("json_duplicate_key", "body has an object with a repeated key")
    return obj


def _too_deep(text: str, max_depth: int) -> bool:
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    for match in _NESTING_TOKENS.finditer(text):
        if match.group(1) is not None:
            depth += 1
            if depth > max_depth:
                return True
        elif match.group(0) in "]}":
            depth -= 1
    return False


_TOO_DEEP = f"body nests arrays or objects deeper than {MAX_DEPTH} levels"


def load_json(raw: bytes) -> Any:
    """Decode a body that must be one JSON document of any type; raise MalformedBody."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("encoding_invalid", "body is not UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if _too_deep(text, MAX_DEPTH):
        raise MalformedBody("json_too_deep", _TOO_DEEP)
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)
    except MalformedBody:
        raise
    except json.JSONDecodeError as exc:
        raise MalformedBody(
            "json_invalid", f"body is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise MalformedBody("json_too_deep", _TOO_DEEP) from None
    except ValueError:
        # e.g. an integer literal longer than Python's int conversion limit.
        raise MalformedBody("json_invalid", "body is not valid JSON") from None
    return data


def load_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a body that must be one JSON object; raise MalformedBody or SchemaError."""
    data = load_json(raw)
    if not isinstance(data, dict):
        raise SchemaError([{"loc": [], "msg": "body must be a JSON object", "type": "model_type"}])
    return data


def parse_referral_json(raw: bytes) -> Referral:
    """Turn a POST /v1/referrals body into a validated Referral (cross-field rules included)."""
    return parse_referral(load_json_object(raw))
