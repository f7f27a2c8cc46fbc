"""The dashboard in a real browser (Debian's Chromium driven by Playwright), against the real app.

Logs in through the form, reads the area table, finds a case, sees the overdue one highlighted,
replays a dead letter with its button, opens the statistics page (SVG charts and their tables), and
saves screenshots under artifacts/. Skips on a machine
without Chromium or Playwright; fails in CI (CI=true), where both must be installed. Playwright's own
browser download is never used: the browser is /usr/bin/chromium (`apt-get install -y chromium`).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.store.ledger import utcnow
from tests.helpers.app import ADMIN_TOKEN, IN_CI, base_settings
from tests.helpers.dashboard import post_case, set_case
from tests.helpers.receiver import Receiver, webhook_routes
from tests.helpers.seeding import seed
from tests.helpers.support import reply, wait_state

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def _require_browser() -> None:
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if IN_CI:
            pytest.fail(f"{reason}; required in CI (CI=true)")
        pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_dashboard_in_chromium(make_client, tmp_path: Path, browser: Any) -> None:
    from playwright.async_api import expect

    healthy = False
    receiver = await Receiver(behaviour=lambda _n: 204 if healthy else 503).start()
    try:
        settings = base_settings(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
                                 routes=webhook_routes(receiver.url),
                                 delivery={"give_up_after_s": 1.0})
        client = await make_client(settings)
        # Traffic: area 08 (webhook answering 503) dead-letters its referral; area 90 (pull) has an
        # unanswered case, an acknowledged one and an overdue one.
        dead_rid = await post_case(client, "BROWSER-D1", "08")
        open_rid = await post_case(client, "BROWSER-B1", "90")
        acked_rid = await post_case(client, "BROWSER-B2", "90")
        late_rid = await post_case(client, "BROWSER-B3", "90")
        for rid in (open_rid, acked_rid, late_rid):
            await wait_state(client, rid, "delivered")
        code, _ = await reply(client, acked_rid, "received", area="90")
        assert code == 202
        now = utcnow()
        await set_case(client, late_rid, ack_due_at=now - dt.timedelta(days=1))
        # Realistic times for the picture: replied after 3.5 h, waiting since a week ago.
        await set_case(client, acked_rid, received_at=now - dt.timedelta(hours=6),
                       first_reply_at=now - dt.timedelta(hours=2.5))
        await set_case(client, open_rid, delivered_at=now - dt.timedelta(days=7))
        await wait_state(client, dead_rid, "failed")
        # Statistics for area 90 (pull): six answered and closed cases in March 2026, three in April
        # (hidden), received and answered in the past, so none is waiting or overdue now.
        for n, day, prefix in ((6, dt.datetime(2026, 3, 10, 9, tzinfo=dt.UTC), "BS-A"),
                               (3, dt.datetime(2026, 4, 8, 9, tzinfo=dt.UTC), "BS-B")):
            await seed(client, n, month_day=day, municipality="091", close=True, prefix=prefix)

        base = str(client.make_url("/")).rstrip("/")
        page = await browser.new_page(viewport={"width": 1360, "height": 900})

        # Not logged in: the dashboard sends the browser to the login form.
        await page.goto(f"{base}/dashboard")
        await expect(page).to_have_url(re.compile(r"/dashboard/login\?lang=fi$"))
        await page.fill("input[name=token]", ADMIN_TOKEN)
        await page.click("form[action^='/dashboard/login'] button[type=submit]")
        await expect(page).to_have_url(re.compile(r"/dashboard\?lang=fi$"))

        # The area table, with the overdue area highlighted and marked in text.
        await expect(page.locator("table#areas")).to_be_visible()
        row_90 = page.locator('tr[data-area="90"]')
        await expect(row_90).to_have_class(re.compile(r"\boverdue\b"))
        await expect(row_90.locator('[data-col="open"]')).to_have_text("3")
        await expect(row_90.locator('[data-col="unanswered"]')).to_have_text("2")
        await expect(row_90.locator('[data-col="overdue"]')).to_contain_text("1")
        await expect(row_90.locator(".marker")).to_contain_text("myöhässä")
        await expect(page.locator(f'#overdue tr.overdue[data-referral="{late_rid}"]')).to_be_visible()
        await expect(page.locator("tr[data-dead-letter]")).to_have_count(1)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # Find the overdue case by its referral id: its overdue deadline is highlighted.
        await page.fill("input[name=q]", late_rid)
        await page.click("form.lookup button[type=submit]")
        await expect(page.locator('dd[data-field="state"]')).to_contain_text("delivered")
        await expect(page.locator("section#case")).to_have_class(re.compile(r"\boverdue\b"))
        await expect(page.locator('tr.overdue[data-deadline="acknowledge"]')).to_be_visible()
        await expect(page.locator("#timeline tr[data-event]").first).to_contain_text("received")
        await page.screenshot(path=str(ARTIFACTS / "dashboard-case.png"), full_page=True)

        # Replay the dead letter with its button: it leaves the list, and the case is delivered.
        await page.click("header nav a[href^='/dashboard?']")  # back to the overview
        healthy = True
        await page.click('tr[data-dead-letter] button[type=submit]')
        await expect(page).to_have_url(re.compile(r"done=replayed"))
        await expect(page.locator(".flash")).to_be_visible()
        await expect(page.locator("tr[data-dead-letter]")).to_have_count(0)
        await wait_state(client, dead_rid, "delivered")
        assert receiver.referral_ids()[dead_rid] == 1
        await page.screenshot(path=str(ARTIFACTS / "dashboard-after-replay.png"), full_page=True)

        # The statistics page, from the navigation: per-month SVG charts, each with its data table.
        await page.click("header nav a.nav-statistics")
        await expect(page).to_have_url(re.compile(r"/dashboard/statistics\?lang=fi$"))
        await page.select_option("select[name=area]", "90")
        await page.fill("input[name=from]", "2026-02")
        await page.fill("input[name=to]", "2026-04")
        await page.click("form.stats-filter button[type=submit]")
        await expect(page).to_have_url(re.compile(r"area=90"))
        chart = page.locator("svg#chart-outcomes")
        await expect(chart).to_be_visible()
        await expect(chart.locator("title").first).to_have_text("Lopputulokset")
        await expect(page.locator("table#table-outcomes")).to_be_visible()
        cell = page.locator('#table-outcomes tr[data-month="2026-03"] td[data-series="services_arranged"]')
        await expect(cell).to_have_text("6")
        hidden = page.locator('#table-outcomes tr[data-month="2026-04"] td[data-series="services_arranged"]')
        await expect(hidden).to_have_text("\u2013")
        await expect(page.locator("svg.chart")).to_have_count(5)
        await page.screenshot(path=str(ARTIFACTS / "dashboard-statistics.png"), full_page=True)

        # Logging out ends the session.
        await page.click("header form.inline button[type=submit]")
        await expect(page).to_have_url(re.compile(r"/dashboard/login"))
        await page.goto(f"{base}/dashboard")
        await expect(page).to_have_url(re.compile(r"/dashboard/login"))
    finally:
        await receiver.stop()
