"""§ 11 statistics: per area and Finnish month, suppression of small numbers, role scoping, CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest

from broker.store.statistics import CSV_COLUMNS
from tests.helpers.app import ADMIN_TOKEN, KELA_TOKEN, auth, base_settings, intake_token, services_of
from tests.helpers.seeding import seed

UTC = dt.UTC


async def stats(client: Any, token: str = ADMIN_TOKEN, **params: str) -> Any:
    r = await client.get("/v1/statistics", params=params, headers=auth(token))
    return r.status, (await r.json() if r.content_type == "application/json" else await r.text())


def row(items: list[dict[str, Any]], month: str, area: str) -> dict[str, Any]:
    return next(i for i in items if i["month"] == month and i["area"] == area)


async def test_every_area_every_month_zero_not_suppressed(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    status, body = await stats(client, **{"from": "2026-01", "to": "2026-03"})
    assert status == 200
    assert len(body["items"]) == 3 * 23
    assert [(i["month"], i["area"]) for i in body["items"]] == sorted((i["month"], i["area"]) for i in body["items"])
    quiet = row(body["items"], "2026-02", "08")
    assert quiet["referrals"] == 0 and quiet["suppressed"] is False
    assert quiet["by_kind"] == {k: 0 for k in ("support_need", "support_need_without_consent",
                                               "application_transfer", "basic_amount_reduction",
                                               "urgent_assistance")}
    assert quiet["first_reply_hours"] == {"median": None, "p90": None}
    assert quiet["client_feedback"] == {"responses": 0, "mean_rating": None}
    assert quiet["area_name"] == "Pirkanmaan hyvinvointialue"


@pytest.mark.parametrize(("n", "shown"), [(1, None), (4, None), (5, 5)])
async def test_small_numbers_suppressed(make_client, store_url, n: int, shown: int | None) -> None:
    client = await make_client(base_settings(store_url))
    await seed(client, n, month_day=dt.datetime(2026, 3, 10, 9, tzinfo=UTC), close=True)
    _, body = await stats(client, **{"from": "2026-03", "to": "2026-03", "area": "08"})
    (r,) = body["items"]
    assert r["referrals"] == shown
    assert r["by_need"]["housing"] == shown and r["by_need"]["income"] == 0
    assert r["outcomes"]["services_arranged"] == shown
    assert r["findings"]["housing_shortage"] == shown
    assert r["referral_quality"]["sufficient"] == shown
    assert r["client_feedback"]["responses"] == shown
    assert r["acknowledged_on_time"] == shown
    assert r["suppressed"] is (shown is None)
    if shown is None:
        assert r["first_reply_hours"] == {"median": None, "p90": None}
        assert r["client_feedback"]["mean_rating"] is None
    else:
        # first replies after 10, 11, 12, 13, 14 hours: percentile_cont on both stores
        assert r["first_reply_hours"] == {"median": 12.0, "p90": 13.6}
        assert r["client_feedback"]["mean_rating"] == 4.0


async def test_month_is_finnish(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    # 23:30 UTC on 31 March is 02:30 on 1 April in Helsinki (EEST, UTC+3).
    await seed(client, 5, month_day=dt.datetime(2026, 3, 31, 23, 30, tzinfo=UTC), prefix="M")
    _, body = await stats(client, **{"from": "2026-03", "to": "2026-04", "area": "08"})
    assert row(body["items"], "2026-03", "08")["referrals"] == 0
    assert row(body["items"], "2026-04", "08")["referrals"] == 5


async def test_intake_sees_only_its_own_area(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    await seed(client, 5, month_day=dt.datetime(2026, 5, 5, 9, tzinfo=UTC), prefix="A")
    await seed(client, 5, month_day=dt.datetime(2026, 5, 5, 9, tzinfo=UTC), municipality="091", prefix="B")
    _, own = await stats(client, intake_token("08"), **{"from": "2026-05", "to": "2026-05"})
    assert [(i["area"], i["referrals"]) for i in own["items"]] == [("08", 5)]
    _, other = await stats(client, intake_token("08"), **{"from": "2026-05", "to": "2026-05", "area": "90"})
    assert other["items"] == []
    _, kela = await stats(client, KELA_TOKEN, **{"from": "2026-05", "to": "2026-05"})
    assert row(kela["items"], "2026-05", "90")["referrals"] == 5 and len(kela["items"]) == 23


@pytest.mark.parametrize(("params", "loc"), [
    ({"from": "2026-13", "to": "2026-12"}, ["query", "from"]),
    ({"from": "2026-01", "to": "26-02"}, ["query", "to"]),
    ({"to": "2026-02"}, ["query", "from"]),
    ({"from": "2026-05", "to": "2026-04"}, ["query", "from"]),
    ({"from": "2023-01", "to": "2026-01"}, ["query", "to"]),
    ({"from": "2026-01", "to": "2026-01", "area": "77"}, ["query", "area"]),
    ({"from": "2026-01", "to": "2026-01", "format": "xml"}, ["query", "format"]),
])
async def test_bad_parameters_are_422(make_client, tmp_path, params: dict[str, str], loc: list[str]) -> None:
    client = await make_client(base_settings(f"sqlite+aiosqlite:///{tmp_path / 's.db'}"))
    status, body = await stats(client, **params)
    assert status == 422 and body["errors"][0]["loc"] == loc


async def test_csv_header_flattening_and_no_personal_data(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    ids = await seed(client, 6, month_day=dt.datetime(2026, 6, 2, 8, tzinfo=UTC), close=True, prefix="C")
    r = await client.get("/v1/statistics", params={"from": "2026-06", "to": "2026-06", "format": "csv"},
                         headers=auth(ADMIN_TOKEN))
    assert r.status == 200 and r.headers["Content-Type"] == "text/csv; charset=utf-8"
    text = await r.text()
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == CSV_COLUMNS and len(lines) == 1 + 23
    assert {"by_kind.support_need", "first_reply_hours.median", "client_feedback.mean_rating",
            "findings.housing_shortage"} <= set(lines[0])
    data = dict(zip(lines[0], next(line for line in lines[1:] if line[0] == "08"), strict=True))
    assert data["referrals"] == "6" and data["by_need.income"] == "0" and data["suppressed"] == "false"
    quiet = dict(zip(lines[0], next(line for line in lines[1:] if line[0] == "01"), strict=True))
    assert quiet["first_reply_hours.median"] == ""  # null is an empty cell
    _, js = await stats(client, **{"from": "2026-06", "to": "2026-06"})
    blob = text + repr(js)
    svc = services_of(client)
    for rid in ids:
        found = await svc.ledger.read_case(rid)
        assert found is not None
        case, _ = found
        ref = case.referral()
        for secret in (rid, case.kela_reference, ref["client"]["personal_id"], ref["client"]["last_name"],
                       ref["description"]):
            assert secret not in blob


async def test_cli_prints_the_same(store_url, tmp_path, make_client) -> None:
    import json
    import os
    import subprocess
    import sys

    client = await make_client(base_settings(store_url))
    await seed(client, 5, month_day=dt.datetime(2026, 7, 1, 9, tzinfo=UTC), prefix="L")
    env = {**os.environ, "HANDOFF_STORE_URL": store_url}
    out = subprocess.run([sys.executable, "-m", "broker.cli", "stats", "--from", "2026-07", "--to", "2026-07",
                          "--area", "08"], env=env, capture_output=True, text=True, timeout=60, check=True)
    _, api = await stats(client, **{"from": "2026-07", "to": "2026-07", "area": "08"})
    assert json.loads(out.stdout) == api
