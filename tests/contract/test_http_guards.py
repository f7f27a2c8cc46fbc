"""Guards in front of the handlers (issue 8): rate limits, the body deadline, safe headers.

The rate-limit clock is the test's: buckets refill when the test moves time, never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest

from broker.config.settings import load_settings
from tests.helpers.app import ADMIN_TOKEN, KELA2_TOKEN, KELA_TOKEN, auth, base_settings, services_of
from tests.helpers.support import hetu_with, new_case, post_referral, referral_body

LIMITED = {"server": {"rate_limit_per_s": 0.5, "rate_limit_burst": 3}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def limited_client(make_client: Any, store_url: str) -> tuple[Any, Clock]:
    client = await make_client(base_settings(store_url, **LIMITED))
    clock = Clock()
    services_of(client).limiter.clock = clock
    return client, clock


async def get_status(client: Any, path: str, headers: dict[str, str] | None = None) -> int:
    r = await client.get(path, headers=headers or {})
    await r.read()
    return int(r.status)


async def test_burst_then_429_with_retry_after_then_recovery(make_client, store_url) -> None:
    client, clock = await limited_client(make_client, store_url)
    for _ in range(3):
        assert await get_status(client, "/v1/updates", auth(KELA_TOKEN)) == 200
    r = await client.get("/v1/updates", headers=auth(KELA_TOKEN))
    assert r.status == 429
    assert r.headers["Retry-After"] == "2"  # one token at 0.5/s, in whole seconds
    body = await r.json()
    assert body["error"]["code"] == "too_many_requests" and body["error"]["message"]

    # Per party: another Kela token and the probes are not limited by this one.
    assert await get_status(client, "/v1/updates", auth(KELA2_TOKEN)) == 200
    for path in ("/healthz", "/readyz", "/metrics") * 3:
        assert await get_status(client, path) == 200

    clock.now += 1.9
    assert await get_status(client, "/v1/updates", auth(KELA_TOKEN)) == 429
    clock.now += 0.1
    assert await get_status(client, "/v1/updates", auth(KELA_TOKEN)) == 200
    assert await get_status(client, "/v1/updates", auth(KELA_TOKEN)) == 429
    clock.now += 60  # refills up to the burst, no further
    for _ in range(3):
        assert await get_status(client, "/v1/updates", auth(KELA_TOKEN)) == 200
    assert await get_status(client, "/v1/updates", auth(KELA_TOKEN)) == 429


async def test_guessing_tokens_is_limited_per_address(make_client, store_url) -> None:
    client, clock = await limited_client(make_client, store_url)
    for i in range(3):
        assert await get_status(client, "/v1/updates", auth(f"hnd_guess-{i}")) == 401
    r = await client.get("/v1/updates", headers=auth("hnd_guess-4"))
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    clock.now += 2
    assert await get_status(client, "/v1/updates", auth("hnd_guess-5")) == 401


async def test_bad_tokens_from_one_address_do_not_lock_out_valid_parties(make_client, store_url) -> None:
    """Issue 15: 300 wrong tokens from one address made the valid Kela and admin tokens get 429."""
    client, _clock = await limited_client(make_client, store_url)
    statuses: list[int] = []
    for i in range(300):
        r = await client.get("/v1/updates", headers=auth(f"hnd_guess-{i}"))
        await r.read()
        statuses.append(r.status)
        if r.status == 429:
            assert int(r.headers["Retry-After"]) >= 1
    # The failed-authentication bucket of the address throttles the guesses...
    assert (statuses.count(401), statuses.count(429)) == (3, 297)
    for _ in range(10):  # ... and anonymous requests have a bucket of their own, also empty now
        await get_status(client, "/v1/schema/referral.json")
    assert await get_status(client, "/v1/schema/referral.json") == 429
    # ... but valid tokens from the same address are charged to their party only.
    assert await get_status(client, "/v1/updates", auth(KELA_TOKEN)) == 200
    assert await get_status(client, "/v1/admin/dead-letters", auth(ADMIN_TOKEN)) == 200
    status, _ = await post_referral(client, referral_body("K-LOCKOUT-1"))
    assert status == 202
    # A wrong token is still throttled: the valid ones refilled nothing.
    assert await get_status(client, "/v1/updates", auth("hnd_guess-again")) == 429


async def test_a_dashboard_session_is_charged_to_its_party_not_its_address(make_client,
                                                                             store_url) -> None:
    from tests.helpers.dashboard import login, page_text

    client, _clock = await limited_client(make_client, store_url)
    assert (await login(client)).status == 303
    for i in range(10):  # the address's anonymous and failed-authentication buckets run dry
        await get_status(client, "/v1/schema/referral.json")
        await get_status(client, "/v1/updates", auth(f"hnd_guess-{i}"))
    assert await get_status(client, "/v1/schema/referral.json") == 429
    assert 'id="areas"' in await page_text(client, "/dashboard")


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(make_client, store_url) -> None:
    # The test client's peer is 127.0.0.1, not in the list: a spoofed header changes nothing.
    client = await make_client(base_settings(
        store_url, server={**LIMITED["server"], "trusted_proxies": ["10.0.0.0/8"]}))
    services_of(client).limiter.clock = Clock()
    for i in range(3):
        spoofed = {**auth(f"hnd_guess-{i}"), "X-Forwarded-For": f"203.0.113.{i}"}
        assert await get_status(client, "/v1/updates", spoofed) == 401
    spoofed = {**auth("hnd_guess-x"), "X-Forwarded-For": "198.51.100.99"}
    assert await get_status(client, "/v1/updates", spoofed) == 429


async def test_forwarded_for_names_the_client_behind_a_trusted_proxy(make_client, store_url) -> None:
    client = await make_client(base_settings(
        store_url, server={**LIMITED["server"], "trusted_proxies": ["127.0.0.0/8", "10.0.0.0/8"]}))
    services_of(client).limiter.clock = Clock()

    def via(chain: str, token: str = "hnd_guess") -> dict[str, str]:
        return {**auth(token), "X-Forwarded-For": chain}

    for _ in range(3):
        assert await get_status(client, "/v1/updates", via("203.0.113.7")) == 401
    assert await get_status(client, "/v1/updates", via("203.0.113.7")) == 429
    # Another client behind the same proxy has its own bucket.
    assert await get_status(client, "/v1/updates", via("203.0.113.8")) == 401
    # The right-most untrusted hop counts: a client cannot escape by writing an address to the left,
    # and hops that are trusted proxies themselves (10.1.2.3) are skipped.
    assert await get_status(client, "/v1/updates", via("192.0.2.1, 203.0.113.7")) == 429
    assert await get_status(client, "/v1/updates", via("192.0.2.1, 203.0.113.7, 10.1.2.3")) == 429
    assert await get_status(client, "/v1/updates", via("203.0.113.7, 192.0.2.1")) == 401
    # The valid token behind the same proxy is not touched by any of it.
    assert await get_status(client, "/v1/updates", via("203.0.113.7", KELA_TOKEN)) == 200


def test_trusted_proxies_come_from_the_config_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "handoff.toml"
    config.write_text('[server]\ntrusted_proxies = ["10.0.0.0/8", "fd00::/8"]\n', "utf-8")
    assert load_settings(config, env={}).server.trusted_proxies == ("10.0.0.0/8", "fd00::/8")
    env = {"HANDOFF_SERVER_TRUSTED_PROXIES": '["192.168.1.0/24"]'}
    assert load_settings(config, env=env).server.trusted_proxies == ("192.168.1.0/24",)
    env = {"HANDOFF_SERVER_TRUSTED_PROXIES": "10.1.0.0/16, 172.16.0.1"}
    assert load_settings(None, env=env).server.trusted_proxies == ("10.1.0.0/16", "172.16.0.1/32")
    with pytest.raises(ValueError, match="trusted_proxies"):
        load_settings(None, env={"HANDOFF_SERVER_TRUSTED_PROXIES": "not-a-network"})


async def test_requests_without_token_are_limited_per_address(make_client, store_url) -> None:
    client, _clock = await limited_client(make_client, store_url)
    for _ in range(3):
        assert await get_status(client, "/v1/schema/referral.json") == 200
    assert await get_status(client, "/v1/schema/referral.json") == 429


async def test_zero_turns_the_limit_off(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url, server={"rate_limit_per_s": 0,
                                                                "rate_limit_burst": 1}))
    for _ in range(20):
        assert await get_status(client, "/v1/updates", auth(KELA_TOKEN)) == 200


# --- slow clients ----------------------------------------------------------------------------------


async def _raw_request(client: Any, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(head)
    await writer.drain()
    return reader, writer


HEAD = (b"POST /v1/referrals HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + KELA_TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"kela")


async def test_a_stalled_body_gets_408_and_connection_close(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url, server={"read_timeout_s": 0.3}))
    started = time.monotonic()
    reader, writer = await _raw_request(client, HEAD)
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408"), head
    # aiohttp then reads what is left of the body for at most its lingering time (10 s) and
    # closes; the client is told so.
    assert b"\r\nConnection: close\r\n" in head, head
    assert time.monotonic() - started < 4
    # The service is fine for everyone else.
    assert await get_status(client, "/v1/updates", auth(KELA_TOKEN)) == 200


async def test_a_trickled_body_gets_408(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url, server={"read_timeout_s": 0.3}))
    reader, writer = await _raw_request(client, HEAD)

    async def trickle() -> None:
        # The client's behaviour under test: one byte every 50 ms, never finishing in time.
        with contextlib.suppress(ConnectionError):
            for _ in range(150):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.05)

    trickler = asyncio.ensure_future(trickle())
    try:
        status_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=5)
    finally:
        trickler.cancel()
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 408"), status_line


async def test_a_body_that_arrives_in_time_is_not_cut_by_the_deadline(make_client, store_url) -> None:
    # The deadline covers the body only: a request whose handler takes longer still completes.
    client = await make_client(base_settings(store_url, server={"read_timeout_s": 0.3}))
    await new_case(client, "K-GUARD-1")


# --- safe headers ------------------------------------------------------------------------------------


SAFE = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store"}


async def test_safe_headers_on_api_errors_and_dashboard(make_client, store_url) -> None:
    client = await make_client(base_settings(store_url))
    rid = await new_case(client, "K-HEAD-1")
    responses = [
        await client.get(f"/v1/referrals/{rid}", headers=auth(ADMIN_TOKEN)),  # case data
        await client.get("/v1/updates", headers=auth(KELA_TOKEN)),
        await client.get("/v1/updates"),  # 401
        await client.get("/no/such/path"),  # 404 from the router
        await client.post("/v1/referrals", data=b"{}", headers={**auth(KELA_TOKEN),
                                                                 "Content-Type": "text/plain"}),
        await client.get("/dashboard", headers=auth(ADMIN_TOKEN)),
        await client.get("/dashboard/login"),
    ]
    for r in responses:
        for name, value in SAFE.items():
            assert r.headers.getall(name, []) == [value], (r.url, r.status, name, r.headers.getall(name, []))
    for r in responses[-2:]:
        assert r.content_type == "text/html"
        assert len(r.headers.getall("Content-Security-Policy")) == 1
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'none'" in csp
        assert r.headers.getall("X-Frame-Options") == ["DENY"]
    assert responses[0].status == 200 and responses[2].status == 401 and responses[3].status == 404


# --- requests aiohttp's parser refuses -----------------------------------------------------------


async def _raw_exchange(client: Any, raw: bytes) -> bytes:
    reader, writer = await _raw_request(client, raw)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_unreadable_requests_get_a_generic_400_that_echoes_nothing(make_client, store_url) -> None:
    """A request line or header over 8,190 bytes, a control character in the path, a bad header
    name: aiohttp's own answer quotes the line; the service's quotes nothing of it."""
    client = await make_client(base_settings(store_url))
    code = hetu_with(dt.date(1970, 1, 1), "-", 999)
    lower = code[:-1] + code[-1].lower()
    requests = {
        "long_request_line": b"GET /v1/referrals/" + code.encode() + b"a" * 9_000 + b" HTTP/1.1\r\n"
                             b"Host: 127.0.0.1\r\n\r\n",
        "long_query": b"GET /v1/updates?q=" + lower.encode() + b"b" * 9_000 + b" HTTP/1.1\r\n"
                      b"Host: 127.0.0.1\r\n\r\n",
        "long_header": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Note: " + code.encode()
                       + b"c" * 9_000 + b"\r\n\r\n",
        "nul_in_path": b"GET /v1/referrals/\x00" + code.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "bad_method": b"G\x01T /v1/referrals/" + code.encode() + b" HTTP/1.1\r\n\r\n",
        "bad_header_name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX " + code.encode() + b": 1\r\n\r\n",
    }
    for name, raw in requests.items():
        answer = await _raw_exchange(client, raw)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] in (b"400", b"414", b"431"), (name, head)
        assert code.casefold().encode() not in answer.lower(), (name, answer[:300])
        assert b"aaaa" not in answer and b"bbbb" not in answer and b"cccc" not in answer, name
        error = json.loads(body)["error"]
        assert error["code"] and error["message"], (name, error)
    # The service still answers on new connections.
    assert await get_status(client, "/healthz") == 200
