"""SLA deadlines of a referral and the replies that meet them (DESIGN § 8).

The deadlines are fixed when a referral is received, from its kind and urgency and the policy in
force, so that a later change of policy does not move the deadline of a case already running. They
are days in Finland: the day of receipt is the Helsinki date of `received_at`, not counted itself
(Act 150/1930 § 2), and each deadline is due by the end of its last working day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.domain.workdays import add_working_days, end_of_working_day, helsinki_date
from schemas.enums import Kind, ReplyStatus, Urgency

__all__ = [
    "ACKNOWLEDGE",
    "ASSESSMENT",
    "DEADLINES",
    "DEADLINE_NAMES",
    "DECISION",
    "Deadline",
    "DeadlineRule",
    "SlaPolicy",
    "compute_deadlines",
    "deadline_met_by",
]

ACKNOWLEDGE = "acknowledge"
ASSESSMENT = "assessment"
DECISION = "decision"

# Kinds whose referral starts a social-welfare service-need assessment (SHL § 36). A reduced basic
# amount is a notice of a Kela decision, and an application transfer is decided under the Social
# Assistance Act instead.
_ASSESSED_KINDS = frozenset({Kind.SUPPORT_NEED, Kind.SUPPORT_NEED_WITHOUT_CONSENT,
                             Kind.URGENT_ASSISTANCE})
_DECIDED_KINDS = frozenset({Kind.APPLICATION_TRANSFER})


@dataclass(frozen=True, slots=True)
class DeadlineRule:
    """One deadline: its name, the replies that meet it, and the two `cases` columns that keep it.

    `due_column` holds when it is due (fixed at intake) and `met_column` when a reply first met it;
    the SLA clock, the /metrics gauges, the statistics, the case service and the dashboard all read
    these from here.
    """

    name: str
    due_column: str
    met_column: str
    met_by: frozenset[str]


DEADLINES: tuple[DeadlineRule, ...] = (
    DeadlineRule(ACKNOWLEDGE, "ack_due_at", "acknowledged_at",
                 frozenset(status.value for status in ReplyStatus)),
    DeadlineRule(ASSESSMENT, "assessment_due_at", "assessment_started_at",
                 frozenset(status.value for status in (
                     ReplyStatus.ASSESSMENT_STARTED, ReplyStatus.DECISION_MADE, ReplyStatus.CLOSED))),
    DeadlineRule(DECISION, "decision_due_at", "decided_at",
                 frozenset(status.value for status in (ReplyStatus.DECISION_MADE, ReplyStatus.CLOSED))),
)
DEADLINE_NAMES: tuple[str, ...] = tuple(rule.name for rule in DEADLINES)


class SlaPolicy(BaseModel):
    """The `[sla]` section of the settings: working days allowed for each deadline.

    Defaults are DESIGN § 8. They are configuration rather than constants because the statutory
    bounds are outer limits and a wellbeing services county may promise its partners faster
    service; a county can tighten them, and zero means "by the end of the day of receipt".
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    urgent_ack_working_days: int = Field(
        default=1, ge=0,
        description="Urgent referrals: acknowledged by the end of the next working day.",
    )
    ack_working_days: int = Field(
        default=3, ge=0, description="Other referrals: acknowledged within 3 working days.",
    )
    assessment_working_days: int = Field(
        default=7, ge=0,
        description="Service-need assessment started at latest on the 7th working day (SHL § 36).",
    )
    decision_working_days: int = Field(
        default=7, ge=0,
        description="Application transfers: decision at latest on the 7th working day "
        "(Social Assistance Act 1412/1997 § 14 a).",
    )
    clock_interval_s: float = Field(
        default=30.0, gt=0, description="How often the SLA clock looks for passed deadlines.",
    )

    @model_validator(mode="after")
    def _urgent_not_slower(self) -> Self:
        # An urgent referral allowed more time than a normal one is a typo in the config, and it
        # would quietly deprioritise exactly the cases § 36 says must be handled at once.
        if self.urgent_ack_working_days > self.ack_working_days:
            raise ValueError("urgent_ack_working_days must not exceed ack_working_days")
        return self


@dataclass(frozen=True, slots=True)
class Deadline:
    """One deadline of a case; `due_at` is the last instant at which it is still met."""

    name: str
    due_at: datetime

    def __post_init__(self) -> None:
        # Checked here because deadlines are also rebuilt from stored rows, where a misspelt name
        # would make escalation look up the wrong reply statuses.
        if self.name not in DEADLINE_NAMES:
            raise ValueError(f"unknown deadline {self.name!r}; expected one of {DEADLINE_NAMES}")
        if self.due_at.tzinfo is None or self.due_at.utcoffset() is None:
            raise ValueError("due_at must be timezone-aware")


_E = TypeVar("_E", bound=StrEnum)


def _member(enum: type[_E], value: str, field: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ValueError(f"unknown {field} {value!r}; expected one of {allowed}") from None


def compute_deadlines(
    received_at: datetime, kind: str, urgency: str, policy: SlaPolicy
) -> list[Deadline]:
    """The deadlines a case gets on receipt, acknowledgement first.

    Every referral is acknowledged, so the sender knows it reached a case worker (DESIGN § 8).
    Support-need notices (with or without consent, SHL § 35) and urgent-assistance referrals get
    an assessment deadline: SHL § 36 requires a service-need assessment to start at latest on the
    7th working day. The statute sets that bound for children needing special support, persons
    aged 75 or over and recipients of the highest care allowance; DESIGN § 8 applies it to every
    assessed kind as the service level. Urgent need itself is to be assessed immediately (§ 36),
    which the short acknowledgement deadline approximates. An application transfer gets a decision
    deadline instead, from the Social Assistance Act § 14 a (7th working day after the
    application arrived). A basic-amount reduction informs social services of a decision Kela
    has already made, so only its acknowledgement is tracked.

    Urgent-assistance referrals are treated as urgent whatever `urgency` says, as
    `schemas.rules.parse_referral` normalises them, so a stored row with a stale urgency cannot
    get the slower acknowledgement.

    The clock starts at `received_at`, the instant the broker received the referral: the earliest
    one it can vouch for. Kela's own receipt of an application, from which § 14 a may be counted,
    can be earlier.
    """
    kind_ = _member(Kind, kind, "kind")
    urgency_ = _member(Urgency, urgency, "urgency")
    day = helsinki_date(received_at)

    def due(working_days: int) -> datetime:
        return end_of_working_day(add_working_days(day, working_days))

    urgent = urgency_ is Urgency.URGENT or kind_ is Kind.URGENT_ASSISTANCE
    ack_days = policy.urgent_ack_working_days if urgent else policy.ack_working_days
    deadlines = [Deadline(ACKNOWLEDGE, due(ack_days))]
    if kind_ in _ASSESSED_KINDS:
        deadlines.append(Deadline(ASSESSMENT, due(policy.assessment_working_days)))
    if kind_ in _DECIDED_KINDS:
        deadlines.append(Deadline(DECISION, due(policy.decision_working_days)))
    return deadlines


def deadline_met_by(deadline_name: str) -> frozenset[str]:
    """The reply statuses that meet the deadline `deadline_name`.

    acknowledge: any reply at all. Every status, even `returned` (misrouted, sent back), shows that
    a person at the welfare area has read the referral, which is what the acknowledgement promises
    the sender (DESIGN § 8).

    assessment: `assessment_started`, or a later step that implies the case was dealt with
    (`decision_made`, `closed`). SHL § 36 requires the assessment to *start* by the deadline, so
    contacting the client or asking Kela for more information does not meet it.

    decision: `decision_made`, or `closed`, which ends the case (for instance a withdrawn
    application) and with it the duty to decide under the Social Assistance Act § 14 a.
    """
    for rule in DEADLINES:
        if rule.name == deadline_name:
            return rule.met_by
    raise ValueError(f"unknown deadline {deadline_name!r}; expected one of {DEADLINE_NAMES}")
