"""SLA deadlines of DESIGN § 8, with due dates a Finnish case worker would count by hand.

Working days are counted from the Helsinki date of receipt, which itself is not counted (Act
150/1930 § 2); each deadline is due by 23:59:59.999999 Helsinki time on its last day.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from broker.domain.deadlines import (
    ACKNOWLEDGE,
    ASSESSMENT,
    DEADLINE_NAMES,
    DECISION,
    Deadline,
    SlaPolicy,
    compute_deadlines,
    deadline_met_by,
)
from broker.domain.workdays import HELSINKI, helsinki_date, is_working_day
from schemas.enums import Kind, ReplyStatus, Urgency

DEFAULT = SlaPolicy()


def hel(y: int, mo: int, d: int, h: int = 12, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=HELSINKI)


def utc(y: int, mo: int, d: int, h: int = 12, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def eod(y: int, mo: int, d: int) -> datetime:
    return datetime.combine(date(y, mo, d), time.max, tzinfo=HELSINKI)


def due_dates(received_at: datetime, kind: str, urgency: str) -> dict[str, date]:
    return {
        deadline.name: deadline.due_at.date()
        for deadline in compute_deadlines(received_at, kind, urgency, DEFAULT)
    }


# --- the policy -----------------------------------------------------------------------------


def test_policy_defaults_are_design_section_8() -> None:
    assert DEFAULT.urgent_ack_working_days == 1
    assert DEFAULT.ack_working_days == 3
    assert DEFAULT.assessment_working_days == 7
    assert DEFAULT.decision_working_days == 7


def test_policy_loads_from_a_toml_section_and_is_frozen() -> None:
    policy = SlaPolicy.model_validate({"ack_working_days": 2, "decision_working_days": "5"})
    assert (policy.ack_working_days, policy.decision_working_days) == (2, 5)
    with pytest.raises(ValidationError):
        policy.ack_working_days = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "section",
    [
        {"ack_working_days": -1},
        {"assesment_working_days": 7},  # misspelt keys must not be ignored silently
        {"urgent_ack_working_days": 4},  # urgent slower than normal (3)
        {"decision_working_days": "seven"},
    ],
    ids=str,
)
def test_policy_rejects_bad_sections(section: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SlaPolicy.model_validate(section)


# --- which deadlines each kind gets ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        (Kind.SUPPORT_NEED, [ACKNOWLEDGE, ASSESSMENT]),
        (Kind.SUPPORT_NEED_WITHOUT_CONSENT, [ACKNOWLEDGE, ASSESSMENT]),
        (Kind.URGENT_ASSISTANCE, [ACKNOWLEDGE, ASSESSMENT]),
        (Kind.APPLICATION_TRANSFER, [ACKNOWLEDGE, DECISION]),
        (Kind.BASIC_AMOUNT_REDUCTION, [ACKNOWLEDGE]),
    ],
    ids=str,
)
@pytest.mark.parametrize("urgency", ["urgent", "normal"])
def test_deadline_names_by_kind(kind: Kind, names: list[str], urgency: str) -> None:
    deadlines = compute_deadlines(hel(2026, 1, 12), kind.value, urgency, DEFAULT)
    assert [deadline.name for deadline in deadlines] == names


# --- exact due instants ---------------------------------------------------------------------


def test_easter_2026_normal_support_need() -> None:
    # Received Thu 2 Apr 2026 18:00; Good Friday 3 Apr and Easter Monday 6 Apr are off.
    deadlines = compute_deadlines(hel(2026, 4, 2, 18), "support_need", "normal", DEFAULT)
    assert deadlines == [
        Deadline(ACKNOWLEDGE, eod(2026, 4, 9)),  # Tue 7, Wed 8, Thu 9
        Deadline(ASSESSMENT, eod(2026, 4, 15)),  # ... Fri 10, Mon 13, Tue 14, Wed 15
    ]
    assert deadlines[0].due_at == datetime(2026, 4, 9, 20, 59, 59, 999999, tzinfo=UTC)


def test_easter_2026_urgent_is_due_on_tuesday() -> None:
    deadlines = compute_deadlines(hel(2026, 4, 2, 18), "support_need", "urgent", DEFAULT)
    assert deadlines[0] == Deadline(ACKNOWLEDGE, eod(2026, 4, 7))
    assert deadlines[1] == Deadline(ASSESSMENT, eod(2026, 4, 15))


def test_received_on_good_friday_evening() -> None:
    assert due_dates(hel(2026, 4, 3, 19), "support_need", "urgent") == {
        ACKNOWLEDGE: date(2026, 4, 7),
        ASSESSMENT: date(2026, 4, 15),
    }


@pytest.mark.parametrize(
    ("received_at", "kind", "urgency", "expected"),
    [
        # Midsummer 2026: Eve Fri 19 Jun, Day Sat 20 Jun.
        pytest.param(
            hel(2026, 6, 18, 9), "support_need_without_consent", "normal",
            {ACKNOWLEDGE: date(2026, 6, 24), ASSESSMENT: date(2026, 6, 30)},
            id="midsummer-2026",
        ),
        pytest.param(
            hel(2026, 6, 18, 15), "urgent_assistance", "urgent",
            {ACKNOWLEDGE: date(2026, 6, 22), ASSESSMENT: date(2026, 6, 30)},
            id="midsummer-2026-urgent",
        ),
        # Christmas 2025 (Wed 24 - Fri 26 Dec), then New Year and Epiphany 2026.
        pytest.param(
            hel(2025, 12, 23, 14), "application_transfer", "normal",
            {ACKNOWLEDGE: date(2025, 12, 31), DECISION: date(2026, 1, 8)},
            id="christmas-2025-transfer",
        ),
        pytest.param(
            hel(2025, 12, 23, 14), "support_need", "urgent",
            {ACKNOWLEDGE: date(2025, 12, 29), ASSESSMENT: date(2026, 1, 8)},
            id="christmas-2025-urgent",
        ),
        # Christmas 2026 (Thu 24 - Sat 26 Dec), then New Year and Epiphany 2027.
        pytest.param(
            hel(2026, 12, 23, 10), "application_transfer", "urgent",
            {ACKNOWLEDGE: date(2026, 12, 28), DECISION: date(2027, 1, 7)},
            id="christmas-2026-transfer-urgent",
        ),
        pytest.param(
            hel(2026, 12, 23, 10), "support_need", "normal",
            {ACKNOWLEDGE: date(2026, 12, 30), ASSESSMENT: date(2027, 1, 7)},
            id="christmas-2026-normal",
        ),
        # Independence Day on a weekday: Mon 6 Dec 2027, Thu 6 Dec 2029.
        pytest.param(
            hel(2027, 12, 3, 11), "basic_amount_reduction", "normal",
            {ACKNOWLEDGE: date(2027, 12, 9)},
            id="independence-2027-reduction",
        ),
        pytest.param(
            hel(2027, 12, 3, 11), "support_need", "urgent",
            {ACKNOWLEDGE: date(2027, 12, 7), ASSESSMENT: date(2027, 12, 15)},
            id="independence-2027-urgent",
        ),
        pytest.param(
            hel(2029, 12, 5, 8), "support_need", "urgent",
            {ACKNOWLEDGE: date(2029, 12, 7), ASSESSMENT: date(2029, 12, 17)},
            id="independence-2029-urgent",
        ),
        pytest.param(
            hel(2029, 12, 5, 8), "application_transfer", "normal",
            {ACKNOWLEDGE: date(2029, 12, 11), DECISION: date(2029, 12, 17)},
            id="independence-2029-transfer",
        ),
        # Year change: New Year's Day Thu 1 Jan 2026, Epiphany Tue 6 Jan 2026.
        pytest.param(
            hel(2025, 12, 31, 16), "support_need", "normal",
            {ACKNOWLEDGE: date(2026, 1, 7), ASSESSMENT: date(2026, 1, 13)},
            id="new-year-2026",
        ),
        pytest.param(
            hel(2026, 1, 5, 16), "support_need", "urgent",
            {ACKNOWLEDGE: date(2026, 1, 7), ASSESSMENT: date(2026, 1, 15)},
            id="epiphany-2026",
        ),
        # 23:30 UTC on Thu 8 Jan 2026 is Fri 9 Jan 01:30 in Helsinki: Friday is the day of
        # receipt, so urgent is due Monday, not Friday.
        pytest.param(
            utc(2026, 1, 8, 23, 30), "support_need", "urgent",
            {ACKNOWLEDGE: date(2026, 1, 12), ASSESSMENT: date(2026, 1, 20)},
            id="late-utc-is-next-day",
        ),
        pytest.param(
            utc(2026, 1, 8, 23, 30), "support_need", "normal",
            {ACKNOWLEDGE: date(2026, 1, 14), ASSESSMENT: date(2026, 1, 20)},
            id="late-utc-is-next-day-normal",
        ),
        # 21:30 UTC the same evening is still Thu 23:30 in Helsinki.
        pytest.param(
            utc(2026, 1, 8, 21, 30), "support_need", "urgent",
            {ACKNOWLEDGE: date(2026, 1, 9), ASSESSMENT: date(2026, 1, 19)},
            id="same-evening-still-thursday",
        ),
        # Same in summer time: 22:30 UTC Mon 15 Jun 2026 is Tue 16 Jun 01:30 EEST; the 7 days
        # skip Midsummer Eve (Fri 19 Jun) and end on Fri 26 Jun.
        pytest.param(
            utc(2026, 6, 15, 22, 30), "support_need", "urgent",
            {ACKNOWLEDGE: date(2026, 6, 17), ASSESSMENT: date(2026, 6, 26)},
            id="late-utc-summer",
        ),
        # A sender in New York: Thu 8 Jan 2026 19:00 EST is Fri 9 Jan 02:00 in Helsinki.
        pytest.param(
            datetime(2026, 1, 8, 19, 0, tzinfo=ZoneInfo("America/New_York")),
            "support_need", "urgent",
            {ACKNOWLEDGE: date(2026, 1, 12), ASSESSMENT: date(2026, 1, 20)},
            id="other-zone",
        ),
    ],
)
def test_due_dates(
    received_at: datetime, kind: str, urgency: str, expected: dict[str, date]
) -> None:
    assert due_dates(received_at, kind, urgency) == expected


def test_spring_dst_received_on_the_night_of_the_change() -> None:
    # Sun 29 Mar 2026 00:30 UTC = 02:30 EET, half an hour before the clocks go forward.
    deadlines = compute_deadlines(utc(2026, 3, 29, 0, 30), "support_need", "urgent", DEFAULT)
    assert deadlines[0] == Deadline(ACKNOWLEDGE, eod(2026, 3, 30))
    assert deadlines[0].due_at.utcoffset() == timedelta(hours=3)
    assert deadlines[0].due_at == datetime(2026, 3, 30, 20, 59, 59, 999999, tzinfo=UTC)
    # 7 working days: Mon 30, Tue 31, Wed 1, Thu 2 Apr, then Easter, Tue 7, Wed 8, Thu 9 Apr.
    assert deadlines[1] == Deadline(ASSESSMENT, eod(2026, 4, 9))


def test_autumn_dst_deadline_moves_to_winter_time() -> None:
    # Fri 23 Oct 2026 21:30 UTC = Sat 24 Oct 00:30 EEST; the clocks go back on Sun 25 Oct.
    deadlines = compute_deadlines(utc(2026, 10, 23, 21, 30), "support_need", "normal", DEFAULT)
    assert deadlines[0] == Deadline(ACKNOWLEDGE, eod(2026, 10, 28))  # Mon 26, Tue 27, Wed 28
    assert deadlines[0].due_at.utcoffset() == timedelta(hours=2)
    assert deadlines[0].due_at == datetime(2026, 10, 28, 21, 59, 59, 999999, tzinfo=UTC)
    assert deadlines[1] == Deadline(ASSESSMENT, eod(2026, 11, 3))


def test_urgent_assistance_is_urgent_whatever_the_stored_urgency() -> None:
    normal = compute_deadlines(hel(2026, 4, 2, 18), "urgent_assistance", "normal", DEFAULT)
    assert normal[0] == Deadline(ACKNOWLEDGE, eod(2026, 4, 7))


def test_enum_members_are_accepted() -> None:
    by_enum = compute_deadlines(hel(2026, 4, 2), Kind.SUPPORT_NEED, Urgency.URGENT, DEFAULT)
    by_str = compute_deadlines(hel(2026, 4, 2), "support_need", "urgent", DEFAULT)
    assert by_enum == by_str


def test_the_policy_is_applied() -> None:
    policy = SlaPolicy(
        urgent_ack_working_days=0, ack_working_days=5,
        assessment_working_days=3, decision_working_days=10,
    )
    # Received Sat 4 Apr 2026 (Easter weekend): zero days rolls to Tue 7 Apr (Act 150/1930 § 5).
    urgent = compute_deadlines(hel(2026, 4, 4, 10), "support_need", "urgent", policy)
    assert urgent == [
        Deadline(ACKNOWLEDGE, eod(2026, 4, 7)),
        Deadline(ASSESSMENT, eod(2026, 4, 9)),
    ]
    transfer = compute_deadlines(hel(2026, 4, 4, 10), "application_transfer", "normal", policy)
    assert transfer == [
        Deadline(ACKNOWLEDGE, eod(2026, 4, 13)),
        Deadline(DECISION, eod(2026, 4, 20)),
    ]


@pytest.mark.parametrize(
    ("kind", "urgency", "match"),
    [
        ("support", "normal", "kind"),
        ("support_need", "high", "urgency"),
        ("", "normal", "kind"),
    ],
)
def test_unknown_kind_or_urgency_is_refused(kind: str, urgency: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute_deadlines(hel(2026, 4, 2), kind, urgency, DEFAULT)


def test_naive_received_at_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        compute_deadlines(datetime(2026, 4, 2, 18, 0), "support_need", "normal", DEFAULT)


# --- Deadline -------------------------------------------------------------------------------


def test_deadline_is_frozen_and_checked() -> None:
    deadline = Deadline(ACKNOWLEDGE, eod(2026, 4, 7))
    with pytest.raises(FrozenInstanceError):
        deadline.name = DECISION  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown deadline"):
        Deadline("ack", eod(2026, 4, 7))
    with pytest.raises(ValueError, match="aware"):
        Deadline(ACKNOWLEDGE, datetime(2026, 4, 7, 23, 59))


# --- which replies meet which deadline ------------------------------------------------------


def test_acknowledge_is_met_by_any_reply() -> None:
    assert deadline_met_by(ACKNOWLEDGE) == frozenset({
        "received", "assigned", "client_contacted", "assessment_started", "info_requested",
        "returned", "decision_made", "closed",
    })
    assert deadline_met_by(ACKNOWLEDGE) == frozenset(status.value for status in ReplyStatus)


def test_assessment_is_met_only_once_it_has_started() -> None:
    met = deadline_met_by(ASSESSMENT)
    assert met == frozenset({"assessment_started", "decision_made", "closed"})
    for status in ("received", "assigned", "client_contacted", "info_requested", "returned"):
        assert status not in met


def test_decision_is_met_by_a_decision_or_closing() -> None:
    met = deadline_met_by(DECISION)
    assert met == frozenset({"decision_made", "closed"})
    assert "assessment_started" not in met
    assert ReplyStatus.DECISION_MADE in met  # StrEnum members match the plain strings


def test_every_deadline_name_has_its_statuses() -> None:
    for name in DEADLINE_NAMES:
        assert deadline_met_by(name) <= deadline_met_by(ACKNOWLEDGE)
    with pytest.raises(ValueError, match="unknown deadline"):
        deadline_met_by("ack")


# --- properties -----------------------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2090, 12, 31),
    timezones=st.sampled_from([UTC, HELSINKI, ZoneInfo("America/New_York")]),
)
kinds = st.sampled_from([kind.value for kind in Kind])
urgencies = st.sampled_from([urgency.value for urgency in Urgency])
policies = st.builds(
    lambda urgent, extra, assessment, decision: SlaPolicy(
        urgent_ack_working_days=urgent, ack_working_days=urgent + extra,
        assessment_working_days=assessment, decision_working_days=decision,
    ),
    st.integers(0, 10), st.integers(0, 10), st.integers(0, 30), st.integers(0, 30),
)


@given(instants, kinds, urgencies, policies)
def test_every_deadline_ends_a_working_day_after_receipt(
    received_at: datetime, kind: str, urgency: str, policy: SlaPolicy
) -> None:
    deadlines = compute_deadlines(received_at, kind, urgency, policy)
    assert deadlines[0].name == ACKNOWLEDGE
    assert len({deadline.name for deadline in deadlines}) == len(deadlines)
    for deadline in deadlines:
        due_day = helsinki_date(deadline.due_at)
        assert is_working_day(due_day)
        assert due_day >= helsinki_date(received_at)
        assert deadline.due_at > received_at
        assert deadline.due_at == datetime.combine(due_day, time.max, tzinfo=HELSINKI)


@given(instants, kinds)
def test_urgent_is_never_due_later_than_normal(received_at: datetime, kind: str) -> None:
    urgent = compute_deadlines(received_at, kind, "urgent", DEFAULT)
    normal = compute_deadlines(received_at, kind, "normal", DEFAULT)
    assert urgent[0].due_at <= normal[0].due_at
    assert urgent[1:] == normal[1:]
