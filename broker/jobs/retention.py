"""Retention (issue 8): remove the personal data of cases closed long enough ago.

What stays, and why:
- every column of `cases` except `referral_json`, so § 11 statistics read the same before and after;
- `kela_reference`, `body_sha256` and each event's `result`, so a repeated send from Kela or the
  intake is still recognised (idempotency) and Kela's feed still names the case;
- each event and feed entry with its type, time, area, state and codes (reply status, outcome,
  decision, quality, findings), so the case history and the dashboard timeline still read;
- the audit chain, untouched (it never held personal data), plus one `purged` record per case.

What goes: the referral (identity code, names, contacts, description), and every free-text or
personal field of events, feed entries, outbox and dead-letter envelopes (messages, questions,
reasons written by people, workers' names and phones, answers). The rewrite is an allow-list: a key
that is not known to be a code is dropped, so a field added to the schema later is purged by default.

A purged case keeps `state = closed`, gets `purged_at`, and reads through the API with
`referral: {}` and `"purged": true` on each minimised event.

Concurrency: each batch is one transaction that takes its cases with `FOR UPDATE SKIP LOCKED` on
PostgreSQL, so several processes (the scheduled job in every replica, an operator's CLI run) share
the work without waiting for or repeating each other; SQLite has one writer anyway.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from broker.domain.workdays import HELSINKI, helsinki_date
from broker.jobs.periodic import run_periodically
from broker.security.audit import Actor, AuditEntry, append, chain_of, system_actor
from broker.store import retention as queries
from broker.store.ledger import Connection, Ledger, dumps, utcnow

__all__ = [
    "PurgePlan", "RetentionJob", "minimal_data", "minimal_envelope", "plan", "policy_cutoff", "purge",
]

log = structlog.get_logger(__name__)

# Allow-lists: keys whose values are codes, identifiers or timestamps, never words of a person.
# `reason` at the top level is always the broker's own wording (routing, delivery, escalation); an
# intake's free-text reason lives inside `reply`, where it is not allowed.
_TOP_KEYS = frozenset({
    "referral_id", "kela_reference", "type", "at", "area", "state", "channel", "via", "message_id",
    "deadline", "due_at", "from_area", "to_area", "by", "reason", "attempts", "dead_letter_id",
})
_NESTED_KEYS: dict[str, frozenset[str]] = {
    "result": frozenset({"referral_id", "reply_id", "answer_id", "state", "area", "reason"}),
    "reply": frozenset({"reply_id", "status", "decision", "outcome", "referral_quality", "findings",
                        "sent_at"}),
    "answer": frozenset({"answer_id", "sent_at"}),
}
_ENVELOPE_KEYS = ("event_id", "type", "referral_id", "area", "occurred_at")
_SCALARS = (str, int, float, bool, type(None))


def _codes(data: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in allowed & data.keys():
        value = data[key]
        if isinstance(value, _SCALARS):
            out[key] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = list(value)  # findings: a list of codes
    return out


def minimal_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """The non-personal form of an event's data or a feed item (see the module docstring)."""
    out = _codes(data, _TOP_KEYS)
    for key, allowed in _NESTED_KEYS.items():
        nested = data.get(key)
        if isinstance(nested, Mapping):
            out[key] = _codes(nested, allowed)
    out["purged"] = True
    return out


def minimal_envelope(body: str, *, fallback: Mapping[str, Any]) -> str:
    """The non-personal form of an outbox or dead-letter body (a webhook envelope, DESIGN § 7).

    An answer envelope carries the answer itself as `data`; any other carries a feed item, an
    escalation or (thin) nothing. A body that is not a JSON object becomes an envelope built from
    the row's own columns (`fallback`).
    """
    try:
        env = json.loads(body)
    except ValueError:
        env = None
    if not isinstance(env, dict):
        env = dict(fallback)
    out = {k: env.get(k) for k in _ENVELOPE_KEYS if isinstance(env.get(k), _SCALARS)}
    raw = env.get("data")
    data: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    if env.get("type") == "answer":
        out["data"] = {**_codes(data, _NESTED_KEYS["answer"]), "purged": True}
    else:
        out["data"] = minimal_data(data)
    return dumps(out)


# --- policy --------------------------------------------------------------------------------------


def policy_cutoff(months_after_close: int, now: dt.datetime | None = None) -> dt.date:
    """Today in Finland minus the policy's months (the 31st becomes the month's last day)."""
    today = helsinki_date(now or utcnow())
    year, month0 = divmod(today.year * 12 + today.month - 1 - months_after_close, 12)
    last_day = calendar.monthrange(year, month0 + 1)[1]
    return dt.date(year, month0 + 1, min(today.day, last_day))


def _instant(closed_before: dt.date) -> dt.datetime:
    """A date is its first moment in Finland: `--closed-before 2024-06-01` keeps 1 June's cases."""
    if isinstance(closed_before, dt.datetime):
        if closed_before.tzinfo is None:
            raise ValueError("closed_before must be timezone-aware")
        return closed_before
    return dt.datetime.combine(closed_before, dt.time(), HELSINKI).astimezone(dt.UTC)


# --- dry run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgePlan:
    closed_before: dt.date
    referral_ids: tuple[str, ...]
    oldest_closed_at: dt.datetime | None
    newest_closed_at: dt.datetime | None

    @property
    def count(self) -> int:
        return len(self.referral_ids)


async def plan(ledger: Ledger, closed_before: dt.date) -> PurgePlan:
    """What `purge` would do now: the cases it would take, oldest closing first. Changes nothing."""
    async with ledger.engine.connect() as conn:
        rows = await queries.purgeable_cases(conn, _instant(closed_before))
    return PurgePlan(closed_before, tuple(r[0] for r in rows),
                     rows[0][1] if rows else None, rows[-1][1] if rows else None)


# --- purge ---------------------------------------------------------------------------------------

async def purge(ledger: Ledger, closed_before: dt.date, actor: Actor, *, batch: int = 200,
                now: dt.datetime | None = None) -> int:
    """Purge every case closed before `closed_before`, `batch` cases per transaction; returns how
    many this call purged (cases another process holds at the moment are left to that process)."""
    before = _instant(closed_before)
    total = 0
    while True:
        taken, done = await _purge_batch(ledger, before, actor, batch, now or utcnow())
        total += done
        if taken < batch:
            break
    if total:
        log.info("cases_purged", count=total, closed_before=closed_before.isoformat())
    return total


async def _purge_batch(ledger: Ledger, before: dt.datetime, actor: Actor, batch: int,
                       now: dt.datetime) -> tuple[int, int]:
    """(cases taken, cases purged): they differ only when another writer was first."""
    async with ledger.transaction() as conn:
        pks = await queries.take_batch(conn, before, batch)
        if not pks:
            return 0, 0
        ids = await queries.clear_referrals(conn, pks, now)
        if not ids:
            return len(pks), 0
        await _rewrite(conn, queries.EVENT_DATA, ids, _minimal_json)
        await _rewrite(conn, queries.UPDATE_DATA, ids, _minimal_json)
        for envelopes in (queries.OUTBOX_BODIES, queries.DEAD_LETTER_BODIES):
            changes = []
            for key, body, event_id, referral_id in await envelopes.rows(conn, ids):
                new = minimal_envelope(body, fallback={"event_id": event_id,
                                                       "referral_id": referral_id})
                if new != body:
                    changes.append((key, new))
            await envelopes.write(conn, changes)
        await _audit(conn, actor, ids, now)
    return len(pks), len(ids)


def _minimal_json(raw: str) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    return dumps(minimal_data(data if isinstance(data, dict) else {}))


async def _rewrite(conn: Connection, column: queries.Rewritable, referral_ids: Sequence[str],
                   rewrite: Callable[[str], str]) -> None:
    changes = []
    for key, raw in await column.rows(conn, referral_ids):
        new = rewrite(raw)
        if new != raw:
            changes.append((key, new))
    await column.write(conn, changes)


async def _audit(conn: Connection, actor: Actor, referral_ids: Sequence[str],
                 now: dt.datetime) -> None:
    """One `purged` record per case, each in its case's own chain.

    `append` writes one chain per call, so the batch is split by chain and the heads are taken in
    ascending order: two purging processes lock heads in the same order (no deadlock), and other
    transactions hold at most one head, taken last.
    """
    by_chain: dict[int, list[AuditEntry]] = {}
    for rid in referral_ids:
        by_chain.setdefault(chain_of(rid), []).append(AuditEntry("purged", rid))
    for chain in sorted(by_chain):
        await append(conn, actor, by_chain[chain], now)


# --- the scheduled job ---------------------------------------------------------------------------


class RetentionJob:
    """Purges, every `interval_s`, the cases closed more than `months_after_close` months ago.

    Run by the supervisor only when `[retention] schedule_interval_s` > 0. Every replica may run
    it: the batches skip each other's locked cases (see the module docstring).
    """

    def __init__(self, ledger: Ledger, *, months_after_close: int, interval_s: float,
                 batch: int = 200) -> None:
        self._ledger = ledger
        self._months = months_after_close
        self._interval_s = interval_s
        self._batch = batch

    async def run(self) -> None:
        await run_periodically(self.tick, self._interval_s, failure_event="retention_purge_failed")

    async def tick(self, now: dt.datetime | None = None) -> int:
        cutoff = policy_cutoff(self._months, now)
        return await purge(self._ledger, cutoff, system_actor("retention"), batch=self._batch,
                           now=now)
