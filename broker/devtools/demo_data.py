"""Invented people for the demo and the tests: test identity codes only (individual number 900-999)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

__all__ = ["FIRST_NAMES", "LAST_NAMES", "make_referral", "make_test_hetu"]

_CHECK = "0123456789ABCDEFHJKLMNPRSTUVWXY"
_SIGNS = {1900: "-YXWVU", 2000: "ABCDEF"}

FIRST_NAMES = ["Testi", "Demo", "Kokeilu", "Esimerkki", "Malli", "Harjoitus", "Keksitty", "Kuvitteellinen"]
LAST_NAMES = ["Testaaja", "Demola", "Kokeilija", "Esimerkkinen", "Mallinen", "Harjoittelija"]


def make_test_hetu(rng: random.Random, born: dt.date | None = None, sign: str | None = None) -> str:
    """A valid identity code in the test range: never a real person's (DVV reserves 900-999)."""
    born = born or dt.date(rng.randint(1940, 2006), rng.randint(1, 12), rng.randint(1, 28))
    century = 2000 if born.year >= 2000 else 1900
    sign = sign or rng.choice(_SIGNS[century])
    individual = rng.randint(900, 999)
    digits = f"{born:%d%m}{born.year % 100:02d}{individual:03d}"
    return f"{digits[:6]}{sign}{digits[6:]}{_CHECK[int(digits) % 31]}"


def make_referral(rng: random.Random, *, kela_reference: str, municipality_code: str,
                  kind: str = "support_need", urgency: str = "normal",
                  sent_at: dt.datetime | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema_version": "1",
        "kela_reference": kela_reference,
        "kind": kind,
        "urgency": urgency,
        "client": {
            "personal_id": make_test_hetu(rng),
            "first_names": rng.choice(FIRST_NAMES),
            "last_name": rng.choice(LAST_NAMES),
            "language": rng.choice(["fi", "fi", "fi", "sv", "en", "ar", "so", "ru"]),
            "interpreter_needed": False,
            "phone": "+358 40 000 0000",
            "municipality_code": municipality_code,
        },
        "needs": rng.sample(["housing", "income", "debt", "mental_health", "unemployment"], 2),
        "description": "Keksitty esimerkkitilanne demoa varten.",
        "kela": {"office": "Demo office", "handler_id": f"h-{rng.randint(100, 999)}",
                 "decision_refs": []},
        "sent_at": (sent_at or dt.datetime.now(dt.UTC)).isoformat(),
    }
    if kind == "support_need":
        body["consent"] = {"given": True, "method": "oral",
                           "given_at": (sent_at or dt.datetime.now(dt.UTC)).isoformat()}
    if kind == "support_need_without_consent":
        body["justification"] = "Asiakkaan turvallisuus vaatii yhteydenoton (keksitty esimerkki)."
    return body
