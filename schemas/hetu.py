"""Finnish personal identity code (henkilötunnus) validation.

Written here rather than taken from python-stdnum because the broker must accept individual
numbers 900-999 (temporary and test identities, DESIGN § 10) and must never echo the code back:
every message below is generic on purpose.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["CENTURY_SIGNS", "HetuError", "is_valid_hetu", "validate_hetu"]

_CHECK_CHARS = "0123456789ABCDEFHJKLMNPRSTUVWXY"
CENTURY_SIGNS: dict[str, int] = {
    "+": 1800,
    "-": 1900, "Y": 1900, "X": 1900, "W": 1900, "V": 1900, "U": 1900,
    "A": 2000, "B": 2000, "C": 2000, "D": 2000, "E": 2000, "F": 2000,
}
_PATTERN = re.compile(r"^(\d{2})(\d{2})(\d{2})([-+A-FU-Y])(\d{3})([0-9A-Y])$")


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
