"""What a case row keeps for § 11 statistics and the deadlines: enum bit masks, the facts a reply
brings, the milestones it meets."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from enum import Enum
from typing import Any

from broker.domain.deadlines import DEADLINES
from broker.store.ledger import CaseRow, Connection
from schemas.enums import ReplyStatus
from schemas.models import Reply

__all__ = ["enum_mask", "milestones", "statistics_facts"]


def enum_mask(members: Iterable[Enum]) -> int:
    """Bit i set for the i-th member of the enum (declaration order is part of the stored format)."""
    mask = 0
    for member in members:
        mask |= 1 << list(type(member)).index(member)
    return mask


async def statistics_facts(_conn: Connection, _case: CaseRow, reply: Reply) -> dict[str, Any]:
    """What § 11 statistics need from a reply, kept on the case (no free text, no names)."""
    values: dict[str, Any] = {}
    if reply.referral_quality is not None:
        values["referral_quality"] = reply.referral_quality.value
    if reply.decision is not None:
        values["decision"] = reply.decision.value
    if reply.status is ReplyStatus.CLOSED:
        values["outcome"] = reply.outcome.value if reply.outcome else None
        if reply.client_feedback is not None:
            values["feedback_rating"] = reply.client_feedback.rating
            values["feedback_heard"] = reply.client_feedback.heard
        if reply.findings:
            values["findings_mask"] = enum_mask(reply.findings)
    return values


def milestones(case: CaseRow, status: ReplyStatus, now: dt.datetime) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for rule in DEADLINES:  # any reply acknowledges; later steps meet the later deadlines
        if status.value in rule.met_by and getattr(case, rule.met_column) is None:
            values[rule.met_column] = now
    if status is ReplyStatus.CLOSED:
        values["closed_at"] = now
    return values
