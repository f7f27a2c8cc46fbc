"""Cross-field rules of DESIGN § 10 and § 11, and the entry points that apply them.

Kept out of model validators so each error can name the field it concerns (`["consent", "given"]`),
which a partner's developer needs to fix their sender.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from schemas.enums import Kind, ReplyStatus, Urgency
from schemas.errors import ErrorItem, SchemaError, error_items_from_pydantic
from schemas.models import Answer, Referral, Reply

__all__ = ["parse_answer", "parse_referral", "parse_reply", "referral_rule_errors", "reply_rule_errors"]


def _err(loc: list[str | int], msg: str, type_: str = "value_error") -> ErrorItem:
    return {"loc": loc, "msg": msg, "type": type_}


def referral_rule_errors(ref: Referral) -> list[ErrorItem]:
    errors: list[ErrorItem] = []
    if ref.kind is Kind.SUPPORT_NEED and (ref.consent is None or not ref.consent.given):
        errors.append(_err(["consent", "given"], "support_need requires the client's consent (given = true)",
                           "consent_required"))
    if ref.kind is Kind.SUPPORT_NEED_WITHOUT_CONSENT:
        if not (ref.justification and ref.justification.strip()):
            errors.append(_err(["justification"],
                               "support_need_without_consent requires a justification", "missing"))
        if ref.consent is not None and ref.consent.given:
            errors.append(_err(["consent", "given"],
                               "support_need_without_consent must not carry a given consent",
                               "consent_conflict"))
    return errors


def parse_referral(data: Any) -> Referral:
    """Validate a referral body; raise SchemaError with field-naming, input-free errors."""
    try:
        ref = Referral.model_validate(data)
    except ValidationError as exc:
        raise SchemaError(error_items_from_pydantic(exc)) from None
    errors = referral_rule_errors(ref)
    if errors:
        raise SchemaError(errors)
    if ref.kind is Kind.URGENT_ASSISTANCE and ref.urgency is not Urgency.URGENT:
        ref = ref.model_copy(update={"urgency": Urgency.URGENT})
    return ref


_REQUIRED_BY_STATUS: dict[ReplyStatus, str] = {
    ReplyStatus.ASSIGNED: "worker",
    ReplyStatus.INFO_REQUESTED: "question",
    ReplyStatus.RETURNED: "reason",
    ReplyStatus.DECISION_MADE: "decision",
    ReplyStatus.CLOSED: "outcome",
}


def reply_rule_errors(reply: Reply, kind: Kind | None = None) -> list[ErrorItem]:
    """Rules of the reply alone, plus (when the case's kind is known) the kind-fit rule of § 10."""
    errors: list[ErrorItem] = []
    required = _REQUIRED_BY_STATUS.get(reply.status)
    if required is not None and getattr(reply, required) in (None, ""):
        errors.append(_err([required], f"status {reply.status.value} requires {required}", "missing"))
    if reply.referral_quality is not None and reply.status not in (ReplyStatus.RECEIVED, ReplyStatus.CLOSED):
        errors.append(_err(["referral_quality"], "referral_quality is given only with received or closed",
                           "not_allowed"))
    for field in ("findings", "client_feedback"):
        if getattr(reply, field) is not None and reply.status is not ReplyStatus.CLOSED:
            errors.append(_err([field], f"{field} is given only with closed", "not_allowed"))
    if (kind is not None and reply.status is ReplyStatus.DECISION_MADE
            and kind is not Kind.APPLICATION_TRANSFER):
        errors.append(_err(["status"], "decision_made applies only to application_transfer referrals",
                           "status_not_for_kind"))
    return errors


def parse_reply(data: Any, kind: Kind | None = None) -> Reply:
    try:
        reply = Reply.model_validate(data)
    except ValidationError as exc:
        raise SchemaError(error_items_from_pydantic(exc)) from None
    errors = reply_rule_errors(reply, kind)
    if errors:
        raise SchemaError(errors)
    return reply


def parse_answer(data: Any) -> Answer:
    try:
        return Answer.model_validate(data)
    except ValidationError as exc:
        raise SchemaError(error_items_from_pydantic(exc)) from None
