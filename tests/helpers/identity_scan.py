"""A scanner for identity data in text the service emits: log lines, metric lines, URLs, audit rows.

Deliberately more eager than the service's own redactor (schemas.hetu.mask_identity_codes): anything shaped like
an identity code counts, with no word boundaries, and so does every identity code and name the test
sent, in any letter case. UUIDs are blanked first: `…123456-7890…` across a UUID's first dash has the
shape of a code by chance (about 1 UUID in 100), and a UUID cannot be a leaked code.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PERMISSIVE_HETU", "Finding", "IdentityScanner"]

PERMISSIVE_HETU = re.compile(r"\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Finding:
    where: str
    what: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what} in {self.text[:300]!r}"


class IdentityScanner:
    """Knows the identity codes and words (names, free-text markers) that must never come back."""

    def __init__(self, codes: Iterable[str], words: Iterable[str]) -> None:
        self.codes = sorted({c.upper() for c in codes})
        self.words = sorted({w for w in words if w})
        # A whole word: not preceded or followed by a letter (`_` and digits do not join a name).
        self._word = (re.compile("|".join(rf"(?<![^\W\d_]){re.escape(w)}(?![^\W\d_])" for w in self.words),
                                 re.IGNORECASE) if self.words else None)

    def scan(self, where: str, text: str) -> list[Finding]:
        """Findings in one piece of text; a JSON line is also read decoded (`\\u00e4` is `ä`)."""
        views = [text]
        stripped = text.strip()
        if stripped.startswith(("{", "[")):
            with contextlib.suppress(ValueError):
                views.append(json.dumps(json.loads(stripped), ensure_ascii=False))
        found: list[Finding] = []
        for view in views:
            upper = view.upper()
            found += [Finding(where, f"identity code {c}", text) for c in self.codes if c in upper]
            blanked = _UUID.sub("<uuid>", view)
            found += [Finding(where, f"code-shaped {m[0]}", text)
                      for m in PERMISSIVE_HETU.finditer(blanked)]
            if self._word is not None:
                found += [Finding(where, f"word {m[0]}", text) for m in self._word.finditer(view)]
        return sorted(set(found), key=str)

    def scan_lines(self, where: str, lines: Iterable[str]) -> list[Finding]:
        found: list[Finding] = []
        for n, line in enumerate(lines, 1):
            found += self.scan(f"{where}:{n}", line)
        return found
