"""The dashboard's languages: one message catalog per language, `translations/<lang>.json`.

Finnish is the default; `?lang=sv` or `?lang=en` on any page switches, and anything else falls back
to Finnish. A catalog maps a message key to its text; a text may hold `str.format` fields
(`{n}`), the same ones in every language (tests/test_dashboard.py checks both).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib.resources import files

from aiohttp import web

from broker.domain.routing import Classification

__all__ = ["DEFAULT_LANG", "LANGS", "area_name", "catalog", "lang_of"]

LANGS = ("fi", "sv", "en")
DEFAULT_LANG = "fi"


@cache
def catalog(lang: str) -> Mapping[str, str]:
    """The messages of one language, read once from the package's data."""
    if lang not in LANGS:
        raise KeyError(lang)
    text = files("broker.dashboard").joinpath("translations", f"{lang}.json").read_text("utf-8")
    messages = json.loads(text)
    if not isinstance(messages, dict) or not all(isinstance(v, str) for v in messages.values()):
        raise ValueError(f"translations/{lang}.json is not an object of strings")
    return messages


def lang_of(request: web.Request) -> str:
    lang = request.query.get("lang", DEFAULT_LANG)
    return lang if lang in LANGS else DEFAULT_LANG


def area_name(classification: Classification, code: str, lang: str) -> str:
    """The wellbeing services county's name in Swedish for `sv`, else in Finnish (the
    classification has no English names)."""
    area = classification.areas.get(code)
    if area is None:
        return ""
    return area.name_sv if lang == "sv" else area.name_fi
