"""The tamper-evident audit trail (issue 8): every read and write of case data leaves a record in
the same commit as its effect (or before the data leaves), the chain shows any change, and an
export serves a controller's access request. Both stores."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner

from broker.audit import AUDITED_ACTIONS, CHAINS, verify
from broker.cli import app as cli_app
from broker.tables import audit, audit_heads, cases
from tests.conftest import ADMIN_TOKEN, KELA_TOKEN, auth, base_settings, intake_token, services_of
from tests.support import (
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
    assert [(r["action"], r["outcome"], r["referral_id"] is None) for r in records] == [
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
