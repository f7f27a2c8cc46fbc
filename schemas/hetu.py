"""Finnish personal identity code (henkilötunnus) validation.

Written here rather than taken from python-stdnum because the broker must accept individual
numbers 900-999 (temporary and test identities, DESIGN § 10) and must never echo the code back:
every message below is generic on purpose.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["CENTURY_SIGNS", "IDENTITY_CODE_ANYWHERE", "HetuError", "is_valid_hetu", "validate_hetu"]

_CHECK_CHARS = "0123456789ABCDEFHJKLMNPRSTUVWXY"
CENTURY_SIGNS: dict[str, int] = {
    "+": 1800,
    "-": 1900, "Y": 1900, "X": 1900, "W": 1900, "V": 1900, "U": 1900,
    "A": 2000, "B": 2000, "C": 2000, "D": 2000, "E": 2000, "F": 2000,
}
# ASCII digits only: `\d` would also take fullwidth and Arabic-Indic digits, which int()
# reads as ASCII ones, so a code written with them would pass. `\Z`, not `$`, which also matches before "\n".
_PATTERN = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{2})([-+A-FU-Y])([0-9]{3})([0-9A-Y])\Z")
# Something shaped like an identity code, wherever it stands: in any case, between any neighbours
# ("x010190-900xabc" holds one), with digits of any script. For refusing to echo a value, matching
# too much is the safe side; only `validate_hetu` decides what is a valid code.
IDENTITY_CODE_ANYWHERE = re.compile(r"\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]", re.IGNORECASE)


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
