"""The store's errors under the names its callers use, so they never import SQLAlchemy themselves."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

__all__ = ["UniqueViolation"]

# A unique constraint refused a row (a concurrent duplicate won the race), or a compare-and-set found
# the row changed: the caller re-reads and answers from what is there.
UniqueViolation = IntegrityError
