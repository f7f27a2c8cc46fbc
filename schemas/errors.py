"""Validation errors as data: `{loc, msg, type}` items that never carry the offending input.

pydantic puts the rejected value in `input` (and sometimes in `ctx` and `url`); for a referral that
value can be an identity code, so only `loc`, `msg` and `type` ever leave this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

from pydantic import ValidationError

from schemas.hetu import contains_identity_code, mask_identity_codes

__all__ = ["REDACTED", "ErrorItem", "SchemaError", "error_items_from_pydantic", "redact_identity_codes",
           "safe_loc"]

REDACTED = "<redacted>"


class ErrorItem(TypedDict):
    loc: list[str | int]
    msg: str
    type: str


def _safe_msg(err: Any) -> str:
    msg = str(err.get("msg", "invalid value"))
    # pydantic's messages for custom validators start with "Value error, "; keep the reason only.
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


def _safe_loc_part(part: str | int) -> str | int:
    """An unknown key is echoed in `loc`; a key holding an identity code (in any case, with any
    neighbours) is masked whole."""
    if isinstance(part, str) and contains_identity_code(part):
        return REDACTED
    return part


def safe_loc(loc: Iterable[str | int]) -> list[str | int]:
    """A `loc` fit to leave the service: in an HTTP error body, or an `.error.json` file."""
    return [_safe_loc_part(p) for p in loc]


def redact_identity_codes(text: str) -> str:
    """`text` with anything shaped like an identity code masked, for a value the sender chose
    (a Kela reference) that an answer names back."""
    return mask_identity_codes(text, REDACTED)


def error_items_from_pydantic(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[ErrorItem]:
    items: list[ErrorItem] = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = [*prefix, *safe_loc(err["loc"])]
        items.append({"loc": loc, "msg": _safe_msg(err), "type": str(err["type"])})
    return items


class SchemaError(ValueError):
    """Input that does not fit the common schema; `errors` is safe to return to the sender."""

    def __init__(self, errors: Iterable[ErrorItem]) -> None:
        self.errors: list[ErrorItem] = list(errors)
        super().__init__(f"{len(self.errors)} validation error(s)")
