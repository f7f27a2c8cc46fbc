"""Driving the operators' dashboard from tests: the login form, pages, and cases to show on them."""

from __future__ import annotations

import html
import re
from typing import Any

import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from broker.store.tables import cases
from tests.helpers.app import ADMIN_TOKEN, services_of
from tests.helpers.support import MUNICIPALITY_OF_AREA, post_referral, referral_body

__all__ = ["csrf_of", "login", "page_text", "post_case", "set_case"]

Client = TestClient[Any, Any]


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, "no CSRF field on the page"
    return html.unescape(m.group(1))


async def login(client: Client, token: str = ADMIN_TOKEN, **headers: str) -> Any:
    """The login form flow; returns the POST's response (303 with the session cookie on success)."""
    page = await (await client.get("/dashboard/login")).text()
    return await client.post("/dashboard/login", data={"csrf": csrf_of(page), "token": token},
                             headers=headers, allow_redirects=False)


async def page_text(client: Client, path: str, status: int = 200, **kwargs: Any) -> str:
    r = await client.get(path, allow_redirects=False, **kwargs)
    text = await r.text()
    assert r.status == status, (path, r.status, text[:500])
    return text


async def post_case(client: Client, ref: str, area: str, *, kind: str = "support_need",
                    personal: dict[str, str] | None = None) -> str:
    body = referral_body(ref, municipality_code=MUNICIPALITY_OF_AREA[area], kind=kind)
    if personal:
        body["client"].update({k: v for k, v in personal.items() if k != "description"})
        body["description"] = personal.get("description", body["description"])
    status, out = await post_referral(client, body)
    assert status == 202, out
    return str(out["referral_id"])


async def set_case(client: Client, rid: str, **values: Any) -> None:
    """Move a case's stored times directly in the ledger (deadlines and latencies in the past)."""
    async with services_of(client).ledger.engine.begin() as conn:
        await conn.execute(sa.update(cases).where(cases.c.referral_id == rid).values(**values))
