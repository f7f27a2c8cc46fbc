"""Opaque, URL-safe list cursors. Clients pass `next` back as `after=`; they must not parse it."""

from __future__ import annotations

import binascii
import re

from broker.domain.errors import InvalidInput
from broker.security import b64url

__all__ = ["MAX_POSITION", "decode_cursor", "encode_cursor", "parse_position"]


MAX_POSITION = 2**63 - 1  # a BIGINT: anything larger cannot be a position in any list
# ASCII digits only: str.isdigit() is true for "²" (which int() refuses) and int() reads a fullwidth
# or Arabic-Indic 3 as 3, so neither may decide what a number from a URL is.
_ASCII_NUMBER = re.compile(r"[0-9]{1,19}")


def parse_position(text: str) -> int | None:
    """A non-negative number written in ASCII digits, at most MAX_POSITION; else None."""
    if _ASCII_NUMBER.fullmatch(text) is None:
        return None
    value = int(text)
    return value if value <= MAX_POSITION else None


def encode_cursor(kind: str, position: int) -> str:
    return b64url.encode(f"{kind}:{position}".encode())


def decode_cursor(kind: str, value: str | None, param: str = "after") -> int:
    if value is None or value == "":
        return 0
    try:
        raw = b64url.decode(value).decode()
        prefix, _, number = raw.partition(":")
        position = parse_position(number)
        if prefix != kind or position is None:
            raise ValueError
        return position
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput([{"loc": ["query", param], "msg": "not a cursor of this list",
                             "type": "invalid_cursor"}]) from None
