"""The Finnish working-day calendar behind the SLA clock (DESIGN § 8).

Statutory deadlines of the social services are counted in working days: weekends and public
holidays do not run the clock. The holidays come from the `holidays` package (country "FI", public
category) rather than from a hand-written list, so moving feasts such as Easter, Ascension Day,
Midsummer and All Saints' Day stay right in every year without anyone maintaining dates here.

Counting follows Act 150/1930 (laki säädettyjen määräaikain laskemisesta): § 2, the day on which
the period starts is not counted; § 5, a deadline that would end on a Saturday, Sunday, public
holiday, Independence Day, May Day, Christmas Eve or Midsummer Eve moves to the next working day.
Christmas Eve and Midsummer Eve are not church holidays, but § 5 treats them as days off, and the
package lists both as FI public holidays (verified for 0.109). Should a version of the package
ever lack them, they are added by their rule (LEGAL_FACTS § 3-4), so the two eves never silently
become working days.

The calendar is the national one. Åland's Autonomy Day (9 June, `holidays` subdivision "01") is
left out on purpose: Åland is not a wellbeing services county and receives no referrals here.

Calendar dates are those of Europe/Helsinki, because a deadline's "day" is the day in Finland:
a referral arriving at 23:30 UTC has already arrived on the next day for the case worker.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

__all__ = [
    "HELSINKI",
    "add_working_days",
    "end_of_working_day",
    "helsinki_date",
    "is_working_day",
    "working_days_between",
]

HELSINKI = ZoneInfo("Europe/Helsinki")

_ONE_DAY = timedelta(days=1)
_SATURDAY = 5  # date.weekday(): Monday = 0, so 5 and 6 are the weekend.
_FRIDAY = 4
# Midsummer Eve has been the Friday between 19 and 25 June since 1955; before that it was a fixed
# 23 June, which the package knows. The rule fallback is only valid from then on.
_MIDSUMMER_RULE_SINCE = 1955


def _reject_datetime(d: date) -> None:
    # `datetime` is a subclass of `date`, so the type checker lets one through. It would compare
    # unequal to every holiday in the set (datetime(2026, 4, 3) != date(2026, 4, 3)) and turn Good
    # Friday into a working day without any error.
    if isinstance(d, datetime):
        raise TypeError("expected a calendar date, got a datetime; convert it with helsinki_date()")


def _midsummer_eve(year: int) -> date:
    june_19 = date(year, 6, 19)
    return june_19 + timedelta(days=(_FRIDAY - june_19.weekday()) % 7)


@lru_cache(maxsize=64)
def _holidays_of(year: int) -> frozenset[date]:
    """Building a `holidays` calendar costs far more than a set lookup, and the SLA clock asks
    about the same few years for every case, hence the cache."""
    calendar = holidays.country_holidays("FI", years=year, categories=(holidays.PUBLIC,))
    if not calendar.start_year <= year <= calendar.end_year:
        # Outside its range the package returns an empty calendar, which would make Christmas a
        # working day; an error is better than a silently wrong deadline.
        raise ValueError(
            f"the FI holiday calendar covers {calendar.start_year}-{calendar.end_year}, not {year}"
        )
    days: set[date] = set(calendar.keys())
    if year >= _MIDSUMMER_RULE_SINCE:
        days.add(_midsummer_eve(year))
    days.add(date(year, 12, 24))
    return frozenset(days)


def helsinki_date(instant: datetime) -> date:
    """The calendar day in Finland at `instant`: the day a case worker would say it happened on.

    A naive datetime is refused: whether it meant UTC or local time shifts the day by 2-3 hours,
    and guessing would move deadlines without anyone noticing.
    """
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("expected a timezone-aware datetime")
    return instant.astimezone(HELSINKI).date()


def is_working_day(d: date) -> bool:
    """Whether the deadline clock runs on `d`: Monday-Friday and not a FI public holiday."""
    _reject_datetime(d)
    return d.weekday() < _SATURDAY and d not in _holidays_of(d.year)


def add_working_days(d: date, n: int) -> date:
    """The `n`-th working day after `d`, the last day of an `n`-working-day period started on `d`.

    `d` itself is never counted (Act 150/1930 § 2), whether or not it is a working day, so a
    referral received on Friday with n = 1 is due on Monday, and one received on Saturday likewise
    on Monday.

    n = 0 means "by the end of the same day", moved to the next working day if `d` is a day off
    (Act 150/1930 § 5), so a zero-day policy can never put a deadline on a Sunday.
    """
    _reject_datetime(d)
    if n < 0:
        raise ValueError(f"a period has a non-negative number of working days, got {n}")
    current = d
    if n == 0:
        while not is_working_day(current):
            current += _ONE_DAY
        return current
    remaining = n
    while remaining:
        current += _ONE_DAY
        if is_working_day(current):
            remaining -= 1
    return current


def end_of_working_day(d: date) -> datetime:
    """The last instant of working day `d` in Finland, as an aware datetime.

    A deadline "within n working days" is met by anything done on the last day, so it is due "by
    the end of the day": 23:59:59.999999 Helsinki time, not the end of office hours (no statute
    in § 8 shortens the day) and not the next midnight (whose date would be the following day on
    every display). A case is overdue exactly when `now > end_of_working_day(due_day)`.

    Refuses a day off: Act 150/1930 § 5 never lets a deadline end on one, so being asked for one
    means the caller skipped `add_working_days`.
    """
    if not is_working_day(d):
        raise ValueError(f"{d.isoformat()} is not a working day in Finland")
    return datetime.combine(d, time.max, tzinfo=HELSINKI)


def _weekdays_before(ordinal: int) -> int:
    # Monday-Friday days among proleptic ordinals 1 .. ordinal - 1; ordinal 1 (0001-01-01) is a
    # Monday, so whole weeks give five each and the remainder at most five more.
    weeks, rest = divmod(ordinal - 1, 7)
    return weeks * 5 + min(rest, 5)


def _count_working_days(first: date, last: date) -> int:
    # Inclusive count, arithmetic on weekdays and then minus the weekday holidays, so a dashboard
    # computing ages for a million open cases does not walk them day by day.
    if last < first:
        return 0
    weekdays = _weekdays_before(last.toordinal() + 1) - _weekdays_before(first.toordinal())
    weekday_holidays = sum(
        1
        for year in range(first.year, last.year + 1)
        for day in _holidays_of(year)
        if first <= day <= last and day.weekday() < _SATURDAY
    )
    return weekdays - weekday_holidays


def working_days_between(start: datetime, end: datetime) -> int:
    """Whole working days that elapsed from `start` to `end`, for "oldest unanswered" ages.

    Definition: the number of working days strictly after the Helsinki date of `start` and
    strictly before the Helsinki date of `end`. The day of receipt is not counted (Act 150/1930
    § 2, as for deadlines), and the current day counts only once it is over. The time of day does
    not matter: received Monday 08:00 or 23:00 makes no difference, as for the deadline.

    This pairs exactly with the deadlines: for a period of n >= 1 working days started on the
    day of `start`, `working_days_between(start, now) >= n` if and only if
    `now > end_of_working_day(add_working_days(helsinki_date(start), n))`, i.e. the case is
    overdue. It is 0 when `end` is not later than the next day, including a clock that is behind
    `start`, so a skewed clock shows a young case rather than failing the gauge.
    """
    first = helsinki_date(start) + _ONE_DAY
    last = helsinki_date(end) - _ONE_DAY
    return _count_working_days(first, last)
