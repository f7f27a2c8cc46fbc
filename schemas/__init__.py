"""Common schema v1 of kela-handoff: models, enums and validators. No I/O."""

from schemas.enums import CaseState, Kind, ReplyStatus, UpdateType, Urgency
from schemas.errors import ErrorItem, SchemaError
from schemas.hetu import (
    IDENTITY_CODE_RE,
    contains_identity_code,
    is_valid_hetu,
    mask_identity_codes,
    validate_hetu,
)
from schemas.models import Answer, Referral, Reply
from schemas.rules import parse_answer, parse_referral, parse_reply

__all__ = [
    "IDENTITY_CODE_RE", "Answer", "CaseState", "ErrorItem", "Kind", "Referral", "Reply", "ReplyStatus",
    "SchemaError", "UpdateType", "Urgency", "contains_identity_code", "is_valid_hetu",
    "mask_identity_codes", "parse_answer", "parse_referral", "parse_reply", "validate_hetu",
]
