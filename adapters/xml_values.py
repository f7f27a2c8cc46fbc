"""Leaf-value conversions shared by the XML readers (Kela notices in, intake reply files in).

One definition of what a boolean or a date-time looks like in our XML vocabularies, so the two
formats cannot drift apart. Errors carry a message and a pydantic-style type, never the value.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["BadValue", "checked_datetime_text", "parse_boolean", "parse_token"]

_DATETIME: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?", re.ASCII)


class BadValue(Exception):
    def __init__(self, msg: str, type_: str) -> None:
        super().__init__(msg)
        self.msg = msg
        self.type = type_


def parse_token(text: str) -> str:
    return text.strip()


def parse_boolean(text: str) -> bool:
    value = text.strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise BadValue("must be true, false, 1 or 0", "bool_parsing")


def checked_datetime_text(text: str) -> str:
    """The stripped text if it has the shape YYYY-MM-DDThh:mm:ss[.ffffff] with a UTC offset."""
    value = text.strip()
    match = _DATETIME.fullmatch(value)
    if match is None:
        raise BadValue("must be an ISO 8601 date-time YYYY-MM-DDThh:mm:ss with a UTC offset",
                       "datetime_parsing")
    if match.group(1) is None:
        raise BadValue("must carry a UTC offset (Z or +hh:mm)", "timezone_aware")
    return value
