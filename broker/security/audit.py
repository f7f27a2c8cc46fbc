"""Tamper-evident audit of every read and write of case data (issue 8, DESIGN § 1).

Each record says who (party id and role), did what (action), to which case (referral id), when, under
which request id, and with what outcome. It never holds an identity code, a name or free text, so the
audit outlives retention purges unchanged.

Records are appended in the same transaction as the read or write they describe: if the audit record
cannot be written, the data is not returned and the change is not committed.

Records form hash chains. A record's hash covers its fields and the previous record's hash, so
changing, deleting or inserting a row breaks every later link, and `verify` names the first break.
There are `CHAINS` chains, each with a head row (`audit_heads`): appending locks only one head row
until commit, so concurrent requests on different chains do not queue behind each other. A case's
records always fall in the same chain, in the order they committed. The heads are what an operator
would anchor outside the database (`handoff audit verify` prints them) to detect truncation as well.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from broker.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from broker.store import audit_chain
from broker.store.ledger import Connection, Engine, Ledger

__all__ = [
    "AUDITED_ACTIONS", "CHAINS", "GENESIS", "Actor", "AuditEntry", "BrokenLink", "VerifyReport",
    "append", "append_alone", "as_actor", "export", "operator_actor", "outcome_of", "record_hash",
    "system_actor", "verify",
]

CHAINS = 8
GENESIS = "0" * 64
_SEP = "\x1f"  # ASCII unit separator: cannot occur in any field, so fields cannot run together

Outcome = Literal["ok", "duplicate", "not_found", "conflict", "invalid", "forbidden", "failed"]

# What is recorded, by whom. Reads: a case opened (API or dashboard), listed in an inbox, carried in
# Kela's feed, or shown as a dead letter. Writes: every change of a case, by a party or the service.
AUDITED_ACTIONS: frozenset[str] = frozenset({
    # reads
    "case_read", "case_listed", "inbox_read", "feed_read", "dead_letter_read",
    # writes by parties
    "referral_received", "reply_applied", "answer_applied", "rerouted_by_operator",
    "dead_letter_replayed",
    # writes by the service
    "delivered", "delivery_failed", "update_pushed", "escalated", "purged",
    # access, not case data: the token lifecycle (`handoff token`)
    "token_created", "token_rotated", "token_revoked",
})


@dataclass(frozen=True)
class Actor:
    """Who acts: a party from a token, the dashboard's logged-in admin, the CLI, or the service."""

    party_id: str
    role: str
    request_id: str | None = None


def system_actor(component: str, request_id: str | None = None) -> Actor:
    """The service itself (delivery workers, SLA clock, file adapter, retention)."""
    return Actor(f"system:{component}", "system", request_id)


def operator_actor() -> Actor:
    """An operator at the command line, named by the OS account (the CLI has no token).

    The one identity of every `handoff` verb that reads or writes case data or access (tokens,
    dead letters, purge), so an access-request export finds an operator's actions under one name.
    """
    import getpass

    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid (a container): still an operator
        user = "unknown"
    return Actor(f"cli:{user}"[:64], "operator")


def as_actor(actor: Actor | str, role: str) -> Actor:
    """Callers inside the service name a party by its id; the role follows from what it does."""
    return actor if isinstance(actor, Actor) else Actor(actor, role)


def outcome_of(exc: BaseException) -> Outcome:
    """The audit outcome of a refused request, from the domain error that refused it."""
    if isinstance(exc, NotFound):
        return "not_found"
    if isinstance(exc, Conflict):
        return "conflict"
    if isinstance(exc, InvalidInput):
        return "invalid"
    if isinstance(exc, Forbidden):
        return "forbidden"
    return "failed"


@dataclass(frozen=True)
class AuditEntry:
    action: str
    referral_id: str | None = None
    outcome: str = "ok"


def _safe(entry: AuditEntry) -> AuditEntry:
    """A referral id is kept only as a canonical UUID: whatever else a caller put in a URL where a
    case id belongs (an identity code or a name typed by mistake) must not be stored here."""
    rid = entry.referral_id
    if rid is None:
        return entry
    try:
        canonical = str(uuid.UUID(rid)) if len(rid) == 36 else None
    except ValueError:
        canonical = None
    return entry if canonical == rid else AuditEntry(entry.action, None, entry.outcome)


def chain_of(key: str | None) -> int:
    return zlib.crc32((key or "").encode()) % CHAINS


def _stamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _tail(row: dict[str, Any]) -> str:
    """The hashed text after `n`, from the separator on (see `audit_chain.append_one_pg`)."""
    fields = (_stamp(row["at"]), row["party_id"], row["role"], row["action"], row["referral_id"] or "",
              row["request_id"] or "", row["outcome"])
    return _SEP + _SEP.join(fields)


def record_hash(prev_hash: str, row: dict[str, Any]) -> str:
    text = _SEP.join((prev_hash, str(row["chain"]), str(row["n"]))) + _tail(row)
    return hashlib.sha256(text.encode()).hexdigest()


async def append(conn: Connection, actor: Actor, entries: Sequence[AuditEntry],
                 at: dt.datetime) -> None:
    """Append `entries` to one chain inside the caller's transaction.

    Call it once per transaction and as late as possible: the chain's head row stays locked until
    the commit, and one head per transaction means no lock-order deadlock between transactions.
    """
    if not entries:
        return
    entries = [_safe(e) for e in entries]
    chain = chain_of(entries[0].referral_id or actor.request_id)
    if len(entries) == 1 and conn.dialect.name == "postgresql":
        await _append_one_pg(conn, chain, actor, entries[0], at)
        return
    head = await audit_chain.bump_head(conn, chain, len(entries))
    if head is None:
        raise RuntimeError(f"audit chain {chain} has no head row (is the ledger migrated?)")
    last_n, prev = head
    rows = []
    for i, entry in enumerate(entries):
        row: dict[str, Any] = {
            "chain": chain, "n": last_n - len(entries) + 1 + i, "at": at,
            "party_id": actor.party_id[:64], "role": actor.role[:16], "action": entry.action,
            "referral_id": entry.referral_id, "request_id": actor.request_id,
            "outcome": entry.outcome,
        }
        row["prev_hash"] = prev
        row["hash"] = prev = record_hash(prev, row)
        rows.append(row)
    await audit_chain.insert_records(conn, rows)
    await audit_chain.set_head_hash(conn, chain, prev)


async def _append_one_pg(conn: Connection, chain: int, actor: Actor, entry: AuditEntry,
                         at: dt.datetime) -> None:
    row: dict[str, Any] = {
        "at": at, "party_id": actor.party_id[:64], "role": actor.role[:16], "action": entry.action,
        "referral_id": entry.referral_id, "request_id": actor.request_id, "outcome": entry.outcome,
    }
    if not await audit_chain.append_one_pg(conn, chain, row, sep=_SEP, tail=_tail(row)):
        raise RuntimeError(f"audit chain {chain} has no head row (is the ledger migrated?)")


async def append_alone(ledger: Ledger, actor: Actor, entries: Sequence[AuditEntry],
                       at: dt.datetime) -> None:
    """A transaction of its own: for refused requests, whose transaction rolled back."""
    async with ledger.transaction() as conn:
        await append(conn, actor, entries, at)


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokenLink:
    chain: int
    n: int
    seq: int | None
    reason: str

    def describe(self) -> str:
        where = f"chain {self.chain}, record {self.n}" + (f" (seq {self.seq})" if self.seq else "")
        return f"{where}: {self.reason}"


@dataclass
class VerifyReport:
    records: int = 0
    heads: dict[int, tuple[int, str]] = field(default_factory=dict)
    broken: BrokenLink | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


async def verify(engine: Engine, *, batch: int = 5000) -> VerifyReport:
    """Walk every chain from its first record; stop at the first broken link.

    The heads and the chains are read in one snapshot (`audit_chain.snapshot`): a record and the
    head that counts it commit together, so on a live ledger both are in the snapshot or neither
    is, and any difference between a chain and its head is tampering, not a write that landed
    mid-walk. Rows come in batches of `batch`, so a large ledger is never held in memory.
    """
    report = VerifyReport()
    async with audit_chain.snapshot(engine) as conn:
        heads = await audit_chain.heads(conn)
        await audit_chain.check_in_transaction(conn)
        for chain, head_n, head_hash in heads:
            report.heads[chain] = (head_n, head_hash)
            expected_n, prev = 1, GENESIS
            async for row in audit_chain.chain_rows(conn, chain, batch):
                report.records += 1
                broken = _check(row, expected_n, prev)
                if broken is not None:
                    report.broken = broken
                    return report
                expected_n, prev = expected_n + 1, row["hash"]
            if expected_n - 1 != head_n or prev != head_hash:
                report.broken = BrokenLink(
                    chain, expected_n, None,
                    f"chain ends at record {expected_n - 1} but its head says {head_n} "
                    "(records after it were removed, or the head was changed)")
                return report
    return report


def _check(row: dict[str, Any], expected_n: int, prev: str) -> BrokenLink | None:
    chain, n, seq = int(row["chain"]), int(row["n"]), int(row["seq"])
    if n != expected_n:
        return BrokenLink(chain, expected_n, seq, f"record {expected_n} is missing (next found is {n})")
    if row["prev_hash"] != prev:
        return BrokenLink(chain, n, seq, "prev_hash does not match the previous record's hash")
    if record_hash(prev, row) != row["hash"]:
        return BrokenLink(chain, n, seq, "hash does not match the record's contents")
    return None


# --- export ------------------------------------------------------------------------------------


async def export(engine: Engine, start: dt.datetime, end: dt.datetime, *,
                 referral_id: str | None = None, party_id: str | None = None,
                 batch: int = 5000) -> AsyncIterator[str]:
    """JSON lines of the records in [start, end), oldest first, for a controller's access request."""
    query = audit_chain.ExportQuery(start, end, referral_id=referral_id, party_id=party_id)
    after = 0
    async with engine.connect() as conn:
        while True:
            rows = await query.batch(conn, after, batch)
            if not rows:
                return
            for r in rows:
                yield json.dumps({
                    "seq": r["seq"], "at": _stamp(r["at"]), "party_id": r["party_id"],
                    "role": r["role"], "action": r["action"], "referral_id": r["referral_id"],
                    "request_id": r["request_id"], "outcome": r["outcome"], "chain": r["chain"],
                    "n": r["n"], "prev_hash": r["prev_hash"], "hash": r["hash"],
                }, ensure_ascii=False)
            after = int(rows[-1]["seq"])
