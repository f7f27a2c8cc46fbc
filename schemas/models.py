"""Pydantic v2 models of the common schema v1 (DESIGN § 4 and § 11).

Field names are the public contract. The models are strict about unknown fields (a partner's typo must
be a 422 that names it, not silently dropped data). Rules that span fields live in `schemas.rules`, so
that their errors can name the field they are about.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
)

from schemas.enums import (
    ConsentMethod,
    Decision,
    Finding,
    Kind,
    Need,
    Outcome,
    ReferralQuality,
    ReplyStatus,
    Urgency,
)
from schemas.hetu import validate_hetu

__all__ = [
    "Answer", "Attachment", "Client", "ClientFeedback", "Consent", "KelaInfo", "Referral", "Reply",
    "Worker",
]

MAX_TEXT = 4000


def _timestamp_not_number(value: Any) -> Any:
    """JSON timestamps are ISO 8601 strings; pydantic's lax mode would read a number as epoch seconds."""
    if isinstance(value, bool | int | float):
        raise ValueError("must be an ISO 8601 date-time string with a UTC offset")
    return value


# Timestamps must carry an offset; booleans must be JSON booleans ("yes" or 1 is a 422, not True).
Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp_not_number)]
Flag = StrictBool

PersonalId = Annotated[str, StringConstraints(max_length=11, min_length=11), AfterValidator(validate_hetu)]
MunicipalityCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{3}$")]  # ASCII digits only
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
LongText = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Key = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/-]+$")]
Phone = Annotated[str, StringConstraints(min_length=3, max_length=40, pattern=r"^[0-9 +()-]+$")]
Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Client(_Model):
    personal_id: PersonalId = Field(description="Henkilötunnus; special-category data, never logged.")
    first_names: ShortText
    last_name: ShortText
    language: Language = Field(description="ISO 639-1 code, e.g. fi, sv, en, ar, so, ru.")
    interpreter_needed: Flag = False
    phone: Phone | None = None
    email: Email | None = None
    address: Annotated[str, StringConstraints(max_length=500)] | None = None
    municipality_code: MunicipalityCode = Field(
        description="3-digit Statistics Finland code of the municipality of residence."
    )


class Consent(_Model):
    given: Flag
    given_at: Timestamp | None = None
    method: ConsentMethod | None = None
    scope: Annotated[str, StringConstraints(max_length=1000)] | None = None


class KelaInfo(_Model):
    office: ShortText | None = None
    handler_id: ShortText | None = Field(default=None, description="Pseudonymous handler id.")
    contact_phone: Phone | None = None
    decision_refs: list[Key] = Field(default_factory=list, max_length=50)


class Attachment(_Model):
    filename: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^/\\\x00]+$")]
    media_type: Annotated[str, StringConstraints(pattern=r"^[\w.+-]+/[\w.+-]+$", max_length=127)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(ge=0, le=10 * 1024**3)]


class Referral(_Model):
    """A referral from Kela to the social services of the client's home area."""

    schema_version: Literal["1"] = "1"
    kela_reference: Key = Field(description="Kela's own id, unique per sender: the idempotency key.")
    referral_id: uuid.UUID | None = Field(default=None, description="Assigned by the broker.")
    kind: Kind
    urgency: Urgency = Urgency.NORMAL
    client: Client
    consent: Consent | None = None
    justification: LongText | None = Field(
        default=None, description="Required for support_need_without_consent (SHL § 35(2))."
    )
    needs: list[Need] = Field(default_factory=list, max_length=len(Need))
    description: LongText | None = None
    kela: KelaInfo = Field(default_factory=KelaInfo)
    attachments: list[Attachment] = Field(default_factory=list, max_length=100)
    sent_at: Timestamp
    received_at: Timestamp | None = Field(default=None, description="Set by the broker.")


class Worker(_Model):
    name: ShortText
    title: ShortText | None = None
    phone: Phone | None = None


class ClientFeedback(_Model):
    rating: Annotated[int, Field(ge=1, le=5, strict=True)]
    heard: Flag | None = None


class Reply(_Model):
    """An answer of the intake team to a referral (organiser -> Kela)."""

    reply_id: Key = Field(description="Sender's id, unique per case: the idempotency key.")
    status: ReplyStatus
    worker: Worker | None = None
    question: LongText | None = None
    reason: LongText | None = None
    suggested_municipality_code: MunicipalityCode | None = None
    decision: Decision | None = None
    outcome: Outcome | None = None
    message: LongText | None = None
    sent_at: Timestamp
    referral_quality: ReferralQuality | None = None
    findings: list[Finding] | None = Field(default=None, max_length=len(Finding))
    client_feedback: ClientFeedback | None = None


class Answer(_Model):
    """Kela's answer to an intake's information request."""

    answer_id: Key
    message: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
    sent_at: Timestamp
