"""The Finnish working-day calendar, checked against dates a case worker would count by hand.

Holiday dates below were read from `holidays` 0.109 (country FI) and checked against the almanac:
2025: Christmas Eve Wed 24 Dec, Christmas Day Thu 25 Dec, St Stephen's Day Fri 26 Dec.
2026: New Year Thu 1 Jan, Epiphany Tue 6 Jan, Good Friday 3 Apr, Easter Monday 6 Apr, May Day Fri
1 May, Ascension Thu 14 May, Midsummer Eve Fri 19 Jun, Independence Day Sun 6 Dec, Christmas Eve
Thu 24 Dec, Christmas Day Fri 25 Dec, St Stephen's Sat 26 Dec.
2027: New Year Fri 1 Jan, Epiphany Wed 6 Jan, Independence Day Mon 6 Dec.
2029: Independence Day Thu 6 Dec, Christmas Eve Mon 24 Dec - Wed 26 Dec; 2030: Epiphany Sun 6 Jan.
DST in Helsinki 2026: EET -> EEST on Sun 29 Mar (01:00 UTC), back on Sun 25 Oct (01:00 UTC).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.domain import workdays
from broker.domain.workdays import (
    HELSINKI,
    add_working_days,
    end_of_working_day,
    helsinki_date,
    is_working_day,
    working_days_between,
)

NEW_YORK = ZoneInfo("America/New_York")
ONE_DAY = timedelta(days=1)


def hel(y: int, mo: int, d: int, h: int = 12, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=HELSINKI)


def utc(y: int, mo: int, d: int, h: int = 12, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def brute_working_days(first: date, last: date) -> int:
    """Working days in [first, last], one day at a time: the slow, obvious oracle."""
    count, day = 0, first
    while day <= last:
        count += is_working_day(day)
        day += ONE_DAY
    return count


# --- the calendar ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "day",
    [
        date(2025, 12, 24),  # Christmas Eve, Wednesday
        date(2025, 12, 25),  # Christmas Day, Thursday
        date(2025, 12, 26),  # St Stephen's Day, Friday
        date(2026, 1, 1),  # New Year's Day, Thursday
        date(2026, 1, 6),  # Epiphany, Tuesday
        date(2026, 4, 3),  # Good Friday
        date(2026, 4, 6),  # Easter Monday
        date(2026, 5, 1),  # May Day, Friday
        date(2026, 5, 14),  # Ascension Day, Thursday
        date(2026, 6, 19),  # Midsummer Eve, Friday
        date(2026, 12, 24),  # Christmas Eve, Thursday
        date(2026, 12, 25),  # Christmas Day, Friday
        date(2027, 1, 1),  # New Year's Day, Friday
        date(2027, 1, 6),  # Epiphany, Wednesday
        date(2027, 12, 6),  # Independence Day, Monday
        date(2029, 12, 6),  # Independence Day, Thursday
        date(2029, 12, 24),  # Christmas Eve, Monday
        date(2026, 4, 4),  # Saturday
        date(2026, 4, 5),  # Easter Sunday
    ],
    ids=str,
)
def test_days_off(day: date) -> None:
    assert not is_working_day(day)


@pytest.mark.parametrize(
    "day",
    [
        date(2026, 4, 2),  # Maundy Thursday is a normal working day
        date(2026, 4, 7),  # Tuesday after Easter Monday
        date(2026, 6, 18),  # Thursday before Midsummer
        date(2026, 12, 23),  # Wednesday before Christmas Eve
        date(2026, 12, 28),  # Monday after Christmas
        date(2026, 12, 31),  # New Year's Eve is a working day
        date(2027, 12, 7),  # Tuesday after Independence Day
        date(2026, 1, 2),  # Friday between New Year and the weekend
    ],
    ids=str,
)
def test_working_days(day: date) -> None:
    assert is_working_day(day)


@pytest.mark.parametrize("year", range(2024, 2036))
def test_package_lists_both_eves_as_public_holidays(year: int) -> None:
    # LEGAL_FACTS § 4: verified for holidays 0.109; if this fails after an upgrade, the rule
    # fallback in broker.domain.workdays still keeps the eves off (see the next test).
    public = holidays.country_holidays("FI", years=year, categories=(holidays.PUBLIC,))
    june_19 = date(year, 6, 19)
    midsummer_eve = june_19 + timedelta(days=(4 - june_19.weekday()) % 7)
    assert midsummer_eve in public
    assert date(year, 12, 24) in public


@pytest.mark.parametrize("year", range(1955, 2101))
def test_midsummer_eve_is_the_friday_between_19_and_25_june(year: int) -> None:
    fridays = [date(year, 6, d) for d in range(19, 26) if date(year, 6, d).weekday() == 4]
    assert len(fridays) == 1
    assert not is_working_day(fridays[0])
    assert not is_working_day(date(year, 12, 24))


@pytest.fixture
def fresh_holiday_cache() -> Iterator[None]:
    workdays._holidays_of.cache_clear()
    yield
    workdays._holidays_of.cache_clear()


@pytest.mark.usefixtures("fresh_holiday_cache")
def test_eves_are_added_by_rule_when_the_package_lacks_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = holidays.country_holidays

    def without_eves(*args: Any, **kwargs: Any) -> holidays.HolidayBase:
        calendar = real(*args, **kwargs)
        for eve in (date(2026, 6, 19), date(2026, 12, 24)):
            calendar.pop(eve, None)
        return calendar

    monkeypatch.setattr(holidays, "country_holidays", without_eves)
    assert not is_working_day(date(2026, 6, 19))
    assert not is_working_day(date(2026, 12, 24))
    assert add_working_days(date(2026, 6, 18), 1) == date(2026, 6, 22)


def test_years_the_package_does_not_cover_are_refused() -> None:
    with pytest.raises(ValueError, match="2101"):
        is_working_day(date(2101, 1, 3))
    with pytest.raises(ValueError, match="2101"):
        add_working_days(date(2100, 12, 30), 5)


def test_a_datetime_is_not_a_date() -> None:
    # datetime(2026, 4, 3) is Good Friday, but it would not be found in a set of dates.
    with pytest.raises(TypeError):
        is_working_day(datetime(2026, 4, 3, 12, 0, tzinfo=HELSINKI))
    with pytest.raises(TypeError):
        add_working_days(datetime(2026, 4, 2, 18, 0, tzinfo=HELSINKI), 1)


# --- add_working_days -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        # An ordinary week: Friday + 1 = Monday (Act 150/1930 § 2, start day not counted).
        pytest.param(date(2026, 1, 9), 1, date(2026, 1, 12), id="fri+1=mon"),
        pytest.param(date(2026, 1, 9), 3, date(2026, 1, 14), id="fri+3=wed"),
        pytest.param(date(2026, 1, 10), 1, date(2026, 1, 12), id="sat+1=mon"),
        # Easter 2026: Good Friday 3 Apr, Easter Monday 6 Apr.
        pytest.param(date(2026, 4, 2), 1, date(2026, 4, 7), id="easter-thu+1=tue"),
        pytest.param(date(2026, 4, 3), 1, date(2026, 4, 7), id="easter-goodfri+1=tue"),
        pytest.param(date(2026, 4, 2), 3, date(2026, 4, 9), id="easter-thu+3=thu"),
        pytest.param(date(2026, 4, 2), 7, date(2026, 4, 15), id="easter-thu+7=wed"),
        pytest.param(date(2026, 3, 27), 7, date(2026, 4, 9), id="easter-inside-7-days"),
        # Midsummer 2026: Eve Fri 19 Jun, Day Sat 20 Jun.
        pytest.param(date(2026, 6, 18), 1, date(2026, 6, 22), id="midsummer-thu+1=mon"),
        pytest.param(date(2026, 6, 18), 3, date(2026, 6, 24), id="midsummer-thu+3=wed"),
        pytest.param(date(2026, 6, 18), 7, date(2026, 6, 30), id="midsummer-thu+7=tue"),
        # Christmas 2025 (Wed-Fri off) running into New Year and Epiphany 2026.
        pytest.param(date(2025, 12, 23), 1, date(2025, 12, 29), id="xmas25-tue+1=mon"),
        pytest.param(date(2025, 12, 23), 3, date(2025, 12, 31), id="xmas25-tue+3=wed"),
        pytest.param(date(2025, 12, 23), 7, date(2026, 1, 8), id="xmas25-tue+7=thu-jan8"),
        # Christmas 2026 (Thu-Sat off) running into New Year and Epiphany 2027.
        pytest.param(date(2026, 12, 23), 1, date(2026, 12, 28), id="xmas26-wed+1=mon"),
        pytest.param(date(2026, 12, 23), 3, date(2026, 12, 30), id="xmas26-wed+3=wed"),
        pytest.param(date(2026, 12, 23), 7, date(2027, 1, 7), id="xmas26-wed+7=thu-jan7"),
        # Christmas 2029 (Mon-Wed off), New Year Tue, Epiphany on a Sunday in 2030.
        pytest.param(date(2029, 12, 21), 1, date(2029, 12, 27), id="xmas29-fri+1=thu"),
        pytest.param(date(2029, 12, 21), 7, date(2030, 1, 7), id="xmas29-fri+7=mon"),
        # Year change: New Year's Day Thu 1 Jan 2026, Epiphany Tue 6 Jan 2026.
        pytest.param(date(2025, 12, 31), 1, date(2026, 1, 2), id="newyear-wed+1=fri"),
        pytest.param(date(2025, 12, 31), 3, date(2026, 1, 7), id="newyear-wed+3=wed"),
        pytest.param(date(2026, 1, 5), 1, date(2026, 1, 7), id="epiphany-mon+1=wed"),
        # Independence Day on a weekday.
        pytest.param(date(2027, 12, 3), 1, date(2027, 12, 7), id="indep27-fri+1=tue"),
        pytest.param(date(2029, 12, 5), 1, date(2029, 12, 7), id="indep29-wed+1=fri"),
        pytest.param(date(2029, 12, 5), 3, date(2029, 12, 11), id="indep29-wed+3=tue"),
        pytest.param(date(2029, 12, 5), 7, date(2029, 12, 17), id="indep29-wed+7=mon"),
        # May Day Fri 1 May 2026 and Ascension Thu 14 May 2026; no Whit Monday in Finland.
        pytest.param(date(2026, 4, 30), 1, date(2026, 5, 4), id="mayday-thu+1=mon"),
        pytest.param(date(2026, 5, 13), 1, date(2026, 5, 15), id="ascension-wed+1=fri"),
        pytest.param(date(2026, 5, 13), 7, date(2026, 5, 25), id="whitmonday-is-working"),
    ],
)
def test_add_working_days(start: date, n: int, expected: date) -> None:
    assert add_working_days(start, n) == expected


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (date(2026, 4, 2), date(2026, 4, 2)),  # a working day stays
        (date(2026, 4, 3), date(2026, 4, 7)),  # Good Friday rolls over Easter (§ 5)
        (date(2026, 12, 24), date(2026, 12, 28)),  # Christmas Eve rolls to Monday
    ],
    ids=str,
)
def test_zero_working_days_is_the_same_day_or_the_next_working_day(
    start: date, expected: date
) -> None:
    assert add_working_days(start, 0) == expected


def test_negative_periods_are_refused() -> None:
    with pytest.raises(ValueError):
        add_working_days(date(2026, 4, 2), -1)


# --- end_of_working_day ---------------------------------------------------------------------


def test_end_of_working_day_is_the_last_microsecond_in_helsinki() -> None:
    due = end_of_working_day(date(2026, 4, 7))
    assert due == datetime(2026, 4, 7, 23, 59, 59, 999999, tzinfo=HELSINKI)
    assert due.astimezone(UTC) == datetime(2026, 4, 7, 20, 59, 59, 999999, tzinfo=UTC)
    assert helsinki_date(due + timedelta(microseconds=1)) == date(2026, 4, 8)


@pytest.mark.parametrize(
    ("day", "offset_hours"),
    [
        (date(2026, 3, 27), 2),  # Friday before the spring change: EET
        (date(2026, 3, 30), 3),  # Monday after it: EEST
        (date(2026, 10, 23), 3),  # Friday before the autumn change: EEST
        (date(2026, 10, 26), 2),  # Monday after it: EET
    ],
    ids=str,
)
def test_end_of_working_day_across_dst(day: date, offset_hours: int) -> None:
    due = end_of_working_day(day)
    assert due.utcoffset() == timedelta(hours=offset_hours)
    assert due.astimezone(UTC) == datetime(
        day.year, day.month, day.day, 23 - offset_hours, 59, 59, 999999, tzinfo=UTC
    )


def test_end_of_working_day_refuses_a_day_off() -> None:
    with pytest.raises(ValueError, match="2026-06-19"):
        end_of_working_day(date(2026, 6, 19))


# --- helsinki_date --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        # 23:30 UTC is already the next day in Finland, summer and winter.
        (utc(2026, 1, 8, 23, 30), date(2026, 1, 9)),  # 01:30 EET
        (utc(2026, 6, 15, 22, 30), date(2026, 6, 16)),  # 01:30 EEST
        # Spring change, Sun 29 Mar 2026 at 01:00 UTC.
        (utc(2026, 3, 28, 21, 59), date(2026, 3, 28)),  # 23:59 EET
        (utc(2026, 3, 28, 22, 0), date(2026, 3, 29)),  # 00:00 EET
        (utc(2026, 3, 29, 20, 59), date(2026, 3, 29)),  # 23:59 EEST
        (utc(2026, 3, 29, 21, 0), date(2026, 3, 30)),  # 00:00 EEST
        # Autumn change, Sun 25 Oct 2026 at 01:00 UTC; a fixed +3 would give 26 Oct here.
        (utc(2026, 10, 25, 21, 30), date(2026, 10, 25)),  # 23:30 EET
        (utc(2026, 10, 25, 22, 0), date(2026, 10, 26)),  # 00:00 EET
        # Another zone: 19:00 in New York on 8 Jan is 02:00 on 9 Jan in Helsinki.
        (datetime(2026, 1, 8, 19, 0, tzinfo=NEW_YORK), date(2026, 1, 9)),
    ],
    ids=str,
)
def test_helsinki_date(instant: datetime, expected: date) -> None:
    assert helsinki_date(instant) == expected


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        helsinki_date(datetime(2026, 4, 2, 18, 0))
    with pytest.raises(ValueError, match="aware"):
        working_days_between(datetime(2026, 4, 2, 18, 0), hel(2026, 4, 8))


# --- working_days_between -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # Received Thu 2 Apr 2026 18:00 before Easter; Fri-Mon are off.
        (hel(2026, 4, 2, 18), hel(2026, 4, 2, 23), 0),
        (hel(2026, 4, 2, 18), hel(2026, 4, 6, 12), 0),  # Easter Monday
        (hel(2026, 4, 2, 18), hel(2026, 4, 7, 23, 59), 0),  # Tuesday not over yet
        (hel(2026, 4, 2, 18), hel(2026, 4, 8, 0, 0), 1),  # Tuesday done
        (hel(2026, 4, 2, 18), hel(2026, 4, 10, 9), 3),  # Tue, Wed, Thu
        # The time of day of receipt does not matter, only its date.
        (hel(2026, 4, 2, 0, 1), hel(2026, 4, 8, 0, 0), 1),
        # Christmas 2026 into 2027: Mon 28 - Thu 31 Dec; 1 Jan is off.
        (hel(2026, 12, 23, 9), hel(2027, 1, 4, 9), 4),
        # Year change 2025/26: Wed 31 Dec, Fri 2 Jan, Mon 5 Jan, Wed 7 Jan (1 Jan, 6 Jan off).
        (hel(2025, 12, 30, 9), hel(2026, 1, 8, 9), 4),
        # Spring DST change inside the span: Mon 30 and Tue 31 Mar.
        (hel(2026, 3, 27, 12), hel(2026, 4, 1, 12), 2),
        # 23:30 UTC on Thu 8 Jan 2026 is Fri 9 Jan in Helsinki, so Friday is the day of receipt.
        (utc(2026, 1, 8, 23, 30), hel(2026, 1, 13, 9), 1),  # only Mon 12 Jan
        (utc(2026, 1, 8, 21, 30), hel(2026, 1, 13, 9), 2),  # 23:30 Thu: Fri 9 and Mon 12
        # All of 2026: 261 weekdays minus 9 weekday holidays.
        (hel(2025, 12, 31, 12), hel(2027, 1, 1, 12), 252),
        # A clock behind the receipt gives 0, not an error.
        (hel(2026, 4, 8, 12), hel(2026, 4, 2, 12), 0),
    ],
)
def test_working_days_between(start: datetime, end: datetime, expected: int) -> None:
    assert working_days_between(start, end) == expected


# --- properties -----------------------------------------------------------------------------

days = st.dates(min_value=date(1990, 1, 1), max_value=date(2098, 12, 31))
periods = st.integers(min_value=1, max_value=400)
zones = st.sampled_from([UTC, HELSINKI, NEW_YORK, ZoneInfo("Asia/Tokyo")])
instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 12, 31), timezones=zones
)


@given(days, periods)
def test_result_is_a_working_day_strictly_after_the_start(d: date, n: int) -> None:
    result = add_working_days(d, n)
    assert is_working_day(result)
    assert result > d


@given(days, periods)
def test_exactly_n_working_days_lie_in_the_period(d: date, n: int) -> None:
    result = add_working_days(d, n)
    assert brute_working_days(d + ONE_DAY, result) == n


@given(days, st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=400))
def test_monotone_in_n(d: date, n: int, m: int) -> None:
    low, high = sorted((n, m))
    if low == high:
        return
    if low == 0:
        assert add_working_days(d, low) <= add_working_days(d, high)
    else:
        assert add_working_days(d, low) < add_working_days(d, high)


@given(days)
def test_zero_days_is_the_first_working_day_from_d(d: date) -> None:
    result = add_working_days(d, 0)
    assert is_working_day(result)
    assert result >= d
    assert brute_working_days(d, result - ONE_DAY) == 0


@given(instants, st.integers(min_value=0, max_value=3 * 366 * 24 * 3600))
def test_working_days_between_matches_counting_by_hand(start: datetime, seconds: int) -> None:
    end = start + timedelta(seconds=seconds)
    first = helsinki_date(start) + ONE_DAY
    last = helsinki_date(end) - ONE_DAY
    assert working_days_between(start, end) == brute_working_days(first, last)


@given(instants, periods, st.integers(min_value=0, max_value=800 * 24 * 3600))
def test_overdue_exactly_when_n_whole_working_days_elapsed(
    start: datetime, n: int, seconds: int
) -> None:
    now = start + timedelta(seconds=seconds)
    due_at = end_of_working_day(add_working_days(helsinki_date(start), n))
    assert (working_days_between(start, now) >= n) == (now > due_at)


@given(days, periods)
def test_due_at_is_the_last_instant_of_the_due_day(d: date, n: int) -> None:
    due_day = add_working_days(d, n)
    due_at = end_of_working_day(due_day)
    assert helsinki_date(due_at) == due_day
    assert helsinki_date(due_at + timedelta(microseconds=1)) == due_day + ONE_DAY
