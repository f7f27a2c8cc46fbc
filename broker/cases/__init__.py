"""Every input's transaction: the case, its events, its outbox rows, its audit record, Kela's feed.

`CaseService` (in `service`) is the entry point; the other names are what its callers need.
"""

from broker.cases.feed import dump_intake_update, dump_update
from broker.cases.hashing import body_hash
from broker.cases.results import AcceptResult, Observations, ReplyResult
from broker.cases.service import CaseService

__all__ = ["AcceptResult", "CaseService", "Observations", "ReplyResult", "body_hash",
           "dump_intake_update", "dump_update"]
