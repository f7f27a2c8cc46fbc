"""Ledger tables (SQLAlchemy Core). The ledger is the source of truth for every case.

Idempotency lives in unique constraints, not in read-then-write code (DESIGN § 10): the database
decides which of two concurrent sends was first.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from broker.domain.deadlines import DEADLINES

__all__ = [
    "DEADLINE_COLUMNS", "access_tokens", "audit", "audit_heads", "cases", "dashboard_logouts",
    "dead_letters", "events", "intake_updates", "metadata", "outbox", "processed", "service_keys",
    "updates",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a bigint identity.
PK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on both stores (SQLite would otherwise hand back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


TS = UTCDateTime()

OPEN_STATES = ("routed", "delivered", "acknowledged", "in_progress", "info_requested")


def waiting(met_column: str) -> sa.TextClause:
    """Open and not yet met, as literal SQL: SQLite uses a partial index only when the query's
    WHERE repeats the index's predicate term for term (bound parameters do not match)."""
    states = ", ".join(f"'{s}'" for s in OPEN_STATES)
    return sa.text(f"state IN ({states}) AND {met_column} IS NULL")


UNANSWERED_SQL = "state = 'delivered' AND first_reply_at IS NULL"


def unanswered() -> sa.TextClause:
    return sa.text(UNANSWERED_SQL)


# Closed cases whose personal data is still there: what a retention purge looks for (by closed_at).
PURGEABLE_SQL = "state = 'closed' AND purged_at IS NULL"


cases = Table(
    "cases", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("referral_id", String(36), nullable=False, unique=True),
    Column("sender", String(64), nullable=False),
    Column("kela_reference", String(128), nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("urgency", String(16), nullable=False),
    Column("state", String(24), nullable=False),
    Column("area", String(8), nullable=True),
    Column("municipality_code", String(3), nullable=False),
    Column("received_at", TS, nullable=False),
    Column("state_changed_at", TS, nullable=False),
    Column("delivered_at", TS, nullable=True),
    Column("first_reply_at", TS, nullable=True),
    Column("acknowledged_at", TS, nullable=True),
    Column("assessment_started_at", TS, nullable=True),
    Column("decided_at", TS, nullable=True),
    Column("closed_at", TS, nullable=True),
    Column("ack_due_at", TS, nullable=True),
    Column("assessment_due_at", TS, nullable=True),
    Column("decision_due_at", TS, nullable=True),
    Column("escalated", String(64), nullable=False, default=""),
    # Statistics (DESIGN § 11): the Finnish calendar month of receipt, and what the replies said.
    Column("received_month", String(7), nullable=False),
    Column("reroute_count", Integer, nullable=False, default=0),
    Column("first_reply_s", Integer, nullable=True),  # received -> first reply, for percentiles
    # Multi-valued facts as bit sets (bit i = the i-th enum member): counted in the same single
    # pass over a month span as everything else, no join.
    Column("needs_mask", Integer, nullable=False, default=0),
    Column("findings_mask", Integer, nullable=False, default=0),
    Column("outcome", String(24), nullable=True),
    Column("decision", String(24), nullable=True),
    Column("referral_quality", String(32), nullable=True),
    Column("feedback_rating", Integer, nullable=True),
    Column("feedback_heard", sa.Boolean, nullable=True),
    Column("return_count", Integer, nullable=False, default=0),
    Column("areas_tried", String(200), nullable=False, default=""),
    Column("unroutable_reason", String(200), nullable=True),
    Column("referral_json", Text, nullable=True),
    # Set when retention removed the personal data; the statistical columns above stay.
    Column("purged_at", TS, nullable=True),
    UniqueConstraint("sender", "kela_reference", name="uq_cases_sender_reference"),
    Index("ix_cases_area_state", "area", "state"),
    Index("ix_cases_state_received", "state", "received_at"),
    Index("ix_cases_received", "received_at"),
    Index("ix_cases_month_area", "received_month", "area"),
    # Percentiles of time to first reply read this index alone (an index-only scan on PostgreSQL).
    Index("ix_cases_month_area_reply", "received_month", "area", "first_reply_s"),
    # Partial indexes over the few cases still waiting: the /metrics gauges, the SLA clock and the
    # dashboard count these, and they stay small however many closed cases the ledger keeps.
    # Named after the due column (ix_cases_open_ack, _assessment, _decision: migration 0001).
    *(Index(f"ix_cases_open_{rule.due_column.removesuffix('_due_at')}", "area", rule.due_column,
            postgresql_where=waiting(rule.met_column), sqlite_where=waiting(rule.met_column))
      for rule in DEADLINES),
    Index("ix_cases_unanswered", "area", "urgency", "delivered_at",
          postgresql_where=unanswered(), sqlite_where=unanswered()),
    # The retention purge's range scan stays as small as the closed, not yet purged cases.
    Index("ix_cases_purgeable", "closed_at", postgresql_where=sa.text(PURGEABLE_SQL),
          sqlite_where=sa.text(PURGEABLE_SQL)),
)

# deadline name -> (due column, column that records the reply meeting it), from the one deadline
# map in `broker.domain.deadlines`.
DEADLINE_COLUMNS: dict[str, tuple[Column[Any], Column[Any]]] = {
    rule.name: (cases.c[rule.due_column], cases.c[rule.met_column]) for rule in DEADLINES}

events = Table(
    "events", metadata,
    Column("seq", PK, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("referral_id", String(36), nullable=False),
    Column("type", String(32), nullable=False),
    Column("at", TS, nullable=False),
    Column("area", String(8), nullable=True),
    Column("actor", String(64), nullable=True),
    Column("dedupe_key", String(160), nullable=True),
    Column("body_sha256", String(64), nullable=True),
    Column("data", Text, nullable=True),
    UniqueConstraint("referral_id", "dedupe_key", name="uq_events_referral_dedupe"),
    Index("ix_events_referral_seq", "referral_id", "seq"),
)

# Kela's feed. Writers serialise on a lock (PostgreSQL advisory lock, SQLite's single writer), so
# `seq` commits in order and a reader paging by `seq > cursor` never skips a late commit.
# `sender` is the case's sender (the Kela party that sent it): a Kela party that is not the central
# reader pages its own entries by (sender, seq), one range of one index.
updates = Table(
    "updates", metadata,
    Column("seq", PK, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("referral_id", String(36), nullable=False),
    Column("sender", String(64), nullable=False),
    Column("kela_reference", String(128), nullable=False),
    Column("type", String(32), nullable=False),
    Column("at", TS, nullable=False),
    Column("data", Text, nullable=False),
    Index("ix_updates_referral", "referral_id"),
    Index("ix_updates_sender_seq", "sender", "seq"),
)

# The intake feed (issue 17 § 4): what an area hears of its cases, written in the transaction of the
# change (an answer, an escalation, a re-route into or out of the area, a delivery). `data` holds ids,
# types, areas, times and deadline names only: no personal data and no free text, so a retention
# purge has nothing to rewrite here. An area pages its entries by (area, seq), one index range.
intake_updates = Table(
    "intake_updates", metadata,
    Column("seq", PK, primary_key=True, autoincrement=True),
    Column("area", String(8), nullable=False),
    Column("referral_id", String(36), nullable=False),
    Column("type", String(32), nullable=False),
    Column("at", TS, nullable=False),
    Column("data", Text, nullable=False),
    Index("ix_intake_updates_area_seq", "area", "seq"),
)

outbox = Table(
    "outbox", metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("referral_id", String(36), nullable=True),
    Column("exchange", String(64), nullable=False),
    Column("routing_key", String(128), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(12), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("published_at", TS, nullable=True),
    Column("done_at", TS, nullable=True),
    Column("publish_attempts", Integer, nullable=False, default=0),
    # When a worker last tried the message (failed attempts only): alive, not lost (0006).
    Column("attempted_at", TS, nullable=True),
    Index("ix_outbox_status_id", "status", "id"),
    Index("ix_outbox_referral", "referral_id"),
)

# What each consumer has already applied: redelivery after a crash is dropped, not re-applied.
processed = Table(
    "processed", metadata,
    Column("consumer", String(64), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("at", TS, nullable=False),
)

dead_letters = Table(
    "dead_letters", metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("referral_id", String(36), nullable=True),
    Column("area", String(8), nullable=True),
    Column("queue", String(128), nullable=True),
    Column("exchange", String(64), nullable=False),
    Column("routing_key", String(128), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("body", Text, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("replayed_at", TS, nullable=True),
    Index("ix_dead_letters_event", "event_id"),
    Index("ix_dead_letters_open", "replayed_at", "area"),
    Index("ix_dead_letters_referral", "referral_id"),
)

# Who read or wrote what (issue 8). Records are hash-chained: `hash` covers the record and
# `prev_hash`, the previous record's hash in the same chain. Several chains (`audit_heads`, one row
# each) let concurrent transactions append without queueing on a single row lock; each case's records
# stay in one chain. No identity code, name or free text is ever stored here.
audit = Table(
    "audit", metadata,
    Column("seq", PK, primary_key=True, autoincrement=True),
    Column("chain", Integer, nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("at", TS, nullable=False),
    Column("party_id", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(40), nullable=False),
    Column("referral_id", String(36), nullable=True),
    Column("request_id", String(64), nullable=True),
    Column("outcome", String(24), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("chain", "n", name="uq_audit_chain_n"),
    # Records arrive in time order: a BRIN index on PostgreSQL serves the export's time range at
    # almost no cost per insert (a B-tree elsewhere).
    Index("ix_audit_at", "at", postgresql_using="brin"),
    Index("ix_audit_referral", "referral_id"),
)

audit_heads = Table(
    "audit_heads", metadata,
    Column("chain", Integer, primary_key=True, autoincrement=False),
    Column("n", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Tokens issued with `handoff token create` (the config's [[parties]] tokens work beside them).
# Looked up on every request, so a revocation or expiry takes effect at once in every process.
access_tokens = Table(
    "access_tokens", metadata,
    Column("id", String(36), primary_key=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("party_id", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("area", String(8), nullable=True),
    # A Kela party that may read every sender's cases and the whole feed (see Party.central_reader).
    Column("central_reader", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=True),
    Column("revoked_at", TS, nullable=True),
    Index("ix_access_tokens_party", "party_id"),
)

# Keys every replica must share, made once by whichever process starts first (the dashboard's
# session and CSRF signing key), so that a session opened on one replica is valid on the others.
service_keys = Table(
    "service_keys", metadata,
    Column("name", String(32), primary_key=True),
    Column("key_hex", String(128), nullable=False),
    Column("created_at", TS, nullable=False),
)

# Dashboard sessions ended by a logout, until they would have expired anyway: a logout on one
# replica ends the session on all of them.
dashboard_logouts = Table(
    "dashboard_logouts", metadata,
    Column("sid", String(64), primary_key=True),
    Column("expires_at", TS, nullable=False),
)
