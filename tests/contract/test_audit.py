"""The tamper-evident audit trail (issue 8): every read and write of case data leaves a record in
the same commit as its effect (or before the data leaves), the chain shows any change, and an
export serves a controller's access request. Both stores."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner

import broker.store.audit_chain
from broker.cli import app as cli_app
from broker.devtools.harness import wait_for
from broker.security.audit import (
    AUDITED_ACTIONS,
    CHAINS,
    AuditEntry,
    append_alone,
    chain_of,
    system_actor,
    verify,
)
from broker.store.ledger import Ledger, utcnow
from broker.store.tables import audit, audit_heads, cases
from tests.helpers.app import ADMIN_TOKEN, KELA_TOKEN, auth, base_settings, intake_token, services_of
from tests.helpers.support import (
    MUNICIPALITY_OF_AREA,
    get_case,
    new_case,
    post_referral,
    referral_body,
    reply,
)


async def _records(client: Any) -> list[dict[str, Any]]:
    async with services_of(client).ledger.engine.connect() as conn:
        rows = (await conn.execute(sa.select(audit).order_by(audit.c.seq))).mappings().all()
    return [dict(r) for r in rows]


def _of(records: list[dict[str, Any]], action: str, referral_id: str | None = None,
        ) -> list[tuple[str, str, str]]:
    return [(r["party_id"], r["role"], r["outcome"]) for r in records
            if r["action"] == action and (referral_id is None or r["referral_id"] == referral_id)]


async def test_every_read_and_write_of_a_case_is_recorded(make_client, store_url: str) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "AUD-1", area="08")  # waits through GET (admin) reads
    before = len(await _records(client))

    # Kela reads it, an intake of another area is refused (and that is recorded too).
    assert (await client.get(f"/v1/referrals/{rid}", headers={**auth(KELA_TOKEN),
                                                                 "X-Request-Id": "req-kela-1"})).status == 200
    assert (await client.get(f"/v1/referrals/{rid}", headers=auth(intake_token("90")))).status == 404
    # The intake lists its inbox, replies, and Kela reads the feed.
    inbox = await client.get("/v1/inbox", headers=auth(intake_token("08")))
    assert [i["referral_id"] for i in (await inbox.json())["items"]] == [rid]
    assert (await reply(client, rid, "received", reply_id="r1"))[0] == 202
    assert (await reply(client, rid, "received", reply_id="r1"))[0] == 200  # a repeat
    assert (await reply(client, rid, "closed", reply_id="r2", area="90"))[0] == 404
    feed = await client.get("/v1/updates", headers=auth(KELA_TOKEN))
    assert [i["referral_id"] for i in (await feed.json())["items"]] == [rid]

    records = await _records(client)
    new = records[before:]
    assert _of(records, "referral_received", rid) == [("kela-1", "kela", "ok")]
    assert _of(records, "delivered", rid) == [("system:delivery", "system", "ok")]
    assert _of(new, "case_read", rid) == [("kela-1", "kela", "ok"), ("intake-90", "intake", "not_found")]
    assert _of(new, "inbox_read", rid) == [("intake-08", "intake", "ok")]
    assert _of(new, "reply_applied", rid) == [("intake-08", "intake", "ok"),
                                              ("intake-08", "intake", "duplicate"),
                                              ("intake-90", "intake", "not_found")]
    assert _of(new, "feed_read", rid) == [("kela-1", "kela", "ok")]
    kela_read = next(r for r in new if r["action"] == "case_read" and r["party_id"] == "kela-1")
    assert kela_read["request_id"] == "req-kela-1"
    assert {r["action"] for r in records} <= AUDITED_ACTIONS

    report = await verify(services_of(client).ledger.engine)
    assert report.ok, report.broken
    assert report.records == len(records)
    assert sum(n for n, _ in report.heads.values()) == len(records)


async def test_refused_intake_is_recorded_without_the_body(make_client, store_url: str) -> None:
    client = await make_client(base_settings(store_url))
    body = referral_body("AUD-BAD", municipality_code=MUNICIPALITY_OF_AREA["08"])
    body["client"]["personal_id"] = "010190-9000"  # wrong check character
    status, _ = await post_referral(client, body)
    assert status == 422
    first = referral_body("AUD-2", municipality_code=MUNICIPALITY_OF_AREA["08"])
    assert (await post_referral(client, first))[0] == 202
    changed = referral_body("AUD-2", municipality_code=MUNICIPALITY_OF_AREA["90"])
    assert (await post_referral(client, changed))[0] == 409

    records = await _records(client)
    # Only the intakes: the accepted case's delivery (`delivered`) may land anywhere among them.
    assert [(r["action"], r["outcome"], r["referral_id"] is None) for r in records
            if r["action"] == "referral_received"] == [
        ("referral_received", "invalid", True),
        ("referral_received", "ok", False),
        ("referral_received", "conflict", True),
    ]
    text = json.dumps([{k: str(v) for k, v in r.items()} for r in records])
    assert "010190" not in text and first["client"]["last_name"] not in text


async def test_tampering_is_detected_at_the_changed_record(make_client, store_url: str) -> None:
    client = await make_client(base_settings(store_url))
    rids = [await new_case(client, f"AUD-T{i}") for i in range(6)]
    for rid in rids:
        await get_case(client, rid)
    engine = services_of(client).ledger.engine
    assert (await verify(engine)).ok
    victim = (await _records(client))[5]

    async with engine.begin() as conn:  # someone hides who read the case
        await conn.execute(sa.update(audit).where(audit.c.seq == victim["seq"])
                           .values(party_id="someone-else"))
    report = await verify(engine)
    assert not report.ok and report.broken is not None
    assert (report.broken.chain, report.broken.n, report.broken.seq) == (
        victim["chain"], victim["n"], victim["seq"])
    assert "hash does not match" in report.broken.reason

    async with engine.begin() as conn:  # put it back, then remove the record instead
        await conn.execute(sa.update(audit).where(audit.c.seq == victim["seq"])
                           .values(party_id=victim["party_id"]))
    assert (await verify(engine)).ok
    async with engine.begin() as conn:
        await conn.execute(sa.delete(audit).where(audit.c.seq == victim["seq"]))
    report = await verify(engine)
    assert report.broken is not None and report.broken.n == victim["n"]
    assert "missing" in report.broken.reason


async def test_removing_the_newest_records_is_detected_by_the_head(make_client, store_url: str) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "AUD-H")
    await get_case(client, rid)
    engine = services_of(client).ledger.engine
    last = (await _records(client))[-1]
    async with engine.begin() as conn:
        await conn.execute(sa.delete(audit).where(audit.c.seq == last["seq"]))
    report = await verify(engine)
    assert report.broken is not None and report.broken.chain == last["chain"]
    assert "head says" in report.broken.reason


async def test_no_audit_record_means_no_data(make_client, store_url: str) -> None:
    """If the record cannot be written, the read returns no case data and the write is not made."""
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "AUD-F")
    engine = services_of(client).ledger.engine
    async with engine.begin() as conn:
        await conn.execute(sa.delete(audit_heads))  # the audit cannot be appended to any more
    r = await client.get(f"/v1/referrals/{rid}", headers=auth(ADMIN_TOKEN))
    assert r.status == 500
    assert "referral" not in await r.json()
    status, _ = await post_referral(client, referral_body("AUD-F2",
                                                          municipality_code=MUNICIPALITY_OF_AREA["08"]))
    assert status == 500
    async with engine.connect() as conn:
        refs = (await conn.execute(sa.select(cases.c.kela_reference))).scalars().all()
    assert refs == ["AUD-F"]


async def test_cli_verify_and_export(make_client, store_url: str, tmp_path: Path, monkeypatch) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "AUD-C")
    await get_case(client, rid)
    total = len(await _records(client))
    await client.close()  # the CLI opens its own engine
    monkeypatch.setenv("HANDOFF_STORE_URL", store_url)
    runner = CliRunner()

    out = await asyncio.to_thread(runner.invoke, cli_app, ["audit", "verify"])
    assert out.exit_code == 0, out.output
    assert f"ok: {total} records verified" in out.output
    assert out.output.count("chain ") == CHAINS

    target = tmp_path / "export.jsonl"
    out = await asyncio.to_thread(runner.invoke, cli_app, ["audit", "export", "--from", "2000-01-01", "--to", "2100-01-01",
                                  "--referral-id", rid, "-o", str(target)])
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert lines and {line["referral_id"] for line in lines} == {rid}
    assert {"party_id", "role", "action", "at", "request_id", "outcome", "hash", "prev_hash"} <= set(lines[0])
    out = await asyncio.to_thread(runner.invoke, cli_app, ["audit", "export", "--from", "2000-01-01", "--to", "2000-01-02"])
    assert out.exit_code == 0 and out.output == ""

    import sqlalchemy.ext.asyncio as sa_async
    engine = sa_async.create_async_engine(store_url)
    async with engine.begin() as conn:
        await conn.execute(sa.update(audit).where(audit.c.seq == 1).values(outcome="forbidden"))
    await engine.dispose()
    out = await asyncio.to_thread(runner.invoke, cli_app, ["audit", "verify"])
    assert out.exit_code == 1
    assert "BROKEN" in out.output and "seq 1" in out.output


async def test_only_case_ids_are_recorded_from_urls(make_client, store_url: str) -> None:
    """A caller may put anything where a case id belongs; the trail keeps the refusal, not the text."""
    client = await make_client(base_settings(store_url))
    for wrong in ("010190-9000", "Virtanen", "5B8C1E8A-0000-4000-8000-000000000000"):
        assert (await client.get(f"/v1/referrals/{wrong}", headers=auth(ADMIN_TOKEN))).status == 404
    records = await _records(client)
    assert [(r["action"], r["referral_id"], r["outcome"]) for r in records] == [
        ("case_read", None, "not_found")] * 3


async def test_dashboard_overview_records_the_cases_it_names(make_client, store_url: str) -> None:
    import datetime as dt

    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "AUD-D")
    async with services_of(client).ledger.engine.begin() as conn:  # its acknowledge deadline passed
        await conn.execute(sa.update(cases).where(cases.c.referral_id == rid).values(
            ack_due_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2)))
    r = await client.get("/dashboard", headers={**auth(ADMIN_TOKEN), "X-Request-Id": "dash-1"})
    assert r.status == 200 and rid in await r.text()
    listed = [(x["party_id"], x["role"]) for x in await _records(client)
              if x["action"] == "case_listed" and x["referral_id"] == rid and x["request_id"] == "dash-1"]
    assert listed == [("admin-1", "admin")]


# --- verify on a live ledger (issue 15): one snapshot of heads and chains --------------------------


def _rid_in(chain: int) -> str:
    while True:
        rid = str(uuid.uuid4())
        if chain_of(rid) == chain:
            return rid


async def _seed(ledger: Ledger, per_chain: int = 5, per_transaction: int = 8) -> int:
    """Records in every chain, enough that a verify in small batches spans many statements."""
    for _ in range(per_chain):
        for chain in range(CHAINS):
            await append_alone(ledger, system_actor("seed"),
                               [AuditEntry("case_read", _rid_in(chain))] * per_transaction, utcnow())
    return CHAINS * per_chain * per_transaction


@contextlib.asynccontextmanager
async def _live_writers(client: Any, rid: str, tasks: int = 3) -> AsyncIterator[list[int]]:
    """Writers appending records to every chain without pause, as the service does under load:
    single records (one statement on PostgreSQL) and multi-record transactions through
    `append_alone`, and case reads through the HTTP app. Yields the count of records written."""
    ledger = services_of(client).ledger
    written = [0]
    stop = asyncio.Event()

    async def appender(k: int) -> None:
        i = 0
        while not stop.is_set():
            entries = [AuditEntry("case_read", str(uuid.uuid4()))] * (1 + (i + k) % 2)
            await append_alone(ledger, system_actor(f"writer-{k}"), entries, utcnow())
            written[0] += len(entries)
            i += 1

    async def reader() -> None:
        while not stop.is_set():
            await get_case(client, rid)  # one case_read record per request
            written[0] += 1

    async with asyncio.TaskGroup() as tg:
        for k in range(tasks):
            tg.create_task(appender(k))
        tg.create_task(reader())
        try:
            # The writers are under way before the first verify starts.
            await wait_for(lambda: written[0] >= 20, 30, "the first records written")
            yield written
        finally:
            stop.set()


async def test_verify_passes_while_records_are_written(make_client, store_url: str) -> None:
    """Heads and chains are read in one snapshot: records committed during a verify are either
    wholly in it (record and head) or wholly out of it, so a live ledger never looks tampered with.
    Writers are not blocked by a verify either: they keep committing while it runs."""
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "AUD-LIVE")
    ledger = services_of(client).ledger
    await _seed(ledger)

    verified, overlapped = 0, 0

    async def verify_until_overlapped(written: list[int]) -> None:
        nonlocal verified, overlapped
        while overlapped < 3:  # verifies during which records were committed
            before = written[0]
            report = await verify(ledger.engine, batch=16)
            assert report.ok, report.broken.describe() if report.broken else None
            assert sum(n for n, _ in report.heads.values()) == report.records
            verified += 1
            overlapped += written[0] > before

    async with _live_writers(client, rid) as written:
        await asyncio.wait_for(verify_until_overlapped(written), timeout=60)
    assert verified >= 3

    report = await verify(ledger.engine)
    assert report.ok, report.broken
    assert report.records == len(await _records(client))


async def test_records_committed_mid_verify_are_outside_its_snapshot(make_client, store_url: str,
                                                                     monkeypatch) -> None:
    """A verify paused in the middle of its walk: records then committed to every chain (those it
    walked, the one it is in, and those still ahead) do not block on it and do not show in it."""
    client = await make_client(base_settings(store_url))
    ledger = services_of(client).ledger
    seeded = await _seed(ledger, per_chain=2, per_transaction=3)
    walking, resume = asyncio.Event(), asyncio.Event()
    chain_rows = broker.store.audit_chain.chain_rows

    async def paused_chain_rows(conn: Any, chain: int, batch: int) -> AsyncIterator[dict[str, Any]]:
        async for row in chain_rows(conn, chain, batch):
            yield row
            if chain == CHAINS // 2 and not walking.is_set():
                walking.set()
                await resume.wait()

    monkeypatch.setattr(broker.store.audit_chain, "chain_rows", paused_chain_rows)
    task = asyncio.create_task(verify(ledger.engine, batch=2))
    try:
        await asyncio.wait_for(walking.wait(), timeout=10)
        for chain in range(CHAINS):  # a writer does not wait for the verify
            await asyncio.wait_for(append_alone(ledger, system_actor("mid"),
                                                [AuditEntry("case_read", _rid_in(chain))], utcnow()),
                                   timeout=10)
    finally:
        resume.set()
    report = await asyncio.wait_for(task, timeout=30)
    assert report.ok, report.broken.describe() if report.broken else None
    assert report.records == seeded
    monkeypatch.undo()
    assert (await verify(ledger.engine)).records == seeded + CHAINS


async def test_tampering_is_detected_while_records_are_written(make_client, store_url: str) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "AUD-LIVE-T")
    ledger = services_of(client).ledger
    await _seed(ledger)
    victim = (await _records(client))[100]

    async with _live_writers(client, rid):
        async with ledger.engine.begin() as conn:
            await conn.execute(sa.update(audit).where(audit.c.seq == victim["seq"])
                               .values(outcome="forbidden"))
        report = await verify(ledger.engine, batch=16)
        assert report.broken is not None
        assert (report.broken.chain, report.broken.n, report.broken.seq) == (
            victim["chain"], victim["n"], victim["seq"])
        assert "hash does not match" in report.broken.reason

        async with ledger.engine.begin() as conn:
            await conn.execute(sa.delete(audit).where(audit.c.seq == victim["seq"]))
        report = await verify(ledger.engine, batch=16)
        assert report.broken is not None
        assert (report.broken.chain, report.broken.n) == (victim["chain"], victim["n"])
        assert "missing" in report.broken.reason


async def test_cli_verify_on_a_live_ledger(make_client, store_url: str, monkeypatch) -> None:
    """`handoff audit verify` against a running service: ok while it writes (the CLI has its own
    engine, as in production)."""
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "AUD-LIVE-C")
    await _seed(services_of(client).ledger)
    monkeypatch.setenv("HANDOFF_STORE_URL", store_url)
    runner = CliRunner()
    async with _live_writers(client, rid) as written:
        for _ in range(3):
            before = written[0]
            out = await asyncio.to_thread(runner.invoke, cli_app, ["audit", "verify"])
            assert out.exit_code == 0, out.output
            assert "ok: " in out.output
            assert written[0] > before, "no record was written during the verify"


async def test_cli_verify_fails_on_a_removed_record_and_a_cut_off_tail(
        make_client, store_url: str, monkeypatch) -> None:
    client = await make_client(base_settings(store_url))
    ledger = services_of(client).ledger
    await _seed(ledger, per_chain=1, per_transaction=5)
    records = await _records(client)
    chain = records[-1]["chain"]
    in_chain = [r for r in records if r["chain"] == chain]
    last, middle, after_middle = in_chain[-1], in_chain[1], in_chain[2]
    monkeypatch.setenv("HANDOFF_STORE_URL", store_url)
    runner = CliRunner()

    async with ledger.engine.begin() as conn:  # the newest record of a chain is cut off
        await conn.execute(sa.delete(audit).where(audit.c.seq == last["seq"]))
    out = await asyncio.to_thread(runner.invoke, cli_app, ["audit", "verify"])
    assert out.exit_code == 1
    assert f"BROKEN: chain {chain}, record {last['n']}: chain ends at record {last['n'] - 1}" in out.output
    assert f"head says {last['n']}" in out.output

    async with ledger.engine.begin() as conn:  # and one in the middle of it
        await conn.execute(sa.delete(audit).where(audit.c.seq == middle["seq"]))
    out = await asyncio.to_thread(runner.invoke, cli_app, ["audit", "verify"])
    assert out.exit_code == 1
    assert (f"BROKEN: chain {chain}, record {middle['n']} (seq {after_middle['seq']}): "
            f"record {middle['n']} is missing") in out.output
