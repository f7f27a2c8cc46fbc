"""The event envelope and its signature (DESIGN § 7): what a webhook receiver gets and verifies.

Pure functions: the broker's delivery worker does the I/O.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["EVENT_ID_HEADER", "SIGNATURE_HEADER", "envelope", "render_envelope", "sign", "verify"]

EVENT_ID_HEADER = "X-Handoff-Event-Id"
SIGNATURE_HEADER = "X-Handoff-Signature"


def envelope(*, event_id: str, type_: str, referral_id: str | None, area: str | None,
             occurred_at: dt.datetime | str, data: Mapping[str, Any]) -> dict[str, Any]:
    at = occurred_at.isoformat() if isinstance(occurred_at, dt.datetime) else occurred_at
    return {"event_id": event_id, "type": type_, "referral_id": referral_id, "area": area,
            "occurred_at": at, "data": dict(data)}


def render_envelope(env: Mapping[str, Any]) -> bytes:
    return json.dumps(env, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>." + body>`; the key is the secret's UTF-8 bytes."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, body: bytes, header: str, *, now: int, tolerance_s: int = 300) -> bool:
    """Receiver side (used by tests and the demo): constant-time check, stale timestamps rejected."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - t) > tolerance_s:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))
