"""Validation errors as data: `{loc, msg, type}` items that never carry the offending input.

pydantic puts the rejected value in `input` (and sometimes in `ctx` and `url`); for a referral that
value can be an identity code, so only `loc`, `msg` and `type` ever leave this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

from pydantic import ValidationError

from schemas.hetu import contains_identity_code

__all__ = ["ErrorItem", "SchemaError", "error_items_from_pydantic"]


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
    """An unknown key is echoed in `loc`; a key shaped like an identity code is masked."""
    if isinstance(part, str) and contains_identity_code(part):
        return "<redacted>"
    return part


def error_items_from_pydantic(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[ErrorItem]:
    items: list[ErrorItem] = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = [*prefix, *(_safe_loc_part(p) for p in err["loc"])]
        items.append({"loc": loc, "msg": _safe_msg(err), "type": str(err["type"])})
    return items


class SchemaError(ValueError):
    """Input that does not fit the common schema; `errors` is safe to return to the sender."""

    def __init__(self, errors: Iterable[ErrorItem]) -> None:
        self.errors: list[ErrorItem] = list(errors)
        super().__init__(f"{len(self.errors)} validation error(s)")
