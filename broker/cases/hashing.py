"""The hash of a body's meaning, which idempotency checks compare."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["body_hash"]


def body_hash(obj: Any) -> str:
    """Hash of a body's meaning (key order and whitespace do not matter), for idempotency checks."""
    canon = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    # surrogatepass: a JSON body may spell a lone surrogate; hashing must not fail before validation.
    return hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest()
