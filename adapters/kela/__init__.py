"""Kela side: notices in (JSON, or XML in Kela's vocabulary); one-notice XML out for intakes."""

from adapters.kela.notices_json import MalformedBody, parse_referral_json
from adapters.kela.notices_xml import (
    NAMESPACE,
    NoticeBatchError,
    NoticeResult,
    notices_xsd,
    parse_notices,
    render_notice_batch,
    render_referral_xml,
)

__all__ = [
    "NAMESPACE", "MalformedBody", "NoticeBatchError", "NoticeResult", "notices_xsd",
    "parse_notices", "parse_referral_json", "render_notice_batch", "render_referral_xml",
]
