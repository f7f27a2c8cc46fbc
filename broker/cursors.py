"""Opaque, URL-safe list cursors. Clients pass `next` back as `after=`; they must not parse it."""

from __future__ import annotations

import base64
import binascii

from broker.errors import InvalidInput

__all__ = ["decode_cursor", "encode_cursor"]


MAX_POSITION = 2**63 - 1  # a BIGINT: anything larger cannot be a position in any list


def encode_cursor(kind: str, position: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, value: str | None, param: str = "after") -> int:
    if value is None or value == "":
        return 0
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        prefix, _, number = raw.partition(":")
        if prefix != kind or not number.isdigit() or int(number) > MAX_POSITION:
            raise ValueError
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput([{"loc": ["query", param], "msg": "not a cursor of this list",
                             "type": "invalid_cursor"}]) from None
