"""Unpadded base64url (RFC 4648 § 5, padding dropped as in JWTs): list cursors and signed cookies."""

from __future__ import annotations

import base64

__all__ = ["decode", "encode"]


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(text: str) -> bytes:
    """The bytes of `text`, padding or not; binascii.Error (a ValueError) when it is not base64."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
