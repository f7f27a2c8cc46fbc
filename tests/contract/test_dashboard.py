"""The operators' dashboard (DESIGN § 7): counts per area, login and sessions, CSRF, replay, case
lookup, and no personal data on any page. Both stores; embedded transport; the real app over HTTP.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import pytest

from broker.domain.workdays import working_days_between
from broker.store.ledger import utcnow
from tests.helpers.app import ADMIN_TOKEN, KELA_TOKEN, auth, base_settings, intake_token, services_of
from tests.helpers.dashboard import csrf_of, login, page_text, post_case, set_case
from tests.helpers.receiver import Receiver, webhook_routes
from tests.helpers.seeding import seed
from tests.helpers.support import (
    get_case,
    hetu_with,
    reply,
    wait_state,
)

Client = Any

NO_VALUE = "\u2013"  # the en dash shown for "no value"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# --- helpers -------------------------------------------------------------------------------------


def area_row(page: str, area: str) -> dict[str, str] | None:
    """The cells of one area's row in the overview table (`data-col` -> text), or None."""
    m = re.search(rf'<tr data-area="{re.escape(area)}"([^>]*)>(.*?)</tr>', page, re.S)
    if m is None:
        return None
    cells = {k: v.strip() for k, v in re.findall(r'data-col="(\w+)">([^<]*)', m.group(2))}
    cells["class"] = m.group(1)
    cells["html"] = m.group(2)
    return cells


async def traffic(client: Client) -> dict[str, Any]:
    """Area 08: two delivered and unanswered (one overdue, one delivered ten days ago), one
    acknowledged. Area 90: one unanswered, three acknowledged with first-reply latencies 1 h, 2 h,
    10 h, and one closed long ago (outside the 30-day window). Area 05 (no route): one unroutable."""
    now = utcnow()
    hour = dt.timedelta(hours=1)
    ids: dict[str, Any] = {}
    ids["a_old"] = await post_case(client, "DASH-A1", "08")
    ids["a_overdue"] = await post_case(client, "DASH-A2", "08")
    ids["a_ack"] = await post_case(client, "DASH-A3", "08")
    ids["b_open"] = await post_case(client, "DASH-B1", "90")
    ids["b_ack"] = [await post_case(client, f"DASH-B{i}", "90") for i in (2, 3, 4)]
    ids["b_closed"] = await post_case(client, "DASH-B5", "90")
    ids["c_unroutable"] = await post_case(client, "DASH-C1", "05")
    for rid in [ids["a_old"], ids["a_overdue"], ids["a_ack"], ids["b_open"], *ids["b_ack"],
                ids["b_closed"]]:
        await wait_state(client, rid, "delivered")
    code, out = await reply(client, ids["a_ack"], "received", area="08",
                            message="Vastausviesti-SALAINEN-1 (keksitty)")
    assert code == 202, out
    for rid in ids["b_ack"]:
        code, out = await reply(client, rid, "received", area="90")
        assert code == 202, out
    code, out = await reply(client, ids["b_closed"], "closed", area="90")
    assert code == 202, out
    ids["old_delivered_at"] = now - dt.timedelta(days=10)
    await set_case(client, ids["a_old"], delivered_at=ids["old_delivered_at"])
    await set_case(client, ids["a_overdue"], ack_due_at=now - dt.timedelta(days=1))
    await set_case(client, ids["a_ack"], received_at=now - 5 * hour, first_reply_at=now - 2 * hour)
    for rid, latency in zip(ids["b_ack"], (1, 2, 10), strict=True):
        await set_case(client, rid, received_at=now - 20 * hour,
                       first_reply_at=now - 20 * hour + latency * hour)
    long_ago = now - dt.timedelta(days=40)
    await set_case(client, ids["b_closed"], received_at=long_ago, first_reply_at=long_ago + 100 * hour)
    return ids


# --- overview ------------------------------------------------------------------------------------


async def test_overview_counts_per_area(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    ids = await traffic(client)
    page = await page_text(client, "/dashboard", headers=auth(ADMIN_TOKEN))

    a = area_row(page, "08")
    assert a is not None
    assert (a["open"], a["unanswered"], a["overdue"]) == ("3", "2", "1")
    assert 'class="overdue"' in a["class"] and "⚠" in a["html"]
    assert a["oldest"] == str(working_days_between(ids["old_delivered_at"], utcnow()))
    assert int(a["oldest"]) >= 5
    assert (a["p50"], a["p90"], a["replied"]) == ("3.0", "3.0", "1")

    b = area_row(page, "90")
    assert b is not None
    assert (b["open"], b["unanswered"], b["overdue"], b["oldest"]) == ("4", "1", "0", "0")
    assert 'overdue' not in b["class"]
    # percentile_cont over 1 h, 2 h, 10 h (the closed case was received 40 days ago: left out).
    assert (b["p50"], b["p90"], b["replied"]) == ("2.0", "8.4", "3")

    for quiet in ("19", "03"):  # a route, no cases
        row = area_row(page, quiet)
        assert row is not None and (row["open"], row["unanswered"], row["overdue"]) == ("0", "0", "0")
        assert row["p50"] == NO_VALUE and row["oldest"] == NO_VALUE
    unroutable = area_row(page, "05")  # cases, no route
    assert unroutable is not None and unroutable["open"] == "0"
    assert area_row(page, "91") is None  # neither a route nor a case
    assert "Pirkanmaan hyvinvointialue" in page  # names from the classification (fi by default)

    overdue = re.search(r'<table id="overdue">(.*?)</table>', page, re.S)
    assert overdue is not None and ids["a_overdue"] in overdue.group(1)
    assert re.search(rf'<tr class="overdue" data-referral="{ids["a_overdue"]}"', page)
    assert ids["a_old"] not in overdue.group(1)
    assert '<meta http-equiv="refresh" content="30">' in page
    assert "<script" not in page.lower()


async def test_languages(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    await post_case(client, "DASH-L1", "08")
    fi = await page_text(client, "/dashboard", headers=auth(ADMIN_TOKEN))
    en = await page_text(client, "/dashboard?lang=en", headers=auth(ADMIN_TOKEN))
    sv = await page_text(client, "/dashboard?lang=sv", headers=auth(ADMIN_TOKEN))
    xx = await page_text(client, "/dashboard?lang=xx", headers=auth(ADMIN_TOKEN))
    assert '<html lang="fi">' in fi and "Vastaamatta" in fi and "Unanswered" not in fi
    assert '<html lang="en">' in en and "Unanswered" in en and "Oldest unanswered" in en
    assert '<html lang="sv">' in sv and "Obesvarade" in sv and "Birkalands välfärdsområde" in sv
    assert '<html lang="fi">' in xx


async def test_security_headers_on_every_dashboard_response(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    responses = [
        await client.get("/dashboard", headers=auth(ADMIN_TOKEN)),
        await client.get("/dashboard", allow_redirects=False),
        await client.get("/dashboard/login"),
        await client.get("/dashboard", headers=auth(KELA_TOKEN)),
        await client.get("/dashboard/cases?q=nothing", headers=auth(ADMIN_TOKEN)),
        await client.get("/dashboard/static/dashboard.css"),
    ]
    for r in responses:
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (r.url, name, r.headers.get(name))
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert (await client.get("/healthz")).headers.get("X-Frame-Options") is None


# --- auth ---------------------------------------------------------------------------------------


async def test_login_flow_sets_a_safe_cookie(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    r = await client.get("/dashboard?lang=en", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/dashboard/login?lang=en"

    r = await login(client, "not-a-token")
    assert r.status == 401 and "handoff_dashboard=" not in r.headers.get("Set-Cookie", "")
    r = await client.post("/dashboard/login", data={"token": ADMIN_TOKEN}, allow_redirects=False)
    assert r.status == 403  # no double-submit token

    r = await login(client)
    assert r.status == 303 and r.headers["Location"] == "/dashboard?lang=fi"
    cookie = next(c for c in r.headers.getall("Set-Cookie") if c.startswith("handoff_dashboard="))
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/dashboard" in attrs
    assert "secure" not in attrs  # plain http in the test
    value = cookie.split(";")[0].split("=", 1)[1]
    assert ADMIN_TOKEN not in value

    page = await page_text(client, "/dashboard")  # the cookie jar sends the session
    assert 'id="areas"' in page

    # Logout (with its CSRF token) ends the session, also for a copy of the cookie kept elsewhere.
    r = await client.post("/dashboard/logout", data={"csrf": csrf_of(page)}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/dashboard/login")
    assert (await client.get("/dashboard", allow_redirects=False)).status == 303
    client.session.cookie_jar.clear()
    r = await client.get("/dashboard", allow_redirects=False,
                         headers={"Cookie": f"handoff_dashboard={value}"})
    assert r.status == 303

    # A tampered cookie is a login redirect, never a page.
    assert (await login(client)).status == 303
    fresh = next(c.value for c in client.session.cookie_jar if c.key == "handoff_dashboard")
    forged = fresh[:-2] + ("AA" if not fresh.endswith("AA") else "BB")
    client.session.cookie_jar.clear()
    for bad in (forged, "garbage", fresh.split(".")[0]):
        r = await client.get("/dashboard", allow_redirects=False,
                             headers={"Cookie": f"handoff_dashboard={bad}"})
        assert r.status == 303 and r.headers["Location"].startswith("/dashboard/login")

    # X-Forwarded-Proto from a peer that is not a trusted proxy is anyone's word: no Secure flag.
    spoofed = await login(client, **{"X-Forwarded-Proto": "https"})
    cookie = next(c for c in spoofed.headers.getall("Set-Cookie") if c.startswith("handoff_dashboard="))
    assert "secure" not in [a.strip().lower() for a in cookie.split(";")]


async def test_secure_cookie_behind_a_trusted_proxy_only(make_client, store_url) -> None:
    """X-Forwarded-Proto counts only from a peer in `[server] trusted_proxies` (the test client's
    peer is 127.0.0.1), and only the value that peer wrote (the right-most)."""
    client = await make_client(base_settings(store_url, server={"trusted_proxies": ["127.0.0.0/8"]}))

    def secure(r: Any, name: str = "handoff_dashboard") -> bool:
        cookie = next(c for c in r.headers.getall("Set-Cookie") if c.startswith(f"{name}="))
        return "secure" in [a.strip().lower() for a in cookie.split(";")]

    assert secure(await login(client, **{"X-Forwarded-Proto": "https"}))
    assert not secure(await login(client, **{"X-Forwarded-Proto": "https, http"}))
    assert not secure(await login(client))
    form = await client.get("/dashboard/login", headers={"X-Forwarded-Proto": "https"})
    assert secure(form, "handoff_dashboard_login")

    other = await make_client(base_settings(store_url, server={"trusted_proxies": ["10.0.0.0/8"]}))
    assert not secure(await login(other, **{"X-Forwarded-Proto": "https"}))


async def test_non_admin_tokens_get_403(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await post_case(client, "DASH-F1", "08")
    for token in (KELA_TOKEN, intake_token("08"), intake_token("90")):
        for path in ("/dashboard", f"/dashboard/cases?q={rid}", "/dashboard?lang=en"):
            r = await client.get(path, headers=auth(token), allow_redirects=False)
            assert r.status == 403, (token, path, r.status)
            assert "DASH-F1" not in await r.text()
        r = await client.post("/dashboard/dead-letters/1/replay", data={"csrf": "x"},
                              headers=auth(token), allow_redirects=False)
        assert r.status == 403
        r = await login(client, token)
        assert r.status == 403 and "handoff_dashboard=" not in r.headers.get("Set-Cookie", "")
    r = await client.get("/dashboard", headers=auth("no-such-token"), allow_redirects=False)
    assert r.status == 401


# --- dead letters: replay through the dashboard, CSRF --------------------------------------------


async def test_replay_through_the_dashboard_and_csrf(make_client, store_url) -> None:
    healthy = False
    receiver = await Receiver(behaviour=lambda _n: 204 if healthy else 503).start()
    try:
        settings = base_settings(store_url, routes=webhook_routes(receiver.url),
                                 delivery={"give_up_after_s": 1.0})
        client = await make_client(settings)
        rid = await post_case(client, "DASH-D1", "08")
        await wait_state(client, rid, "failed")

        assert (await login(client)).status == 303
        page = await page_text(client, "/dashboard")
        m = re.search(r'<tr data-dead-letter="(\d+)">', page)
        assert m, "the dead letter is listed"
        dl_id = m.group(1)
        assert area_row(page, "08")["dead"] == "1"  # type: ignore[index]
        assert "http_503" in page
        replay_path = f"/dashboard/dead-letters/{dl_id}/replay"

        # Missing, wrong, and another session's token: 403, and nothing is replayed.
        assert (await client.post(replay_path, data={}, allow_redirects=False)).status == 403
        assert (await client.post(replay_path, data={"csrf": "forged"},
                                  allow_redirects=False)).status == 403
        other = await page_text(client, "/dashboard", headers=auth(ADMIN_TOKEN))  # bearer binding
        assert csrf_of(other) != csrf_of(page)
        r = await client.post(replay_path, data={"csrf": csrf_of(other)}, allow_redirects=False)
        assert r.status == 403
        assert (await get_case(client, rid))["state"] == "failed"

        healthy = True
        r = await client.post(replay_path, data={"csrf": csrf_of(page)}, allow_redirects=False)
        assert r.status == 303, await r.text()
        assert r.headers["Location"].startswith("/dashboard?") and "done=replayed" in r.headers["Location"]
        case = await wait_state(client, rid, "delivered")
        assert next(e for e in case["events"] if e["type"] == "replayed")["actor"] == "admin-1"
        assert receiver.referral_ids()[rid] == 1

        after = await page_text(client, "/dashboard?done=replayed")
        assert f'data-dead-letter="{dl_id}"' not in after
        assert area_row(after, "08")["dead"] == "0"  # type: ignore[index]
        assert "Viesti lähetettiin uudelleen." in after

        r = await client.post(replay_path, data={"csrf": csrf_of(page)}, allow_redirects=False)
        assert r.status == 303 and "done=already" in r.headers["Location"]
        # The bearer caller works too, with the token of its own binding.
        r = await client.post("/dashboard/dead-letters/999/replay", data={"csrf": csrf_of(other)},
                              headers=auth(ADMIN_TOKEN), allow_redirects=False)
        assert r.status == 303 and "done=missing" in r.headers["Location"]
    finally:
        await receiver.stop()


# --- case lookup ---------------------------------------------------------------------------------


async def test_case_lookup_by_referral_id_and_kela_reference(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    ids = await traffic(client)
    rid = ids["a_ack"]
    by_id = await page_text(client, f"/dashboard/cases?q={rid}", headers=auth(ADMIN_TOKEN))
    by_ref = await page_text(client, "/dashboard/cases?q=DASH-A3&lang=en", headers=auth(ADMIN_TOKEN))
    for page in (by_id, by_ref):
        assert rid in page and "DASH-A3" in page
        assert re.search(r'data-field="state"><code>acknowledged</code>', page)
        assert re.search(r'data-field="area"><code>08</code>', page)
        assert re.search(r'data-field="kind"><code>support_need</code>', page)
        assert re.search(r'data-field="urgency"><code>normal</code>', page)
        assert 'data-deadline="acknowledge"' in page and 'data-deadline="assessment"' in page
        types = re.findall(r'<tr data-event="(\w+)">', page)
        assert types[:4] == ["received", "routed", "delivered", "reply"], types
        assert re.search(r"<code>received</code>", page)  # the reply's status
        assert "intake-08" in page and "kela-1" in page  # actors
    assert "Acknowledgement" in by_ref or "acknowledgement" in by_ref

    late = await page_text(client, f"/dashboard/cases?q={ids['a_overdue']}", headers=auth(ADMIN_TOKEN))
    assert re.search(r'<tr data-deadline="acknowledge" class="overdue">', late)
    assert '<section id="case" class="overdue">' in late and "⚠ myöhässä" in late

    await page_text(client, "/dashboard/cases?q=NO-SUCH-REF", 404, headers=auth(ADMIN_TOKEN))
    hetu = hetu_with(dt.date(1980, 5, 17), "-", 923)
    refused = await page_text(client, f"/dashboard/cases?q={hetu}", 400, headers=auth(ADMIN_TOKEN))
    assert hetu not in refused
    # A code typed with letters around it, in lower case, is still a code.
    glued = await page_text(client, f"/dashboard/cases?q=abc{hetu.lower()}x", 400, headers=auth(ADMIN_TOKEN))
    assert hetu.lower() not in glued
    # A referral id whose last group happens to look like an identity code is still an id.
    await page_text(client, "/dashboard/cases?q=4a8af5b9-cfcf-4f02-bee4-456298f99967", 404,
                    headers=auth(ADMIN_TOKEN))


async def test_no_personal_data_on_any_dashboard_page(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    secrets: list[str] = []
    rids: list[str] = []
    for i, area in enumerate(["08", "08", "90", "05"]):
        personal = {
            "personal_id": hetu_with(dt.date(1970 + i, 3, 14), "-", 950 + i),
            "first_names": f"Qwertyina{i} Kuvitelma",
            "last_name": f"Zyxwvutsson{i}",
            "description": f"Kuvausteksti-SALAINEN-{i} (keksitty)",
        }
        kind = "support_need_without_consent" if i == 2 else "support_need"
        rid = await post_case(client, f"DASH-P{i}", area, kind=kind, personal=personal)
        rids.append(rid)
        secrets += list(personal.values())
    secrets.append("Asiakkaan turvallisuus vaatii")  # the justification text of the demo referral
    await wait_state(client, rids[0], "delivered")
    await wait_state(client, rids[2], "delivered")
    code, _ = await reply(client, rids[0], "info_requested", area="08",
                          question="Kysymysteksti-SALAINEN (keksitty)",
                          message="Viestiteksti-SALAINEN (keksitty)")
    assert code == 202
    code, _ = await reply(client, rids[2], "assigned", area="90")  # a worker's name and phone
    assert code == 202
    secrets += ["Kysymysteksti-SALAINEN", "Viestiteksti-SALAINEN", "Keksitty Työntekijä",
                "+358 40 000 0001", "+358 40 000 0000"]
    await set_case(client, rids[1], ack_due_at=utcnow() - dt.timedelta(hours=3))

    assert (await login(client)).status == 303
    pages: dict[str, str] = {}
    queue = [f"/dashboard?lang={lang}" for lang in ("fi", "en", "sv")]
    queue += [f"/dashboard/cases?q={q}&lang={lang}" for q in [*rids, "DASH-P0", "DASH-P3"]
              for lang in ("fi", "sv")]
    while queue and len(pages) < 200:  # every dashboard link reachable from these pages
        path = queue.pop()
        if path in pages:
            continue
        r = await client.get(path, allow_redirects=False)
        pages[path] = await r.text()
        for href in re.findall(r'href="(/dashboard[^"#]*)"', pages[path]):
            href = html.unescape(href)
            if href not in pages and "/static/" not in href:
                queue.append(href)
    pages["login"] = await (await client.get("/dashboard/login")).text()
    pages["forbidden"] = await (await client.get("/dashboard", headers=auth(KELA_TOKEN))).text()
    assert len(pages) > 12
    for path, text in pages.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} appears on {path}"
        assert "<script" not in text.lower()
    for rid in rids:
        assert any(rid in text for text in pages.values())


def test_every_translation_key_exists_in_fi_sv_and_en() -> None:
    """One catalog per language, the same keys in each (none missing, none extra), every text
    non-empty with the same `{fields}`, and every key a template names exists."""
    import string
    from importlib.resources import files

    from broker.dashboard.i18n import LANGS, catalog

    folder = files("broker.dashboard").joinpath("translations")
    assert sorted(p.name for p in folder.iterdir()) == ["en.json", "fi.json", "sv.json"]
    assert LANGS == ("fi", "sv", "en")
    fi = catalog("fi")
    for lang in ("sv", "en"):
        messages = catalog(lang)
        assert sorted(set(fi) - set(messages)) == [], f"missing in {lang}"
        assert sorted(set(messages) - set(fi)) == [], f"extra in {lang}"
        for key, text in messages.items():
            assert text.strip(), (lang, key)
            fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
            assert fields == {f for _, f, _, _ in string.Formatter().parse(fi[key]) if f}, (lang, key)
    templates = files("broker.dashboard").joinpath("templates")
    named = set()
    for template in templates.iterdir():
        text = template.read_text("utf-8")
        named |= set(re.findall(r"\bt\.([a-z_0-9]+)\b(?!\()", text))
        named |= set(re.findall(r"\bt\[\"([a-z_0-9]+)\"\]", text))
    assert named and sorted(named - set(fi) - {"get"}) == []


async def test_autoescape_is_on_for_values_from_the_ledger(make_client, store_url) -> None:
    """A stored value that looks like markup is shown as text: Jinja escapes it, no page builds HTML
    by hand. (The API refuses such a Kela reference; it is written into the ledger directly.)"""
    client = await make_client(base_settings(store_url))
    rid = await post_case(client, "DASH-ESC-1", "08")
    await set_case(client, rid, kela_reference='<script>alert("x")</script>&<b>')
    page = await page_text(client, f"/dashboard/cases?q={rid}&lang=en", headers=auth(ADMIN_TOKEN))
    assert "<script" not in page and "<b>" not in page
    assert ('data-field="kela_reference"><code>&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;'
            '&amp;&lt;b&gt;</code>') in page

    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("broker.dashboard"),
                             autoescape=jinja2.select_autoescape(["html"]))
    assert env.get_template("base.html").name == "base.html"  # the templates ship in the package
    from aiohttp import web

    from broker.dashboard.templating import setup_templates

    dashboard_env = setup_templates(web.Application())
    assert dashboard_env.from_string("{{ v }}").render(v="<i>") == "&lt;i&gt;"
    assert dashboard_env.get_template("macros.html").module.marker({"overdue_marker": "<x>"}) \
        == '<span class="marker">⚠ &lt;x&gt;</span>'


async def test_the_stylesheet_is_a_static_package_file(make_client, store_url) -> None:
    from importlib.resources import files

    client = await make_client(base_settings(store_url))
    css = files("broker.dashboard").joinpath("static", "dashboard.css").read_text("utf-8")
    url = client.app.router["dashboard_static"].url_for(filename="dashboard.css")
    assert str(url) == "/dashboard/static/dashboard.css"
    r = await client.get(str(url))
    assert r.status == 200 and r.content_type == "text/css"
    assert await r.text() == css and "svg.chart" in css
    page = await page_text(client, "/dashboard/login")
    assert '<link rel="stylesheet" href="/dashboard/static/dashboard.css">' in page
    for bad in ("/dashboard/static/../translations/fi.json", "/dashboard/static/%2e%2e/views.py",
                "/dashboard/static/nothing.css"):
        assert (await client.get(bad)).status in (403, 404), bad


async def test_overview_of_an_empty_ledger(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    page = await page_text(client, "/dashboard", headers=auth(ADMIN_TOKEN))
    row = area_row(page, "08")
    assert row is not None and row["open"] == "0" and row["p50"] == NO_VALUE
    assert area_row(page, "05") is None  # no route and no case


# --- statistics page (DESIGN § 11) ---------------------------------------------------------------

STATS_MONTHS = ("2026-02", "2026-03", "2026-04")


def stats_table(page: str, chart: str) -> dict[tuple[str, str], str]:
    """(month, series) -> the cell text of the data table under one chart."""
    m = re.search(rf'<table id="table-{chart}">(.*?)</table>', page, re.S)
    assert m is not None, f"no table under chart {chart}"
    cells: dict[tuple[str, str], str] = {}
    for month, body in re.findall(r'<tr data-month="([\d-]+)">(.*?)</tr>', m.group(1), re.S):
        for series, text in re.findall(r'data-series="(\w+)">([^<]*)</td>', body):
            cells[(month, series)] = html.unescape(text)
    return cells


def chart_cell(page: str, chart: str, series: str, month: str) -> str:
    """The SVG markup of one series' bar (or dash) for one month."""
    svg = re.search(rf'<svg class="chart" id="chart-{chart}".*?</svg>', page, re.S)
    assert svg is not None, f"no SVG chart {chart}"
    row = re.search(rf'<g class="series" data-series="{series}">(.*?)</g></g>(?=<g class="series"|<text)',
                    svg.group(0), re.S)
    assert row is not None
    cell = re.search(rf'<g data-month="{month}">(.*?)</g>', row.group(0) + "</g>", re.S)
    assert cell is not None
    return cell.group(1)


def shown(value: Any, unit: str = "count") -> str:
    if value is None:
        return NO_VALUE
    return {"count": str(value), "hours": f"{value:.1f}", "percent": f"{value:.1f} %"}[unit]


async def seed_statistics(client: Client) -> list[str]:
    """Area 08: six answered and closed cases in 2026-03, three (hidden) in 2026-04. Area 90: five
    in 2026-03. First replies after 10, 11, ... hours."""

    ids = await seed(client, 6, month_day=dt.datetime(2026, 3, 10, 9, tzinfo=dt.UTC), close=True,
                     prefix="STATPAGE-A")
    ids += await seed(client, 3, month_day=dt.datetime(2026, 4, 8, 9, tzinfo=dt.UTC), close=True,
                      prefix="STATPAGE-B")
    ids += await seed(client, 5, month_day=dt.datetime(2026, 3, 12, 9, tzinfo=dt.UTC), close=True,
                      municipality="091", prefix="STATPAGE-C")
    return ids


async def test_statistics_page_matches_compute_statistics(make_client, store_url) -> None:
    from broker.dashboard.charts import overdue_share
    from broker.store.statistics import compute_statistics, parse_stats_query

    client = await make_client(base_settings(store_url))
    ids = await seed_statistics(client)
    svc = services_of(client)
    query = parse_stats_query({"from": STATS_MONTHS[0], "to": STATS_MONTHS[-1], "area": "08"},
                              svc.classification, own_area=None)
    expected = {r["month"]: r for r in await compute_statistics(svc.ledger, svc.classification, query)}
    r = await client.get(f"/dashboard/statistics?from={STATS_MONTHS[0]}&to={STATS_MONTHS[-1]}&area=08&lang=en",
                         headers=auth(ADMIN_TOKEN))
    page = await r.text()
    assert r.status == 200, page[:500]
    for name, value in SECURITY_HEADERS.items():
        assert r.headers[name] == value
    assert "script-src 'none'" in r.headers["Content-Security-Policy"]
    assert page.count('<svg class="chart"') == 5
    for chart in ("first-reply", "overdue-share", "outcomes", "findings", "quality"):
        assert f'<title id="chart-{chart}-title">' in page and f'<desc id="chart-{chart}-desc">' in page
    # Every number in every table is compute_statistics' own.
    first = stats_table(page, "first-reply")
    share = stats_table(page, "overdue-share")
    outcomes, findings, quality = (stats_table(page, c) for c in ("outcomes", "findings", "quality"))
    for month, row in expected.items():
        assert first[(month, "median")] == shown(row["first_reply_hours"]["median"], "hours")
        assert first[(month, "p90")] == shown(row["first_reply_hours"]["p90"], "hours")
        assert share[(month, "referrals")] == shown(row["referrals"])
        assert share[(month, "overdue")] == shown(row["overdue"])
        assert share[(month, "overdue_share")] == shown(overdue_share(row), "percent")
        for table, group in ((outcomes, "outcomes"), (findings, "findings"), (quality, "referral_quality")):
            for key, value in row[group].items():
                assert table[(month, key)] == shown(value), (month, group, key)
    assert first[("2026-03", "median")] == "12.5" and share[("2026-03", "referrals")] == "6"
    assert outcomes[("2026-03", "services_arranged")] == "6" and quality[("2026-03", "sufficient")] == "6"
    # Three cases in April: hidden, shown as an en dash with the note, and never drawn as a bar.
    assert share[("2026-04", "referrals")] == NO_VALUE and outcomes[("2026-04", "services_arranged")] == NO_VALUE
    assert first[("2026-04", "median")] == NO_VALUE
    assert "fewer than 5 cases: hidden" in page
    hidden = chart_cell(page, "outcomes", "services_arranged", "2026-04")
    assert 'class="na"' in hidden and "<rect" not in hidden
    drawn = chart_cell(page, "outcomes", "services_arranged", "2026-03")
    assert "<rect" in drawn and ">6</text>" in drawn
    # A quiet month is a real zero: "0", not a dash, and no bar.
    assert outcomes[("2026-02", "services_arranged")] == "0"
    quiet = chart_cell(page, "outcomes", "services_arranged", "2026-02")
    assert ">0</text>" in quiet and "<rect" not in quiet and 'class="na"' not in quiet
    # CSP-compatible: no script, no inline style; colours are SVG presentation attributes.
    assert "<script" not in page.lower() and " style=" not in page and "<style" not in page
    # Aggregates only: no case id, Kela reference, identity code or name.
    for rid in ids:
        found = await svc.ledger.read_case(rid)
        assert found is not None
        case, _ = found
        ref = case.referral()
        for secret in (rid, case.kela_reference, ref["client"]["personal_id"], ref["client"]["last_name"]):
            assert secret not in page


async def test_statistics_page_all_areas_combined(make_client, store_url) -> None:
    from broker.store.statistics import compute_statistics, parse_stats_query

    client = await make_client(base_settings(store_url))
    await seed_statistics(client)
    svc = services_of(client)
    page = await page_text(client, f"/dashboard/statistics?from={STATS_MONTHS[0]}&to={STATS_MONTHS[-1]}",
                           headers=auth(ADMIN_TOKEN))
    assert '<option value="" selected>' in page and "Kaikki alueet yhteensä" in page
    share = stats_table(page, "overdue-share")
    first = stats_table(page, "first-reply")
    outcomes = stats_table(page, "outcomes")
    assert share[("2026-03", "referrals")] == "11"  # 6 in 08 and 5 in 90
    assert outcomes[("2026-03", "services_arranged")] == "11"
    # percentile_cont over 10..15 h (08) and 10..14 h (90), eleven cases together.
    assert (first[("2026-03", "median")], first[("2026-03", "p90")]) == ("12.0", "14.0")
    # April: area 08's three are hidden, so the total is too (else 08 = total - other areas).
    assert share[("2026-04", "referrals")] == NO_VALUE and first[("2026-04", "median")] == NO_VALUE
    assert share[("2026-02", "referrals")] == "0"
    # Each combined count is the sum of the published per-area counts when none is hidden.
    query = parse_stats_query({"from": STATS_MONTHS[0], "to": STATS_MONTHS[-1]}, svc.classification,
                              own_area=None)
    rows = await compute_statistics(svc.ledger, svc.classification, query)
    for month in STATS_MONTHS:
        values = [r["referrals"] for r in rows if r["month"] == month]
        total = None if None in values else sum(values)
        assert share[(month, "referrals")] == shown(total)


async def test_statistics_page_defaults_and_navigation(make_client, store_url) -> None:
    from broker.domain.workdays import HELSINKI

    client = await make_client(base_settings(store_url))
    overview = await page_text(client, "/dashboard?lang=sv", headers=auth(ADMIN_TOKEN))
    link = re.search(r'<a href="(/dashboard/statistics[^"]*)" class="nav-statistics"[^>]*>([^<]*)</a>', overview)
    assert link is not None and link.group(2) == "Statistik"
    page = await page_text(client, html.unescape(link.group(1)), headers=auth(ADMIN_TOKEN))
    months = re.findall(r'<tr data-month="([\d-]+)">', re.search(r'<table id="table-first-reply">.*?</table>',
                                                                 page, re.S).group(0))
    now = utcnow().astimezone(HELSINKI)
    assert len(months) == 12 and months[-1] == now.strftime("%Y-%m")
    assert 'lang="sv"' in page and "Tid till första svar" in page
    assert 'aria-current="true">Statistik</a>' in page
    # Only `to` given: the twelve months up to it.
    page = await page_text(client, "/dashboard/statistics?to=2026-06&lang=en", headers=auth(ADMIN_TOKEN))
    assert 'name="from" value="2025-07"' in page and 'name="to" value="2026-06"' in page


async def test_statistics_page_is_for_admins_only(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    for token in (KELA_TOKEN, intake_token("08")):
        text = await page_text(client, "/dashboard/statistics?lang=en", status=403, headers=auth(token))
        assert "administrators only" in text and "<svg" not in text
    r = await client.get("/dashboard/statistics", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/dashboard/login")
    assert (await login(client)).status == 303  # the session cookie works as well
    assert "<svg" in await page_text(client, "/dashboard/statistics?from=2026-01&to=2026-02")


@pytest.mark.parametrize(("query", "param"), [
    ("from=2026-13&to=2026-12", "from"),
    ("from=2026-01&to=26-02", "to"),
    ("from=2026-05&to=2026-04", "from"),
    ("from=2023-01&to=2026-01", "to"),
    ("from=2026-01&to=2026-01&area=77", "area"),
    ("from=%3Cscript%3E&to=2026-01", "from"),
])
async def test_statistics_page_bad_parameter(make_client, tmp_path, query: str, param: str) -> None:
    client = await make_client(base_settings(f"sqlite+aiosqlite:///{tmp_path / 's.db'}"))
    page = await page_text(client, f"/dashboard/statistics?{query}&lang=en", status=422,
                           headers=auth(ADMIN_TOKEN))
    assert re.search(rf'<li data-param="{param}">Invalid parameter <code>{param}</code>: \w', page)
    assert "<svg" not in page and "<script" not in page.lower()
    assert '<form class="stats-filter"' in page  # the form stays, to correct the value


async def test_sessions_are_shared_by_replicas_and_logout_ends_them_everywhere(make_client,
                                                                                 store_url) -> None:
    """Two app instances on one ledger stand for two replicas behind a balancer with no sticky
    sessions: the signing key comes from the ledger, and so does the list of logged-out sessions."""
    one = await make_client(base_settings(store_url))
    two = await make_client(base_settings(store_url))
    assert (await login(one)).status == 303
    cookie = next(c.value for c in one.session.cookie_jar if c.key == "handoff_dashboard")
    headers = {"Cookie": f"handoff_dashboard={cookie}"}
    page = await page_text(two, "/dashboard", headers=headers)  # opened on one, valid on two
    assert 'id="areas"' in page

    r = await two.post("/dashboard/logout", data={"csrf": csrf_of(page)}, headers=headers,
                       allow_redirects=False)
    assert r.status == 303
    for client in (one, two):
        r = await client.get("/dashboard", headers=headers, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/dashboard/login")
