"""Finnish personal identity code (henkilötunnus) validation.

Written here rather than taken from python-stdnum because the broker must accept individual
numbers 900-999 (temporary and test identities, DESIGN § 10) and must never echo the code back:
every message below is generic on purpose.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = [
    "CENTURY_SIGNS", "IDENTITY_CODE_MASK", "IDENTITY_CODE_RE", "HetuError", "contains_identity_code",
    "is_valid_hetu", "mask_identity_codes", "validate_hetu",
]

_CHECK_CHARS = "0123456789ABCDEFHJKLMNPRSTUVWXY"
CENTURY_SIGNS: dict[str, int] = {
    "+": 1800,
    "-": 1900, "Y": 1900, "X": 1900, "W": 1900, "V": 1900, "U": 1900,
    "A": 2000, "B": 2000, "C": 2000, "D": 2000, "E": 2000, "F": 2000,
}
# ASCII digits only: `\d` would also take fullwidth and Arabic-Indic digits, which int()
# reads as ASCII ones, so a code written with them would pass. `\Z`, not `$`, which also matches before "\n".
_PATTERN = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{2})([-+A-FU-Y])([0-9]{3})([0-9A-Y])\Z")


class HetuError(ValueError):
    """A reason an identity code is invalid; the text never contains the code itself."""


def validate_hetu(value: str) -> str:
    """Return the code unchanged if it is valid, else raise HetuError with a code-free reason."""
    match = _PATTERN.match(value)
    if match is None:
        raise HetuError("personal identity code must have the form DDMMYYCNNNT")
    day, month, year2, sign, individual, check = match.groups()
    if sign not in CENTURY_SIGNS:
        raise HetuError("personal identity code has an unknown century sign")
    try:
        dt.date(CENTURY_SIGNS[sign] + int(year2), int(month), int(day))
    except ValueError:
        raise HetuError("personal identity code has an impossible date") from None
    if int(individual) < 2:
        raise HetuError("personal identity code has an invalid individual number")
    expected = _CHECK_CHARS[int(day + month + year2 + individual) % 31]
    if check != expected:
        raise HetuError("personal identity code has a wrong check character")
    return value


def is_valid_hetu(value: str) -> bool:
    try:
        validate_hetu(value)
    except HetuError:
        return False
    return True


# --- Finding codes in text that must not keep them (log lines, error bodies, URLs) ---------------------

# The shape of an identity code, wherever it stands: no word boundaries (`abc010190-900Xabc`, a path
# segment, repr()'d bytes of a request line), any letter case (`010190a900x` is still a code), the
# century sign also percent-encoded as a URL carries it (`%2B`, `%2D`), and any Unicode digit (a code
# written in fullwidth digits identifies the person as well). This is the one definition: the log
# redactor, the access log, the dashboard's lookup and the error bodies all use it.
IDENTITY_CODE_RE = re.compile(r"\d{6}(?:[-+A-FU-Y]|%2[BD])\d{3}[0-9A-Y]", re.IGNORECASE)
IDENTITY_CODE_MASK = "[redacted-hetu]"

# A UUID or a long hex run (event ids, request ids, hashes) has the shape of a code by chance: about
# one UUID in a hundred holds `dddddd-dddd` across its first dash, or six digits, a letter A-F and
# four more. Such a token is kept unless what it holds is a valid code (right date and check
# character), which chance gives about once in 100,000 UUIDs, and which a code hidden in a UUID always
# is. A token that a code-like character follows is no token: a code may run on out of it.
_HEX_RUN = r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32,})(?![\w%+-])"
_TOKEN = re.compile(rf"(?P<hex>{_HEX_RUN})|{IDENTITY_CODE_RE.pattern}", re.IGNORECASE)
_OVERLAPPING = re.compile(rf"(?=({IDENTITY_CODE_RE.pattern}))", re.IGNORECASE)


def _is_code(match: re.Match[str]) -> bool:
    if match["hex"] is None:
        return True
    return any(is_valid_hetu(m[1].upper()) for m in _OVERLAPPING.finditer(match[0]))


def mask_identity_codes(text: str, mask: str = IDENTITY_CODE_MASK) -> str:
    """`text` with every identity code replaced by `mask` (see IDENTITY_CODE_RE for what counts)."""
    return _TOKEN.sub(lambda m: mask if _is_code(m) else m[0], text)


def contains_identity_code(text: str) -> bool:
    """True if `mask_identity_codes` would change `text`."""
    return any(_is_code(m) for m in _TOKEN.finditer(text))
