"""Which failures mean "try again later" and which mean "this message cannot be processed".

One place decides it, for every consumer and for the HTTP edge: a store or transport that is
unavailable (connection refused or reset, timeouts, a database shutting down or refusing connections,
serialization failures, deadlocks, a full disk) is a condition of the world, not of the message, so it
backs off and retries and never counts towards the poison-message limit; a consumer that dead-lettered
on it turned a 15-second PostgreSQL outage into hundreds of false `failed` cases. Everything else that
a handler raises (a body that does not parse, a bug) is the message's own fault: poison.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from typing import Literal

import sqlalchemy.exc as sa_exc

__all__ = ["UNAVAILABLE_MAX_DELAY_S", "FailureKind", "classify", "is_unavailable",
           "unavailable_reason"]

FailureKind = Literal["unavailable", "poison"]

# The longest wait between tries while a store or broker is away: outages seen in practice (a
# restart, a failover) last seconds to a minute, and a recovered service should be used soon.
UNAVAILABLE_MAX_DELAY_S = 30.0

# SQLSTATE classes and codes that say "the database could not do it now", not "the request is wrong".
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58")  # connection, resources, operator, system
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock n/a
_TRANSIENT_OS_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN})
# SQLite's "the database is busy / the disk is full / cannot open" family, by its message: the
# sqlite3 module exposes the extended code only from Python 3.11 on, and not through aiosqlite.
_TRANSIENT_CLASS_NAMES = frozenset({
    "ConnectionDoesNotExistError", "ConnectionFailureError", "PublishError",
    "ChannelInvalidStateError", "AMQPConnectionError", "ConnectionClosed", "ChannelClosed"})
_SQLITE_TRANSIENT_WORDS = ("locked", "busy", "disk is full", "disk i/o error", "unable to open")


def _sqlstate(exc: BaseException) -> str | None:
    for attr in ("sqlstate", "pgcode"):
        value = getattr(exc, attr, None)
        if isinstance(value, str) and len(value) == 5:
            return value
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what it wraps (SQLAlchemy's `.orig`) and its causes, without cycles."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen) or len(seen) > 16:
            continue
        seen.append(current)
        orig = getattr(current, "orig", None)
        todo += [orig if isinstance(orig, BaseException) else None,
                 current.__cause__, current.__context__]
    return seen


def _one_is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):  # pool timeout
        return True
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | ConnectionError):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_OS_ERRNOS:
        return True
    state = _sqlstate(exc)
    if state is not None:
        return state in _TRANSIENT_SQLSTATES or state[:2] in _TRANSIENT_SQLSTATE_CLASSES
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return any(word in text for word in _SQLITE_TRANSIENT_WORDS)
    # asyncpg's and aio-pika's connection-level errors carry no SQLSTATE when the socket is gone.
    if type(exc).__name__ in _TRANSIENT_CLASS_NAMES:
        return True
    # What a connection says after its server went away mid-operation: asyncpg's "another operation
    # is in progress" (a timed-out call still being cancelled), SQLAlchemy's "connection is closed".
    if type(exc).__name__ in {"InterfaceError", "ResourceClosedError"}:
        text = str(exc).lower()
        return "another operation is in progress" in text or "connection is closed" in text \
            or "connection was closed" in text
    return False


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc`, or anything it wraps, says a store or transport is unavailable now."""
    return any(_one_is_unavailable(e) for e in _chain(exc))


def classify(exc: BaseException) -> FailureKind:
    return "unavailable" if is_unavailable(exc) else "poison"


def unavailable_reason(exc: BaseException) -> str:
    """A bounded, data-free reason: the class of the innermost cause (its message may hold data)."""
    innermost = _chain(exc)[-1]
    return f"unavailable: {type(innermost).__name__}"
