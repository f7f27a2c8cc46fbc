"""Municipal side: the envelope intakes receive, its signature, and file renderings."""

from adapters.municipal.envelope import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    envelope,
    render_envelope,
    sign,
    verify,
)

__all__ = ["EVENT_ID_HEADER", "SIGNATURE_HEADER", "envelope", "render_envelope", "sign", "verify"]
