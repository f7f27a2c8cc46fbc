"""structlog set-up with a redaction processor: identity codes never reach a log line.

Code logs ids and codes, never bodies; the redactor is the second line of defence for anything that
slips through (an exception message, a third-party log record).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from schemas.hetu import mask_identity_codes

__all__ = ["configure_logging", "redact_identity_codes"]

_HANDLER_NAME = "handoff-redacted-stderr"
_KEPT_AS_IS = (int, float, bool, type(None))


def _scrub(value: Any) -> Any:
    """`value` with identity codes masked (schemas.hetu: anywhere, any case, any neighbour).

    Anything that is not plain data is rendered as the renderers would render it (repr) and masked:
    an exception object, bytes of a request line or a dataclass carry their text into the log too."""
    if isinstance(value, str):
        return mask_identity_codes(value)
    if isinstance(value, _KEPT_AS_IS):
        return value
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return mask_identity_codes(repr(value))


def redact_identity_codes(_logger: Any, _method: str,
                          event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask identity codes in every key and value; run it after exceptions are formatted."""
    redacted = {_scrub(k): _scrub(v) for k, v in event_dict.items()}
    event_dict.clear()
    event_dict.update(redacted)
    return event_dict


def _format_exc_then_redact(logger: Any, method: str,
                            event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict = structlog.processors.format_exc_info(logger, method, event_dict)
    return redact_identity_codes(logger, method, event_dict)


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _format_exc_then_redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library (aiohttp's server errors, asyncpg, aio-pika): their
    # records go through the same redaction and renderer, so no line on stderr escapes the redactor.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    _format_exc_then_redact, renderer]))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Configuring again replaces our handler, and leaves anyone else's (a test runner's) alone.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(logging.WARNING)
    # Warnings (a library's SAWarning or ResourceWarning can quote a value) go the same way.
    logging.captureWarnings(True)
