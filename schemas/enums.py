"""Enumerations of the common schema v1; their values are the public contract (DESIGN § 4, § 11)."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CaseState",
    "ClientFeedbackRating",
    "ConsentMethod",
    "Decision",
    "Finding",
    "Kind",
    "Need",
    "Outcome",
    "ReferralQuality",
    "ReplyStatus",
    "UpdateType",
    "Urgency",
]


class Kind(StrEnum):
    SUPPORT_NEED = "support_need"
    SUPPORT_NEED_WITHOUT_CONSENT = "support_need_without_consent"
    APPLICATION_TRANSFER = "application_transfer"
    BASIC_AMOUNT_REDUCTION = "basic_amount_reduction"
    URGENT_ASSISTANCE = "urgent_assistance"


class Urgency(StrEnum):
    URGENT = "urgent"
    NORMAL = "normal"


class ConsentMethod(StrEnum):
    ORAL = "oral"
    WRITTEN = "written"
    ELECTRONIC = "electronic"


class Need(StrEnum):
    HOUSING = "housing"
    INCOME = "income"
    DEBT = "debt"
    SUBSTANCE_USE = "substance_use"
    MENTAL_HEALTH = "mental_health"
    UNEMPLOYMENT = "unemployment"
    YOUTH_WITHOUT_INCOME = "youth_without_income"
    IMMIGRATION = "immigration"
    DISABILITY = "disability"
    OLD_AGE = "old_age"
    FAMILY = "family"
    VIOLENCE = "violence"
    HEALTH = "health"
    DIGITAL_EXCLUSION = "digital_exclusion"
    OTHER = "other"


class ReplyStatus(StrEnum):
    RECEIVED = "received"
    ASSIGNED = "assigned"
    CLIENT_CONTACTED = "client_contacted"
    ASSESSMENT_STARTED = "assessment_started"
    INFO_REQUESTED = "info_requested"
    RETURNED = "returned"
    DECISION_MADE = "decision_made"
    CLOSED = "closed"


class Decision(StrEnum):
    GRANTED = "granted"
    PARTLY_GRANTED = "partly_granted"
    DENIED = "denied"


class Outcome(StrEnum):
    SERVICES_ARRANGED = "services_arranged"
    CLIENT_DECLINED = "client_declined"
    NO_NEED = "no_need"
    UNREACHABLE = "unreachable"
    MOVED = "moved"
    OTHER = "other"


class ReferralQuality(StrEnum):
    SUFFICIENT = "sufficient"
    INSUFFICIENT_INFORMATION = "insufficient_information"
    NOT_NEEDED = "not_needed"


class Finding(StrEnum):
    HOUSING_SHORTAGE = "housing_shortage"
    BENEFIT_GAP = "benefit_gap"
    SERVICE_GAP = "service_gap"
    LONG_WAITING_TIME = "long_waiting_time"
    LANGUAGE_BARRIER = "language_barrier"
    DIGITAL_BARRIER = "digital_barrier"
    COOPERATION_GAP = "cooperation_gap"
    OTHER = "other"


ClientFeedbackRating = int


class CaseState(StrEnum):
    RECEIVED = "received"
    ROUTED = "routed"
    DELIVERED = "delivered"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in_progress"
    INFO_REQUESTED = "info_requested"
    RETURNED = "returned"
    UNROUTABLE = "unroutable"
    FAILED = "failed"
    CLOSED = "closed"


class UpdateType(StrEnum):
    REPLY = "reply"
    ESCALATION = "escalation"
    REROUTED = "rerouted"
    UNROUTABLE = "unroutable"
    DELIVERY_FAILED = "delivery_failed"
