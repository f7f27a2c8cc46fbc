"""Issue 15: under a `pg_terminate_backend` storm, SQLAlchemy's error lines name the statement and
never its parameters (a client's name, a worker's name and phone, reply text, the referral JSON).

Every engine is built with `hide_parameters=True`. The tests look at what was logged before any
redaction (structlog events with their formatted tracebacks, the standard library's records with
theirs) and at what the configured renderer wrote to stderr; and they check that the error lines
are there, so that "nothing found" means nothing was logged, not that nothing happened.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import traceback
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.exc import DBAPIError

import broker.store.ledger
from broker.observability.logs import configure_logging
from broker.store.ledger import Ledger
from schemas.hetu import contains_identity_code
from tests.helpers.app import KELA_TOKEN, PG_DSN_ADMIN, auth, base_settings, intake_token
from tests.helpers.identity_scan import IdentityScanner
from tests.helpers.processes import backend_storm
from tests.helpers.support import hetu_with, referral_body, reply_body

HIDDEN = "[SQL parameters hidden due to hide_parameters=True]"
# Invented people; test identity codes (individual number 900-999).
CLIENTS = ["Myrskylintu", "Salamavirta", "Ukkosniemi", "Tuulispää", "Raekuuro", "Jylinäinen"]
WORKER, PHONE = "Vaskitähti Ropelius", "+358 40 987 6543"
MARKER = "Kuvitelmamyräkkä"


@dataclass
class Captured:
    """Log output as it was produced (raw) and as the service's renderer wrote it (stderr)."""

    raw: list[str] = field(default_factory=list)
    errors: int = 0  # error-level lines with a traceback

    def start(self) -> None:
        """The service's logging (JSON to stderr), every event and record also kept unredacted."""
        configure_logging("debug", "json")
        structlog.configure(processors=[self.structlog_event, *structlog.get_config()["processors"]])
        logging.getLogger().addHandler(_RawRecords(self))

    def structlog_event(self, _logger: Any, _method: str,
                        event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        seen = dict(event_dict)
        if seen.get("exc_info"):
            seen = dict(structlog.processors.format_exc_info(None, "", seen))
            self.errors += 1
        self.raw.append(repr(seen))
        return event_dict


class _RawRecords(logging.Handler):
    def __init__(self, captured: Captured) -> None:
        super().__init__(logging.DEBUG)
        self.captured = captured

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self.captured.errors += 1
        self.captured.raw.append(text)


@pytest.fixture
def captured_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Captured]:
    """Restores the logging set-up afterwards; the test calls `start()` (capsys holds stderr only
    while the test runs, so configuring here would bind the renderer to the set-up's stream)."""
    root = logging.getLogger()
    handlers, level, previous = root.handlers[:], root.level, structlog.get_config()
    engine_logger = logging.getLogger("sqlalchemy.engine")
    engine_level = engine_logger.level
    try:
        yield Captured()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        engine_logger.setLevel(engine_level)
        structlog.configure(**previous)
        logging.captureWarnings(False)


async def _terminate_backends(database: str) -> int:
    """From an admin connection on another database: end every backend of the test database."""
    conn = await asyncpg.connect(PG_DSN_ADMIN)
    try:
        return len(await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()", database))
    finally:
        await conn.close()


def _database(store_url: str) -> str:
    return urlsplit(store_url).path.lstrip("/")


async def test_an_error_on_a_killed_connection_names_no_parameter(
        pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One deterministic kill: the statement meets the dead socket and the error hides its values."""
    monkeypatch.setattr(broker.store.ledger, "PING_AFTER_IDLE_S", 3600.0)  # no ping on checkout
    ledger = Ledger.from_url(pg_database, pool_size=1)
    try:
        async with ledger.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        assert await _terminate_backends(_database(pg_database)) >= 1
        with pytest.raises(DBAPIError) as failed:
            async with ledger.engine.connect() as conn:
                await conn.execute(sa.text("SELECT CAST(:name AS text), CAST(:phone AS text)"),
                                   {"name": WORKER, "phone": PHONE})
    finally:
        await ledger.dispose()
    text = "".join(traceback.format_exception(failed.value))
    assert "[SQL: SELECT CAST(" in text and HIDDEN in text, text
    assert WORKER not in text and PHONE not in text


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_a_terminate_backend_storm_logs_errors_without_personal_data(
        make_client, store_url: str, captured_logs: Captured, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A connection that broke while pooled fails its first statement (no ping in between), so the
    # storm's errors carry statements, the very lines that used to carry their parameters.
    monkeypatch.setattr(broker.store.ledger, "PING_AFTER_IDLE_S", 3600.0)
    captured_logs.start()
    # `echo` too: the statement log goes through the root logger, parameters hidden.
    client = await make_client(base_settings(store_url, store={"echo": True, "pool_size": 4}))
    codes: set[str] = set()
    names: set[str] = {MARKER, *WORKER.split(), PHONE}
    statuses: list[int] = []
    kills: list[int] = []
    rids: list[str] = []

    async def referral(n: int) -> None:
        code = hetu_with(dt.date(1960 + n % 40, 1 + n % 12, 1 + n % 28), "-", 900 + n % 100)
        body = referral_body(f"STORM-{n:04d}", personal_id=code)
        body["client"]["first_names"] = CLIENTS[n % len(CLIENTS)]
        body["client"]["last_name"] = CLIENTS[(n + 1) % len(CLIENTS)] + "nen"
        body["description"] = f"{MARKER} {n}"
        codes.add(code)
        names.update({body["client"]["first_names"], body["client"]["last_name"]})
        r = await client.post("/v1/referrals", json=body, headers=auth(KELA_TOKEN))
        statuses.append(r.status)
        if r.status == 202:
            rids.append((await r.json())["referral_id"])

    async def replies(n: int) -> None:
        for i, rid in enumerate(rids[-4:]):  # received, then assigned to the worker, then notes
            for status in ("received", "assigned", "client_contacted"):
                body = reply_body(status, f"R-{status}-{n}-{i}", message=f"{MARKER}: viesti {n}")
                if status == "assigned":
                    body["worker"] = {"name": WORKER, "title": "sosiaaliohjaaja", "phone": PHONE}
                r = await client.post(f"/v1/referrals/{rid}/replies", json=body,
                                      headers=auth(intake_token("08")))
                statuses.append(r.status)

    def statement_errors(*, hidden: bool = False) -> int:
        """Error lines naming a statement: a traceback (a bug's 500), or the 503's error text."""
        return sum("[SQL: " in line and ("Traceback" in line or "request_unavailable" in line)
                   and (HIDDEN in line or not hidden) for line in captured_logs.raw)

    for n in range(4):  # some cases to reply to before the storm
        await referral(n)
    assert len(rids) == 4
    async with backend_storm(store_url, kills):
        n = 4
        async with asyncio.timeout(60):
            while statement_errors() < 5 or n < 30:
                await asyncio.gather(*(referral(n + k) for k in range(6)), replies(n))
                n += 6
    err = capsys.readouterr().err

    # The storm happened and was logged: backends ended, requests failed, error lines with their
    # tracebacks name the statement and say that its parameters are hidden.
    assert sum(kills) > 10, kills
    # A backend that was terminated is an unavailable store: 503 with Retry-After, not 500.
    assert 503 in statuses and 202 in statuses, sorted(set(statuses))
    assert statement_errors(hidden=True) == statement_errors() >= 5
    assert any("request_unavailable" in line and "[SQL: INSERT INTO" in line
               for line in captured_logs.raw)
    assert err.count('"request_unavailable"') >= 1 and HIDDEN in err
    assert any(HIDDEN in line and "Traceback" not in line for line in captured_logs.raw), "echo lines"

    # ... and nothing personal, before redaction or after.
    raw = "\n".join(captured_logs.raw)
    for secret in sorted(names | codes):
        assert secret.upper() not in raw.upper(), secret
        assert secret.upper() not in err.upper(), secret
    assert not contains_identity_code(raw) and not contains_identity_code(err)
    findings = IdentityScanner(codes, names).scan_lines("stderr", err.splitlines())
    assert not findings, "\n".join(map(str, findings[:10]))
