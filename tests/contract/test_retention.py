"""Retention purge (issue 8): personal data of old closed cases goes; statistics and audit stay.

Cases are made through the real app (HTTP), then "aged" by moving `closed_at` back in the ledger:
nothing else about them is touched, so what the purge sees is what a two-year-old case looks like.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner

from broker.cli import app as cli_app
from broker.jobs import retention
from broker.security.audit import system_actor, verify
from broker.store.ledger import Ledger, new_id
from broker.store.tables import audit, cases, metadata, outbox
from tests.helpers.app import ADMIN_TOKEN, KELA_TOKEN, auth, base_settings, services_of
from tests.helpers.support import (
    MUNICIPALITY_OF_AREA,
    case_events,
    get_case,
    hetu_with,
    post_referral,
    referral_body,
    reply,
    wait_for,
    wait_state,
)

LONG_AGO = dt.datetime(2023, 3, 1, 10, 0, tzinfo=dt.UTC)
CUTOFF = retention.policy_cutoff(24)


def _person(tag: str, individual: int) -> dict[str, str]:
    """Invented, distinctive personal data: a scan for it cannot hit anything by chance."""
    return {
        "personal_id": hetu_with(dt.date(1980, 5, 17), "-", individual),
        "first_names": f"Säilöntä-Aino{tag}",
        "last_name": f"Purkulainen{tag}",
        "phone": f"+358 50 987 6{individual}",
        "email": f"aino.purkulainen{tag.lower()}@example.fi",
        "address": f"Keksityntie 99 B {tag}",
        "description": f"Purkutesti-kuvaus {tag}: keksitty tilanne.",
    }


REPLY_SECRETS = {
    "worker": "Tuula Työntekijä-Purku", "worker_phone": "+358 40 555 0199",
    "question": "Purkukysymys: onko vuokrasopimus voimassa?", "answer": "Purkuvastaus: on voimassa.",
    "message": "Purkuviesti: palvelut järjestetty.", "dead": "Kuollut-kirje-viesti purkuun.",
}


def _body(ref: str, person: dict[str, str]) -> dict[str, Any]:
    body = referral_body(ref, municipality_code=MUNICIPALITY_OF_AREA["08"],
                         personal_id=person["personal_id"])
    body["client"].update({k: person[k] for k in ("first_names", "last_name", "phone", "email",
                                                   "address")})
    body["description"] = person["description"]
    return body


async def _referral(client: Any, ref: str, person: dict[str, str]) -> str:
    status, out = await post_referral(client, _body(ref, person))
    assert status == 202, out
    rid: str = out["referral_id"]
    await wait_state(client, rid, "delivered")
    return rid


async def _full_history(client: Any, rid: str) -> None:
    """Every kind of personal text a case collects: worker, question, answer, message, dead letter."""
    assert (await reply(client, rid, "received"))[0] == 202
    assert (await reply(client, rid, "assigned", worker={
        "name": REPLY_SECRETS["worker"], "title": "sosiaaliohjaaja",
        "phone": REPLY_SECRETS["worker_phone"]}))[0] == 202
    assert (await reply(client, rid, "info_requested", question=REPLY_SECRETS["question"]))[0] == 202
    r = await client.post(f"/v1/referrals/{rid}/answers", headers=auth(KELA_TOKEN), json={
        "answer_id": f"A-{rid[:8]}", "message": REPLY_SECRETS["answer"],
        "sent_at": "2026-01-03T10:00:00+02:00"})
    assert r.status == 202, await r.text()
    assert (await reply(client, rid, "closed", message=REPLY_SECRETS["message"],
                        findings=["housing_shortage"], client_feedback={"rating": 4},
                        referral_quality="sufficient"))[0] == 202
    # A Kela push that failed for good: its envelope carries the reply, message and all.
    item = {"referral_id": rid, "type": "reply", "reply": {
        "status": "closed", "message": REPLY_SECRETS["dead"], "worker": {"name": REPLY_SECRETS["worker"]}}}
    svc = services_of(client)
    await svc.cases.delivery_failed(
        consumer="kela", event_id=new_id(), referral_id=rid, area=None, queue="handoff.kela.updates",
        exchange="handoff.replies", routing_key="update.reply", reason="http_500", attempts=3,
        body=json.dumps({"event_id": "e", "type": "reply", "referral_id": rid, "area": "08",
                         "occurred_at": "2026-01-03T10:00:00+00:00", "data": item}))


async def _age(ledger: Ledger, rid: str, closed_at: dt.datetime = LONG_AGO) -> None:
    async with ledger.transaction() as conn:
        await conn.execute(sa.update(cases).where(cases.c.referral_id == rid)
                           .values(closed_at=closed_at))


async def _dump(ledger: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every ledger table, in a stable order."""
    out = {}
    async with ledger.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = (await conn.execute(sa.select(table))).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def _texts(dump: dict[str, list[tuple[Any, ...]]]) -> str:
    return "\n".join(str(v) for rows in dump.values() for row in rows for v in row
                     if isinstance(v, str))


def _statistical_columns(dump: dict[str, list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
    names = [c.name for c in cases.columns]
    drop = {names.index("referral_json"), names.index("purged_at")}
    return [tuple(v for i, v in enumerate(row) if i not in drop) for row in dump["cases"]]


async def _scenario(make_client: Any, store_url: str, **sections: Any,
                    ) -> tuple[Any, dict[str, str], dict[str, dict[str, str]]]:
    """Two old closed cases (one with every kind of personal text), one recently closed, one open."""
    client = await make_client(base_settings(store_url, **sections))
    people = {k: _person(k, n) for k, n in (("A", 951), ("B", 952), ("C", 953), ("D", 954))}
    ids = {"old_full": await _referral(client, "RET-A", people["A"]),
           "old_plain": await _referral(client, "RET-B", people["B"]),
           "recent": await _referral(client, "RET-C", people["C"]),
           "open": await _referral(client, "RET-D", people["D"])}
    await _full_history(client, ids["old_full"])
    for key in ("old_plain", "recent"):
        assert (await reply(client, ids[key], "received"))[0] == 202
        assert (await reply(client, ids[key], "closed", message=f"Loppuviesti {key}"))[0] == 202
    ledger = services_of(client).ledger
    await _age(ledger, ids["old_full"])
    await _age(ledger, ids["old_plain"], LONG_AGO + dt.timedelta(days=40))

    async def settled() -> bool:  # every message delivered: the ledger holds still from here
        async with ledger.engine.connect() as conn:
            return not (await conn.execute(sa.select(outbox.c.id).where(outbox.c.status != "done"))
                        ).first()

    await wait_for(settled, 10, "the outbox to drain")
    return client, ids, {"old_full": people["A"], "old_plain": people["B"], "recent": people["C"],
                         "open": people["D"]}


async def _statistics(client: Any) -> Any:
    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    r = await client.get("/v1/statistics", params={"from": month, "to": month},
                         headers=auth(ADMIN_TOKEN))
    assert r.status == 200
    return await r.json()


async def _purged_records(ledger: Ledger) -> list[tuple[str, str]]:
    async with ledger.engine.connect() as conn:
        rows = (await conn.execute(sa.select(audit.c.referral_id, audit.c.party_id)
                                   .where(audit.c.action == "purged"))).all()
    return sorted((str(r[0]), str(r[1])) for r in rows)


async def test_purge_removes_personal_data_and_keeps_statistics_and_audit(make_client, store_url,
                                                                          ) -> None:
    client, ids, people = await _scenario(make_client, store_url)
    ledger = services_of(client).ledger
    stats_before = await _statistics(client)
    before = await _dump(ledger)
    for secret in (*people["old_full"].values(), *REPLY_SECRETS.values()):
        assert secret in _texts(before), f"scenario did not store {secret!r}"

    done = await retention.purge(ledger, CUTOFF, system_actor("retention"), batch=1)

    assert done == 2
    after = await _dump(ledger)
    text = _texts(after)
    for key in ("old_full", "old_plain"):
        for field, secret in people[key].items():
            assert secret not in text, f"{key}: {field} survived the purge"
    for secret in REPLY_SECRETS.values():
        assert secret not in text, f"{secret!r} survived the purge"
    assert "Loppuviesti old_plain" not in text
    # The recent and the open case keep everything.
    for key in ("recent", "open"):
        assert people[key]["personal_id"] in text and people[key]["description"] in text
    assert "Loppuviesti recent" in text

    async with ledger.engine.connect() as conn:
        rows = {r.referral_id: r for r in (await conn.execute(sa.select(cases))).all()}
    for key in ("old_full", "old_plain"):
        assert rows[ids[key]].referral_json is None and rows[ids[key]].purged_at is not None
    for key in ("recent", "open"):
        assert rows[ids[key]].referral_json is not None and rows[ids[key]].purged_at is None

    assert _statistical_columns(after) == _statistical_columns(before)
    assert await _statistics(client) == stats_before
    report = await verify(ledger.engine)
    assert report.ok, report.broken and report.broken.describe()
    assert await _purged_records(ledger) == sorted(
        (ids[k], "system:retention") for k in ("old_full", "old_plain"))

    # A second run finds nothing and writes nothing.
    assert await retention.purge(ledger, CUTOFF, system_actor("retention")) == 0
    assert await _dump(ledger) == after


async def test_purged_case_still_reads(make_client, store_url) -> None:
    client, ids, _people = await _scenario(make_client, store_url)
    svc = services_of(client)
    rid = ids["old_full"]
    await retention.purge(svc.ledger, CUTOFF, system_actor("retention"))

    case = await get_case(client, rid)
    assert case["referral"] == {} and case["purged_at"] is not None
    assert case["state"] == "closed" and case["kela_reference"] == "RET-A" and case["area"] == "08"
    statuses = [e["reply"]["status"] for e in case_events(case, "reply")]
    assert statuses == ["received", "assigned", "info_requested", "closed"]
    closed = case_events(case, "reply")[-1]
    assert closed["purged"] is True and closed["reply"]["outcome"] == "services_arranged"
    assert "message" not in closed["reply"] and "worker" not in case_events(case, "reply")[1]["reply"]
    answer = case_events(case, "answer")[0]["answer"]
    assert answer["answer_id"] == f"A-{rid[:8]}" and set(answer) == {"answer_id", "sent_at"}
    recent = await get_case(client, ids["recent"])
    assert recent["purged_at"] is None and recent["referral"]["client"]["last_name"] == "PurkulainenC"

    r = await client.get("/v1/updates", params={"limit": 500}, headers=auth(KELA_TOKEN))
    assert r.status == 200
    items = [i for i in (await r.json())["items"] if i["referral_id"] == rid]
    assert [i["reply"]["status"] for i in items if i["type"] == "reply"] == statuses
    assert all(i["purged"] is True and i["kela_reference"] == "RET-A" for i in items)

    r = await client.get(f"/dashboard/cases?q={rid}", headers=auth(ADMIN_TOKEN))
    assert r.status == 200
    page = await r.text()
    assert rid in page and "Purkulainen" not in page

    # Its dead letter cannot be replayed: there is nothing left to deliver.
    dead = await client.get("/v1/admin/dead-letters", headers=auth(ADMIN_TOKEN))
    dl_ids = [d["id"] for d in (await dead.json())["items"] if d["referral_id"] == rid]
    assert dl_ids
    r = await client.post(f"/v1/admin/dead-letters/{dl_ids[0]}/replay", headers=auth(ADMIN_TOKEN))
    assert r.status == 409 and "purged" in (await r.json())["error"]["message"]

    # Kela repeats the original referral: still recognised by its reference and body hash.
    status, out = await post_referral(client, _body("RET-A", _people["old_full"]))
    assert (status, out["referral_id"]) == (200, rid)
    status, _ = await post_referral(client, _body("RET-A", _people["recent"]))
    assert status == 409


async def test_dry_run_changes_nothing(make_client, store_url) -> None:
    client, ids, _people = await _scenario(make_client, store_url)
    ledger = services_of(client).ledger
    before = await _dump(ledger)

    found = await retention.plan(ledger, CUTOFF)

    assert found.referral_ids == (ids["old_full"], ids["old_plain"])
    assert found.oldest_closed_at == LONG_AGO
    assert found.newest_closed_at == LONG_AGO + dt.timedelta(days=40)
    assert await _dump(ledger) == before


async def test_concurrent_purges_share_the_work(make_client, store_url) -> None:
    client, ids, _people = await _scenario(make_client, store_url)
    ledger = services_of(client).ledger
    other = Ledger.from_url(store_url)  # a second process's engine
    try:
        counts = await asyncio.gather(
            retention.purge(ledger, CUTOFF, system_actor("retention"), batch=1),
            retention.purge(other, CUTOFF, system_actor("retention"), batch=1))
    finally:
        await other.dispose()
    assert sum(counts) == 2
    assert [r for r, _ in await _purged_records(ledger)] == sorted([ids["old_full"], ids["old_plain"]])
    assert (await verify(ledger.engine)).ok


async def test_scheduled_purge_runs_in_the_service(make_client, store_url) -> None:
    client, ids, _people = await _scenario(
        make_client, store_url, retention={"schedule_interval_s": 0.05, "months_after_close": 24})
    ledger = services_of(client).ledger

    async def purged() -> bool:
        return len(await _purged_records(ledger)) == 2

    await wait_for(purged, 10, "the scheduled purge")
    assert (await get_case(client, ids["recent"]))["purged_at"] is None
    assert (await get_case(client, ids["old_plain"]))["referral"] == {}


def test_policy_cutoff_counts_calendar_months() -> None:
    at = dt.datetime(2026, 3, 31, 12, tzinfo=dt.UTC)
    assert retention.policy_cutoff(24, at) == dt.date(2024, 3, 31)
    assert retention.policy_cutoff(1, at) == dt.date(2026, 2, 28)
    # 22:30 UTC on 31 Dec is already 1 Jan in Helsinki.
    assert retention.policy_cutoff(12, dt.datetime(2025, 12, 31, 22, 30, tzinfo=dt.UTC)) == dt.date(2025, 1, 1)


async def test_cli_dry_run_refusal_and_apply(make_client, store_url) -> None:
    client, ids, people = await _scenario(make_client, store_url)
    ledger = services_of(client).ledger
    env = {"HANDOFF_STORE_URL": store_url, "HANDOFF_CONFIG": ""}
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(cli_app, ["purge", *args], env=env)

    dry = await asyncio.to_thread(invoke, "--ids")
    assert dry.exit_code == 0, dry.output
    assert f"dry run: 2 cases closed before {CUTOFF} (closed 2023-03-01 .. 2023-04-10)" in dry.output
    assert ids["old_full"] in dry.output and ids["recent"] not in dry.output
    assert people["old_full"]["personal_id"] not in dry.output
    assert await _purged_records(ledger) == []

    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    refused = await asyncio.to_thread(invoke, "--closed-before", tomorrow, "--apply")
    assert refused.exit_code == 2 and "later than the retention policy allows" in refused.output
    assert await _purged_records(ledger) == []
    bad = await asyncio.to_thread(invoke, "--closed-before", "2024-13-01")
    assert bad.exit_code == 2

    applied = await asyncio.to_thread(invoke, "--apply")
    assert applied.exit_code == 0, applied.output
    assert f"purged 2 cases closed before {CUTOFF}" in applied.output
    records = await _purged_records(ledger)
    assert [r for r, _ in records] == sorted([ids["old_full"], ids["old_plain"]])
    assert all(party.startswith("cli:") for _, party in records)
    assert (await verify(ledger.engine)).ok

    forced = await asyncio.to_thread(invoke, "--closed-before", tomorrow, "--force")
    assert forced.exit_code == 0 and "dry run: 1 cases" in forced.output  # the recent one only
