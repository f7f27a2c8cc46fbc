"""`broker.domain.months`: the one reading of `YYYY-MM` (statistics API, CLI and dashboard)."""

from __future__ import annotations

import pytest

from broker.domain.months import month_index, month_text, shift_month


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "26-02", "2026-1", "2026-01\n", "\uff12\uff10\uff12\uff16-01",
                                  "", None])
def test_only_ascii_yyyy_mm_is_a_month(text: str | None) -> None:
    assert month_index(text) is None


def test_months_count_and_shift_across_years() -> None:
    assert month_text(month_index("2026-01") or 0) == "2026-01"
    assert month_index("2026-01") == 2026 * 12
    assert shift_month("2026-01", -1) == "2025-12"
    assert shift_month("2025-12", 13) == "2027-01"
    with pytest.raises(ValueError):
        shift_month("2026-1", 1)
