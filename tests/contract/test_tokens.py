"""Ledger-held party tokens (issue 8): create, expiry, rotation, revocation, listing, CLI.

Two `create_app` instances on one ledger stand for two service processes: a revoke through one is
a 401 in the other at once, because no process keeps ledger tokens in memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from broker.cli import app as cli
from broker.security.audit import system_actor
from broker.security.auth import hash_token
from broker.security.tokens import TokenStore
from broker.store.ledger import Ledger
from tests.helpers.app import ADMIN_TOKEN, auth, base_settings, services_of

ACTOR = system_actor("test")
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


async def status_with(client: Any, token: str, path: str = "/v1/updates?limit=1") -> int:
    r = await client.get(path, headers=auth(token))
    await r.read()
    return int(r.status)


def store_of(client: Any) -> TokenStore:
    return TokenStore(services_of(client).ledger)


async def test_created_token_works_and_revoke_is_401_at_once_in_another_process(
        make_client, store_url) -> None:
    settings = base_settings(store_url)
    one, two = await make_client(settings), await make_client(settings)
    issued = await store_of(one).create("kela-new", "kela", None, actor=ACTOR,
                                        now=dt.datetime.now(dt.UTC))
    assert issued.token.startswith("hnd_")
    assert await status_with(one, issued.token) == 200
    assert await status_with(two, issued.token) == 200

    assert await store_of(one).revoke(actor=ACTOR, now=dt.datetime.now(dt.UTC),
                                      token_id=issued.info.id) == 1
    r = await two.get("/v1/updates", headers=auth(issued.token))
    assert r.status == 401
    unknown = await two.get("/v1/updates", headers=auth("hnd_never-issued"))
    # Revoked and unknown look the same to the caller.
    assert await r.json() == await unknown.json()
    assert await status_with(one, issued.token) == 401
    # The config's static tokens are untouched by the ledger.
    assert await status_with(two, ADMIN_TOKEN, "/v1/admin/dead-letters") == 200


async def test_ledger_token_carries_role_and_area(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    issued = await store_of(client).create("intake-x08", "intake", "08", actor=ACTOR,
                                           now=dt.datetime.now(dt.UTC))
    assert await status_with(client, issued.token, "/v1/inbox") == 200
    assert await status_with(client, issued.token, "/v1/updates") == 403


async def test_expired_token_is_401(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    book = services_of(client).tokens
    book.clock = lambda: T0
    issued = await store_of(client).create("kela-exp", "kela", None, actor=ACTOR, now=T0,
                                           expires_in=dt.timedelta(days=1))
    assert await status_with(client, issued.token) == 200
    book.clock = lambda: T0 + dt.timedelta(days=1, seconds=-1)
    assert await status_with(client, issued.token) == 200
    book.clock = lambda: T0 + dt.timedelta(days=1)
    assert await status_with(client, issued.token) == 401


async def test_rotate_with_grace_keeps_the_old_token_until_the_grace_ends(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    book, store = services_of(client).tokens, store_of(client)
    book.clock = lambda: T0
    old = await store.create("intake-r", "intake", "08", actor=ACTOR, now=T0)
    new = await store.rotate("intake-r", actor=ACTOR, now=T0 + dt.timedelta(minutes=1),
                             grace=dt.timedelta(minutes=30))
    assert (new.info.role, new.info.area) == ("intake", "08")
    assert new.token != old.token
    book.clock = lambda: T0 + dt.timedelta(minutes=30)
    assert await status_with(client, old.token, "/v1/inbox") == 200
    assert await status_with(client, new.token, "/v1/inbox") == 200
    book.clock = lambda: T0 + dt.timedelta(minutes=31)
    assert await status_with(client, old.token, "/v1/inbox") == 401
    assert await status_with(client, new.token, "/v1/inbox") == 200

    # Without grace the old token ends at once; a later revoke of the party ends every token.
    newer = await store.rotate("intake-r", actor=ACTOR, now=T0 + dt.timedelta(minutes=32))
    book.clock = lambda: T0 + dt.timedelta(minutes=32)
    assert await status_with(client, new.token, "/v1/inbox") == 401
    assert await status_with(client, newer.token, "/v1/inbox") == 200
    assert await store.revoke(actor=ACTOR, now=T0 + dt.timedelta(minutes=33), party_id="intake-r") == 1
    book.clock = lambda: T0 + dt.timedelta(minutes=33)
    assert await status_with(client, newer.token, "/v1/inbox") == 401


async def test_list_shows_status_and_no_secrets(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    store = store_of(client)
    a = await store.create("kela-a", "kela", None, actor=ACTOR, now=T0)
    b = await store.create("kela-b", "kela", None, actor=ACTOR, now=T0, expires_in=dt.timedelta(hours=1))
    c = await store.create("kela-c", "kela", None, actor=ACTOR, now=T0)
    await store.revoke(actor=ACTOR, now=T0, token_id=c.info.id)
    now = T0 + dt.timedelta(hours=2)
    rows = [t.as_json(now) for t in await store.list()]
    assert {r["party"]: r["status"] for r in rows} == {"kela-a": "active", "kela-b": "expired",
                                                       "kela-c": "revoked"}
    assert set(rows[0]) == {"id", "party", "role", "area", "central_reader", "created", "expires",
                            "revoked", "status"}
    assert [r["central_reader"] for r in rows] == [False, False, False]
    text = json.dumps(rows)
    for issued in (a, b, c):
        assert issued.token not in text and hash_token(issued.token) not in text


def test_cli_create_list_revoke(tmp_path: Path, store_url: str) -> None:
    config = tmp_path / "handoff.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n', "utf-8")
    runner = CliRunner()

    created = runner.invoke(cli, ["token", "create", "-c", str(config), "--party", "intake-c08",
                                  "--role", "intake", "--area", "08", "--expires-in-days", "30"])
    assert created.exit_code == 0, created.output
    token = created.output.split("give it to the party): ", 1)[1].split()[0]
    assert token.startswith("hnd_")
    assert "token_sha256" not in created.output  # stored, not a config entry

    listed = runner.invoke(cli, ["token", "list", "-c", str(config), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [(r["party"], r["role"], r["area"], r["status"]) for r in rows] == [
        ("intake-c08", "intake", "08", "active")]
    assert token not in listed.output and hash_token(token) not in listed.output
    expires = dt.datetime.fromisoformat(rows[0]["expires"]) - dt.datetime.fromisoformat(rows[0]["created"])
    assert expires == dt.timedelta(days=30)

    rotated = runner.invoke(cli, ["token", "rotate", "-c", str(config), "--party", "intake-c08"])
    assert rotated.exit_code == 0, rotated.output
    new_token = rotated.output.split("give it to the party): ", 1)[1].split()[0]

    async def principal_of(tok: str) -> str | None:
        ledger = Ledger.from_url(store_url)
        try:
            info = await TokenStore(ledger).lookup(hash_token(tok))
            return info.status(dt.datetime.now(dt.UTC)) if info else None
        finally:
            await ledger.dispose()

    assert asyncio.run(principal_of(token)) == "revoked"
    assert asyncio.run(principal_of(new_token)) == "active"

    revoked = runner.invoke(cli, ["token", "revoke", "-c", str(config), "--party", "intake-c08"])
    assert revoked.exit_code == 0 and "revoked 1 token(s)" in revoked.output, revoked.output
    assert asyncio.run(principal_of(new_token)) == "revoked"

    missing = runner.invoke(cli, ["token", "revoke", "-c", str(config), "--id", "no-such-id"])
    assert missing.exit_code == 1

    central = runner.invoke(cli, ["token", "create", "-c", str(config), "--party", "kela-hq",
                                  "--central-reader", "--expires-in-days", "1"])
    assert central.exit_code == 0, central.output
    listed = runner.invoke(cli, ["token", "list", "-c", str(config), "--party", "kela-hq", "--json"])
    assert [json.loads(line)["central_reader"] for line in listed.output.splitlines()] == [True]
    refused = runner.invoke(cli, ["token", "create", "-c", str(config), "--party", "x",
                                  "--role", "admin", "--central-reader"])
    assert refused.exit_code == 2 and "only a kela party" in refused.output, refused.output

    # Without the ledger: the config entry, as before.
    printed = runner.invoke(cli, ["token", "create", "--no-store", "--party", "kela-p", "--role", "kela"])
    assert printed.exit_code == 0, printed.output
    plain = printed.output.split("give it to the party): ", 1)[1].split()[0]
    assert f'token_sha256 = "{hash_token(plain)}"' in printed.output
    assert "central_reader" not in printed.output
    printed = runner.invoke(cli, ["token", "create", "--no-store", "--party", "kela-hq", "--role",
                                  "kela", "--central-reader"])
    assert printed.exit_code == 0 and "\ncentral_reader = true\n" in printed.output, printed.output


def test_an_explicitly_empty_party_list_means_ledger_tokens_only(tmp_path: Path) -> None:
    from broker.config.settings import load_settings

    config = tmp_path / "handoff.toml"
    config.write_text('parties = []\n\n[store]\nurl = "sqlite+aiosqlite:///x.db"\n', "utf-8")
    settings = load_settings(config, env={})
    assert settings.parties == () and not settings.demo_parties
    assert load_settings(None, env={}).demo_parties  # no parties at all: the laptop demo


async def test_dashboard_session_lives_and_dies_with_its_ledger_token(make_client, store_url) -> None:
    """A ledger admin token opens the dashboard; revoking it ends the session at the next page."""
    from tests.helpers.dashboard import login, page_text

    client = await make_client(base_settings(store_url))
    issued = await store_of(client).create("admin-ledger", "admin", None, actor=ACTOR,
                                           now=dt.datetime.now(dt.UTC))
    r = await login(client, issued.token)
    assert r.status == 303 and r.headers["Location"] == "/dashboard?lang=fi"
    assert 'id="areas"' in await page_text(client, "/dashboard")
    cookie = next(c.value for c in client.session.cookie_jar if c.key == "handoff_dashboard")
    assert issued.token not in cookie

    await store_of(client).revoke(actor=ACTOR, now=dt.datetime.now(dt.UTC), token_id=issued.info.id)
    r = await client.get("/dashboard", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/dashboard/login")
