"""Calendar months as `YYYY-MM` text, the unit of the § 11 statistics: parsed and counted once.

A month is also a number, `year * 12 + month - 1`, so that spans and shifts are integer arithmetic.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MONTH", "month_index", "month_text", "shift_month"]

# ASCII digits only (fullmatch, so no trailing "\n"); months 01 to 12.
MONTH: Final = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


def month_index(text: str | None) -> int | None:
    """`year * 12 + month - 1` of a `YYYY-MM` text, or None when it is not one."""
    match = MONTH.fullmatch(text or "")
    if match is None:
        return None
    return int(match.group(1)) * 12 + int(match.group(2)) - 1


def month_text(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def shift_month(month: str, delta: int) -> str:
    """The month `delta` months after (or before) `month`, which must be a `YYYY-MM` text."""
    index = month_index(month)
    if index is None:
        raise ValueError("not a month YYYY-MM")
    return month_text(index + delta)
