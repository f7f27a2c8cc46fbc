"""The ledger: engine lifecycle, migrations, and the row-level operations the case logic composes.

Every write path goes through `Ledger.transaction()`; the case logic in `broker.cases.service` puts a case
change, its events, its outbox rows and its feed entries into one transaction, so what the 202 promises
is on disk before the 202 is sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import secrets
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from broker.store.tables import (
    cases,
    dashboard_logouts,
    dead_letters,
    events,
    intake_updates,
    outbox,
    processed,
    service_keys,
    updates,
)

__all__ = ["CaseRow", "Connection", "Engine", "Ledger", "is_referral_id", "new_id", "utcnow"]

# What modules outside the store name a connection and an engine by: they never import SQLAlchemy.
Connection = AsyncConnection
Engine = AsyncEngine

# A fixed key for pg_advisory_xact_lock: serialises writers of Kela's feed so `updates.seq` commits
# in order (no reader can page past a sequence number that commits later).
_FEED_LOCK = 0x6B656C61
# The same for the intake feed (`intake_updates.seq`), one lock per area: an intake pages its own
# area, so only writers of one area need to commit in `seq` order, and deliveries to different areas
# do not queue on one lock. A transaction that writes both feeds takes Kela's first, and one that
# writes two areas takes them in area order (`lock_intake_feed(conn, *areas)`); the order of every
# lock: case row, Kela's feed, the intake feeds, the audit chain's head.
_INTAKE_FEED_LOCK = 0x6B656C63
_MIGRATION_LOCK = 0x6B656C62


# Two-key advisory lock: the feed's class, and the area hashed into the 32-bit object id.
_LOCK_INTAKE_FEED = sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(:area))")

# The hot statements are built once and executed with parameters: building `.values(...)` and
# `.where(col == value)` anew for every call, and hashing them into a cache key, cost more CPU than
# the round trip to PostgreSQL.
_INSERT_EVENT = events.insert()
_INSERT_OUTBOX = outbox.insert()
_CASE_BY_ID = sa.select(cases).where(cases.c.referral_id == sa.bindparam("referral_id"))
_CASE_BY_ID_FOR_UPDATE = _CASE_BY_ID.with_for_update()
_CASE_BY_REFERENCE = (sa.select(cases).where(cases.c.kela_reference == sa.bindparam("kela_reference"))
                      .limit(1))
_CASE_BY_SENDER_REFERENCE = _CASE_BY_REFERENCE.where(cases.c.sender == sa.bindparam("sender"))
_OUTBOX_DONE = (sa.update(outbox).where(outbox.c.event_id == sa.bindparam("done_event_id"))
                .values(status="done", done_at=sa.bindparam("done_at")))
_OUTBOX_ATTEMPTED = (sa.update(outbox).where(outbox.c.event_id == sa.bindparam("attempted_event_id"))
                     .values(attempted_at=sa.bindparam("attempted_at")))
_MARK_PROCESSED = {
    "postgresql": pg_insert(processed).on_conflict_do_nothing(index_elements=["consumer", "event_id"]),
    "sqlite": sqlite_insert(processed).on_conflict_do_nothing(index_elements=["consumer", "event_id"]),
}
_PROCESSED = sa.exists().where(processed.c.consumer == sa.bindparam("consumer"),
                               processed.c.event_id == sa.bindparam("event_id"))
_CASE_AND_PROCESSED = (sa.select(cases, _PROCESSED.label("already_processed"))
                       .where(cases.c.referral_id == sa.bindparam("referral_id")))
_IS_PROCESSED = sa.select(_PROCESSED)
# UPDATE without .values(): the SET clause is the columns named by the parameters.
_SET_CASE = sa.update(cases).where(cases.c.pk == sa.bindparam("_pk"))
_SET_CASE_IF = _SET_CASE.where(cases.c.state == sa.bindparam("_expected_state"))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return str(uuid.uuid4())


# What `new_id` makes: a canonical UUID, lower-case ASCII hex. Nothing else can name a case.
_REFERRAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_referral_id(text: str) -> bool:
    """True for a string that could be a referral id. Anything else (a NUL byte, which PostgreSQL
    refuses in text, other control characters, Unicode digits) is an unknown id without a query."""
    return _REFERRAL_ID.fullmatch(text) is not None


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class CaseRow:
    pk: int
    referral_id: str
    sender: str
    kela_reference: str
    body_sha256: str
    kind: str
    urgency: str
    state: str
    area: str | None
    municipality_code: str
    received_at: dt.datetime
    state_changed_at: dt.datetime
    delivered_at: dt.datetime | None
    first_reply_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    assessment_started_at: dt.datetime | None
    decided_at: dt.datetime | None
    closed_at: dt.datetime | None
    ack_due_at: dt.datetime | None
    assessment_due_at: dt.datetime | None
    decision_due_at: dt.datetime | None
    escalated: str
    received_month: str
    reroute_count: int
    first_reply_s: int | None
    needs_mask: int
    findings_mask: int
    outcome: str | None
    decision: str | None
    referral_quality: str | None
    feedback_rating: int | None
    feedback_heard: bool | None
    return_count: int
    areas_tried: str
    unroutable_reason: str | None
    referral_json: str | None
    purged_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> CaseRow:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})

    @property
    def tried_areas(self) -> list[str]:
        return [a for a in self.areas_tried.split(",") if a]

    def referral(self) -> dict[str, Any]:
        return json.loads(self.referral_json) if self.referral_json else {}


class Ledger:
    """Owns the engine. Built by the composition root and disposed of by the supervisor, last."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self._sqlite_writer = asyncio.Lock()
        self._sqlite_path: Path | None = None
        self._min_free_bytes = 0

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10, echo: bool = False,
                 connect_timeout_s: float = 5.0, statement_timeout_s: float = 30.0,
                 pool_timeout_s: float = 5.0, min_free_disk_mb: int = 0) -> Ledger:
        # A statement's parameters are personal data (names, phone numbers, reply texts, referral
        # JSON), and SQLAlchemy puts them into every error it raises ("[parameters: ...]"), which
        # the error middleware and the background jobs log with the traceback: never keep them.
        kwargs: dict[str, Any] = {"hide_parameters": True}
        if echo:
            # Not `echo=True`: that adds SQLAlchemy's own stdout handler, which skips the redactor;
            # at INFO its records go to the root logger and through broker.observability.logs like any other.
            logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
        sqlite_path: Path | None = None
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if path and path != ":memory:":
                sqlite_path = Path(path)
                sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(
                pool_size=pool_size, max_overflow=pool_size, pool_timeout=pool_timeout_s,
                connect_args={
                    "timeout": connect_timeout_s,
                    # Client side: a frozen server never answers, so no server setting can help.
                    "command_timeout": statement_timeout_s,
                    "server_settings": {"statement_timeout": str(round(statement_timeout_s * 1000))},
                })
        engine = create_async_engine(url, **kwargs)
        if url.startswith("sqlite"):
            _tune_sqlite(engine)
        else:
            _ping_on_checkout(engine)
        ledger = cls(engine)
        ledger._sqlite_path = sqlite_path
        ledger._min_free_bytes = min_free_disk_mb * 1024 * 1024
        return ledger

    async def migrate(self) -> None:
        """Bring the schema to head with Alembic; several processes may start at once on PostgreSQL."""
        async with self.engine.begin() as conn:
            if self.is_postgres:
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            await conn.run_sync(_alembic_upgrade)
            if not self.is_postgres:
                # SQLite plans with the partial indexes only once it has statistics; a bounded
                # ANALYZE at start is cheap even on a large file.
                await conn.exec_driver_sql("PRAGMA analysis_limit=1000")
                await conn.exec_driver_sql("ANALYZE")

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def ping(self, timeout_s: float = 1.5) -> bool:
        """Whether the ledger can take writes now: answers within `timeout_s` (a frozen database
        must not hold /readyz), and for SQLite, enough free disk for the next commits."""
        if self._sqlite_path is not None and self._min_free_bytes:
            try:
                free = shutil.disk_usage(self._sqlite_path.parent).free
            except OSError:
                return False
            if free < self._min_free_bytes:
                return False
        try:
            async with asyncio.timeout(timeout_s), self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception:  # readiness reports any failure as not ready
            return False
        return True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        if self.is_postgres:
            async with self.engine.begin() as conn:
                yield conn
            return
        # SQLite has one writer. A deferred transaction that reads and then writes fails with
        # "database is locked" when another connection wrote in between, so writers of this process
        # queue here instead (the embedded default is one process by design).
        async with self._sqlite_writer, self.engine.begin() as conn:
            yield conn

    # --- rows ---------------------------------------------------------------------------------

    async def lock_feed(self, conn: AsyncConnection) -> None:
        if self.is_postgres:
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _FEED_LOCK})

    async def lock_intake_feed(self, conn: AsyncConnection, *areas: str) -> None:
        """The intake feed locks of `areas`, in area order (re-entrant within a transaction)."""
        if self.is_postgres:
            for area in sorted(set(areas)):
                await conn.execute(_LOCK_INTAKE_FEED, {"k": _INTAKE_FEED_LOCK, "area": area})

    @staticmethod
    async def case_by_id(conn: AsyncConnection, referral_id: str, *, for_update: bool = False,
                         ) -> CaseRow | None:
        if not is_referral_id(referral_id):
            return None
        q = _CASE_BY_ID_FOR_UPDATE if for_update else _CASE_BY_ID
        row = (await conn.execute(q, {"referral_id": referral_id})).mappings().first()
        return CaseRow.from_row(row) if row else None

    @staticmethod
    async def case_by_reference(conn: AsyncConnection, sender: str | None, kela_reference: str,
                                ) -> CaseRow | None:
        if sender is None:
            result = await conn.execute(_CASE_BY_REFERENCE, {"kela_reference": kela_reference})
        else:
            result = await conn.execute(_CASE_BY_SENDER_REFERENCE,
                                        {"kela_reference": kela_reference, "sender": sender})
        row = result.mappings().first()
        return CaseRow.from_row(row) if row else None

    @staticmethod
    async def add_event(conn: AsyncConnection, *, referral_id: str, type_: str, at: dt.datetime,
                        area: str | None = None, actor: str | None = None,
                        data: Mapping[str, Any] | None = None, dedupe_key: str | None = None,
                        body_sha256: str | None = None, event_id: str | None = None) -> str:
        event_id = event_id or new_id()
        await conn.execute(_INSERT_EVENT, {
            "event_id": event_id, "referral_id": referral_id, "type": type_, "at": at, "area": area,
            "actor": actor, "dedupe_key": dedupe_key, "body_sha256": body_sha256,
            "data": dumps(dict(data)) if data is not None else None,
        })
        return event_id

    @staticmethod
    async def add_events(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        """Several events of one change in one round trip; each row has the keywords of
        `add_event` (`type_` and `at` required). Returns their event ids, in order."""
        params = []
        for r in rows:
            data = r.get("data")
            params.append({
                "event_id": r.get("event_id") or new_id(), "referral_id": r["referral_id"],
                "type": r["type_"], "at": r["at"], "area": r.get("area"), "actor": r.get("actor"),
                "dedupe_key": r.get("dedupe_key"), "body_sha256": r.get("body_sha256"),
                "data": dumps(dict(data)) if data is not None else None,
            })
        await conn.execute(_INSERT_EVENT, params)
        return [p["event_id"] for p in params]

    @staticmethod
    async def add_outbox(conn: AsyncConnection, *, event_id: str, referral_id: str | None,
                         exchange: str, routing_key: str, envelope: Mapping[str, Any],
                         at: dt.datetime) -> None:
        await conn.execute(_INSERT_OUTBOX, {
            "event_id": event_id, "referral_id": referral_id, "exchange": exchange,
            "routing_key": routing_key, "body": dumps(dict(envelope)), "status": "pending",
            "created_at": at, "publish_attempts": 0,
        })

    async def add_update(self, conn: AsyncConnection, *, event_id: str, referral_id: str,
                         sender: str, kela_reference: str, type_: str, at: dt.datetime,
                         data: Mapping[str, Any]) -> None:
        await self.lock_feed(conn)
        await conn.execute(updates.insert().values(
            event_id=event_id, referral_id=referral_id, sender=sender, kela_reference=kela_reference,
            type=type_, at=at, data=dumps(dict(data)),
        ))

    async def add_intake_update(self, conn: AsyncConnection, *, area: str, referral_id: str,
                                type_: str, at: dt.datetime, data: Mapping[str, Any]) -> None:
        """An entry in `area`'s intake feed; serialised like Kela's feed, so `seq` commits in order."""
        await self.lock_intake_feed(conn, area)
        await conn.execute(intake_updates.insert().values(
            area=area, referral_id=referral_id, type=type_, at=at, data=dumps(dict(data))))

    @staticmethod
    async def set_case(conn: AsyncConnection, pk: int, expected_state: str | None,
                       **values: Any) -> bool:
        """Compare-and-set: update only if the case is still in `expected_state`."""
        if expected_state is None:
            result = await conn.execute(_SET_CASE, {"_pk": pk, **values})
        else:
            result = await conn.execute(_SET_CASE_IF, {"_pk": pk, "_expected_state": expected_state,
                                                       **values})
        return bool(result.rowcount == 1)

    @staticmethod
    async def mark_processed(conn: AsyncConnection, consumer: str, event_id: str,
                             at: dt.datetime) -> bool:
        """Record that `consumer` applied `event_id`; False if it already had (a redelivery)."""
        result = await conn.execute(_MARK_PROCESSED[conn.dialect.name],
                                    {"consumer": consumer, "event_id": event_id, "at": at})
        return bool(result.rowcount == 1)

    async def is_processed(self, consumer: str, event_id: str) -> bool:
        return (await self.delivery_state(consumer, event_id, None))[0]

    async def delivery_state(self, consumer: str, event_id: str, referral_id: str | None,
                             ) -> tuple[bool, CaseRow | None]:
        """Whether `consumer` already applied `event_id`, and the case of `referral_id`: one statement
        on an autocommit connection (no BEGIN/ROLLBACK around a read that is one snapshot anyway)."""
        params = {"consumer": consumer, "event_id": event_id}
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if referral_id is not None:
                row = (await conn.execute(_CASE_AND_PROCESSED, {**params, "referral_id": referral_id})
                       ).mappings().first()
                if row is not None:
                    return bool(row["already_processed"]), CaseRow.from_row(row)
            return bool((await conn.execute(_IS_PROCESSED, params)).scalar_one()), None

    @staticmethod
    async def outbox_done(conn: AsyncConnection, event_id: str, at: dt.datetime) -> None:
        await conn.execute(_OUTBOX_DONE, {"done_event_id": event_id, "done_at": at})

    # --- reads for the API --------------------------------------------------------------------

    async def read_case(self, referral_id: str) -> tuple[CaseRow, list[dict[str, Any]]] | None:
        async with self.engine.connect() as conn:
            case = await self.case_by_id(conn, referral_id)
            if case is None:
                return None
            rows = (await conn.execute(
                sa.select(events).where(events.c.referral_id == referral_id).order_by(events.c.seq)
            )).mappings().all()
        history = []
        for r in rows:
            # The row's own fields are applied last, so stored data can never mask them.
            item: dict[str, Any] = json.loads(r["data"]) if r["data"] else {}
            item.update(type=r["type"], at=r["at"].isoformat(), event_id=r["event_id"])
            if r["area"]:
                item["area"] = r["area"]
            if r["actor"]:
                item["actor"] = r["actor"]
            history.append(item)
        return case, history

    async def inbox(self, area: str, states: Sequence[str], after: int, limit: int,
                    ) -> list[CaseRow]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(cases).where(cases.c.area == area, cases.c.state.in_(list(states)),
                                       cases.c.pk > after)
                .order_by(cases.c.pk).limit(limit)
            )).mappings().all()
        return [CaseRow.from_row(r) for r in rows]

    async def feed(self, after: int, limit: int, *, sender: str | None = None,
                   ) -> list[dict[str, Any]]:
        """Kela's feed after `after`; with `sender`, only the entries of that party's cases (a range
        of ix_updates_sender_seq: `sender = :s AND seq > :after ORDER BY seq`)."""
        query = sa.select(updates).where(updates.c.seq > after)
        if sender is not None:
            query = query.where(updates.c.sender == sender)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(updates.c.seq).limit(limit))).mappings().all()
        return [dict(r) for r in rows]

    async def intake_feed(self, area: str, after: int, limit: int) -> list[dict[str, Any]]:
        """`area`'s intake feed after `after` (one range of ix_intake_updates_area_seq)."""
        query = (sa.select(intake_updates)
                 .where(intake_updates.c.area == area, intake_updates.c.seq > after)
                 .order_by(intake_updates.c.seq).limit(limit))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [dict(r) for r in rows]

    async def latest_events(self, referral_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The latest event (`type`, `at`) of each of these cases, inbox reads left out."""
        if not referral_ids:
            return {}
        # `fetched` (an inbox read, written as the page is read) is a read, not news of the case.
        last = (sa.select(sa.func.max(events.c.seq))
                .where(events.c.referral_id.in_(list(referral_ids)), events.c.type != "fetched")
                .group_by(events.c.referral_id))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(events.c.referral_id, events.c.type, events.c.at)
                .where(events.c.seq.in_(last)))).mappings().all()
        return {r["referral_id"]: {"type": r["type"], "at": r["at"].isoformat()} for r in rows}

    async def list_dead_letters(self, after: int, limit: int, *, include_replayed: bool = False,
                                ) -> list[dict[str, Any]]:
        q = sa.select(dead_letters).where(dead_letters.c.id > after)
        if not include_replayed:
            q = q.where(dead_letters.c.replayed_at.is_(None))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(dead_letters.c.id).limit(limit))).mappings().all()
        return [dict(r) for r in rows]

    # --- keys and sessions shared by the replicas ----------------------------------------------

    async def shared_key(self, name: str) -> bytes:
        """The key called `name`, made (32 random bytes) by the first process that asks for it."""
        insert = (pg_insert if self.is_postgres else sqlite_insert)(service_keys)
        async with self.transaction() as conn:
            await conn.execute(insert.on_conflict_do_nothing(index_elements=["name"]),
                               {"name": name, "key_hex": secrets.token_hex(32), "created_at": utcnow()})
            key_hex = (await conn.execute(sa.select(service_keys.c.key_hex)
                                          .where(service_keys.c.name == name))).scalar_one()
        return bytes.fromhex(key_hex)

    async def record_logout(self, sid: str, expires_at: dt.datetime) -> None:
        insert = (pg_insert if self.is_postgres else sqlite_insert)(dashboard_logouts)
        async with self.transaction() as conn:
            await conn.execute(sa.delete(dashboard_logouts)
                               .where(dashboard_logouts.c.expires_at < utcnow()))
            await conn.execute(insert.on_conflict_do_nothing(index_elements=["sid"]),
                               {"sid": sid, "expires_at": expires_at})

    async def is_logged_out(self, sid: str) -> bool:
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(dashboard_logouts.c.sid)
                                       .where(dashboard_logouts.c.sid == sid))).first() is not None

    # --- outbox relay -------------------------------------------------------------------------

    async def requeue_unfinished(self) -> int:
        """For a non-durable transport: rows published but not done are lost with the process."""
        async with self.transaction() as conn:
            result = await conn.execute(sa.update(outbox).where(outbox.c.status == "sent")
                                        .values(status="pending"))
        return int(result.rowcount or 0)

    async def outbox_attempted(self, event_id: str, at: dt.datetime) -> None:
        """A worker tried this event and will retry it: alive, not lost (`broker.outbox.reconcile`)."""
        async with self.engine.begin() as conn:
            await conn.execute(_OUTBOX_ATTEMPTED, {"attempted_event_id": event_id, "attempted_at": at})

    async def outbox_pending(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(
                sa.select(sa.func.count()).select_from(outbox).where(outbox.c.status == "pending")
            )).scalar_one())


def _alembic_upgrade(connection: SyncConnection) -> None:
    from alembic import command
    from alembic.config import Config

    # A real directory is needed (Alembic lists the versions folder); the package ships it as files.
    here = Path(__file__).resolve().parent
    cfg = Config(str(here / "alembic.ini"))
    cfg.set_main_option("script_location", str(here / "migrations"))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


# A connection back in the pool for less than this is used without a ping.
PING_AFTER_IDLE_S = 1.0


def _ping_on_checkout(engine: AsyncEngine) -> None:
    """`pool_pre_ping` in one round trip instead of three, and only after the connection sat idle.

    SQLAlchemy's asyncpg ping wraps its `;` in BEGIN and ROLLBACK (for pgbouncer's transaction mode,
    which this service does not use), so each transaction paid three round trips before its first
    statement. Under load a connection comes back to the pool and out again within milliseconds, and
    the ping was a tenth of the round trips of a referral; a connection that broke in that moment
    fails its first statement instead, which SQLAlchemy recognises as a disconnect (the connection is
    replaced) and the caller's transaction fails as on any database error: the HTTP client gets a
    500 before any 202, a consumer's message is redelivered. As with pool_pre_ping, a connection that
    fails the ping is discarded and replaced.
    """

    @sa.event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is not None and time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            await_only(dbapi_conn.driver_connection.fetchrow(";"))
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"ping failed: {type(exc).__name__}") from exc


def _tune_sqlite(engine: AsyncEngine) -> None:
    """WAL and a busy timeout: readers never block the writer, and writers queue instead of failing."""

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # durable before the 202, also on power loss
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
