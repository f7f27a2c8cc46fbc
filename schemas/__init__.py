"""Common schema v1 of kela-handoff: models, enums and validators. No I/O."""

from schemas.enums import CaseState, Kind, ReplyStatus, UpdateType, Urgency
from schemas.errors import ErrorItem, SchemaError
from schemas.hetu import is_valid_hetu, validate_hetu
from schemas.models import Answer, Referral, Reply
from schemas.rules import parse_answer, parse_referral, parse_reply

__all__ = [
    "Answer", "CaseState", "ErrorItem", "Kind", "Referral", "Reply", "ReplyStatus", "SchemaError",
    "UpdateType", "Urgency", "is_valid_hetu", "parse_answer", "parse_referral", "parse_reply",
    "validate_hetu",
]
