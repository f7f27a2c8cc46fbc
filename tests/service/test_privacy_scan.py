"""Issue 8, part 3: after real traffic, no identity code and no client name anywhere the service writes.

Issue 15 adds faults to the traffic: an oversize request line and header holding identity codes
(aiohttp's parser logs the raw bytes), and a `pg_terminate_backend` storm (SQLAlchemy's errors name
statements, never their parameters).

`handoff run` runs as a subprocess on the production pair (PostgreSQL + RabbitMQ) with JSON logs at
debug level. Bounded traffic (tests/helpers/privacy_traffic.py) goes through every path; then every log line,
every metric line, every URL of the access log and every audit row is scanned for every identity code
and name that was sent, and for anything shaped like an identity code.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from broker.devtools.harness import free_port, party
from tests.helpers.app import ADMIN_TOKEN, auth, base_settings, intake_token
from tests.helpers.identity_scan import IdentityScanner
from tests.helpers.privacy_traffic import KINDS, REPLY_STATUSES, Traffic
from tests.helpers.processes import ServiceProcess, backend_storm, webhook_route, write_config
from tests.helpers.receiver import Receiver

REFERRALS = 60
HIDDEN = "[SQL parameters hidden due to hide_parameters=True]"


def test_scanner_flags_planted_codes_and_names() -> None:
    """A scanner that finds nothing must be because there is nothing: it does find plants."""
    scan = IdentityScanner(codes=["120503A944X"], words=["Jäkälämaa", "Aurelija"])
    assert scan.scan("t", '{"event": "x", "detail": "client 120503a944x"}'), "known code, lower case"
    assert scan.scan("t", "path=/v1/referralsx010190-9990trailing"), "code shape without boundaries"
    assert scan.scan("t", '{"event": "x", "name": "J\\u00e4k\\u00e4l\\u00e4maa"}'), "JSON-escaped name"
    assert scan.scan("t", "handoff_x{area=\"AURELIJA\"} 1"), "name in any case"
    assert scan.scan("t", "who=_Aurelija_"), "underscore does not hide a name"
    clean = ('{"event": "request_handled", "url": "/v1/referrals/12345678-9012-4abc-8def-0123456789ab",'
             ' "request_id": "0123456789abcdef0123456789abcdef", "at": "2026-11-30T15:42:48.123456+00:00"}')
    assert scan.scan("t", clean) == [], "UUIDs, hex ids and timestamps are not codes"
    assert scan.scan("t", "Aurelijankatu 1") == [], "a name inside a longer word is not that name"


def _config(tmp: Path, *, port: int, store_url: str, transport_url: str, hook_url: str,
            files_dir: Path) -> Path:
    """Every kind of route (webhook 08, pull 90, files 19, Kela's push) and an intake party each."""
    intakes = [party(f"intake-{a}", "intake", intake_token(a), area=a) for a in ("08", "90", "19")]
    routes = [webhook_route("08", hook_url), {"area": "90", "delivery": "pull"},
              {"area": "19", "delivery": "files", "directory": str(files_dir)},
              webhook_route("kela", hook_url)]
    return write_config(tmp / "handoff.toml", port=port, store_url=store_url,
                        transport_url=transport_url, hook_url=hook_url, give_up_after_s=60,
                        log_level="debug", file_scan_interval_s=0.2, relay_poll_s=0.05,
                        routes=routes, parties=intakes)


async def _audit_rows(store_url: str) -> list[str]:
    conn = await asyncpg.connect(store_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch("SELECT * FROM audit ORDER BY seq")
    finally:
        await conn.close()
    return [json.dumps(dict(r), default=str, ensure_ascii=False) for r in rows]


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("transport_url", ["rabbitmq"], indirect=True)
async def test_no_identity_data_anywhere_after_real_traffic(store_url: str, transport_url: str,
                                                            tmp_path: Path) -> None:
    receiver = await Receiver().start()
    files_dir = tmp_path / "files-19"
    log_path = tmp_path / "service.log"
    port = free_port()
    config = _config(tmp_path, port=port, store_url=store_url, transport_url=transport_url,
                     hook_url=receiver.url, files_dir=files_dir)
    service = ServiceProcess(config, port, log_path)
    jar = aiohttp.CookieJar(unsafe=True)  # the dashboard session on 127.0.0.1
    kills: list[int] = []
    try:
        await service.start()
        async with aiohttp.ClientSession(cookie_jar=jar,
                                         timeout=aiohttp.ClientTimeout(total=15)) as http:
            traffic = Traffic(service.base, http, files_dir, receiver, referrals=REFERRALS)
            await asyncio.wait_for(traffic.run(), timeout=90)
            await traffic.oversize()
            # A pg_terminate_backend storm under traffic, until SQLAlchemy errors reach the log.
            async with backend_storm(store_url, kills), asyncio.timeout(60):
                rounds = 0
                while rounds < 3 or HIDDEN not in log_path.read_text("utf-8"):
                    await traffic.under_storm(rounds)
                    rounds += 1
            status, metrics_text = await traffic.call("GET", "/metrics")
            assert status == 200
            await traffic.wait_for("Kela's webhook to get updates", _kela_pushed(receiver))
    finally:
        exit_code = service.terminate()
        await receiver.stop()
    sent = traffic.sent
    log_lines = log_path.read_text("utf-8").splitlines()
    events = [json.loads(line) for line in log_lines if line.startswith("{")]
    access = [e for e in events if e.get("event") == "request_handled"]
    audit_rows = await _audit_rows(store_url)

    # The traffic really happened.
    assert exit_code == 0, log_lines[-20:]
    assert sent.channels["json"] == REFERRALS and sent.channels["xml"] == 5
    assert set(sent.kinds) == set(KINDS)
    assert set(sent.replies) == REPLY_STATUSES, sent.replies
    assert {"received", "returned", "closed"} <= set(sent.file_replies), sent.file_replies
    assert sent.answers == len(sent.info_cases) > 0
    assert {200, 202, 207, 303, 400, 404, 409, 422} <= set(sent.http), sent.http
    assert len(sent.error_bodies) > 20 and len(sent.error_pages) >= 2
    assert len(sent.codes) > REFERRALS and len(sent.words) > 20
    assert len(access) >= sent.requests > 400, (len(access), sent.requests)
    assert {e["route"] for e in access} >= {
        "/v1/referrals", "/v1/kela/notices", "/v1/referrals/{referral_id}", "/v1/inbox",
        "/v1/referrals/{referral_id}/replies", "/v1/referrals/{referral_id}/answers", "/v1/updates",
        "/v1/statistics", "/dashboard", "/dashboard/cases", "/dashboard/login", "/metrics",
        "/v1/admin/referrals/{referral_id}/route"}
    assert {"referral_delivered", "reply_file_processed", "update_pushed"} <= {e["event"] for e in events}
    assert any(e.get("level") == "debug" for e in events) or len(events) > 500
    assert "handoff_referrals_received_total" in metrics_text
    # The storm ended backends and failed requests (503: the store was unavailable; a 500 only for
    # what no class of failure covers), and its error lines name the statement with its parameters
    # hidden: a traceback (`exception`) or the 503's error text (`error`).
    assert sum(kills) > 0 and sent.storm_statuses[503] + sent.storm_statuses[500] > 0, (
        sum(kills), sent.storm_statuses)
    storm_errors = [e for e in events if HIDDEN in str(e.get("exception")) + str(e.get("error"))]
    assert storm_errors and all("[SQL: " in str(e.get("exception")) + str(e.get("error"))
                                for e in storm_errors)
    # The oversize request line and header were refused, and aiohttp logged each with the code masked.
    assert sent.oversize == [400, 400], sent.oversize
    parser_errors = [e for e in events if str(e.get("event")).startswith("Error handling request")]
    assert len(parser_errors) >= 2 and all("[redacted-hetu]" in json.dumps(e) for e in parser_errors[:2]), \
        parser_errors[:2]
    actions = {json.loads(r)["action"] for r in audit_rows}
    assert {"referral_received", "case_read", "inbox_read", "feed_read", "reply_applied",
            "answer_applied", "rerouted_by_operator", "delivered", "update_pushed"} <= actions, actions

    # Nothing of what was sent comes back.
    scan = IdentityScanner(sent.codes, sent.words)
    findings = (scan.scan_lines("log", log_lines)
                + scan.scan_lines("metrics", metrics_text.splitlines())
                + scan.scan_lines("access-url", [str(e.get("url")) for e in access])
                + scan.scan_lines("request-id", [str(e.get("request_id")) for e in access])
                + scan.scan_lines("audit", audit_rows)
                + scan.scan_lines("error-body", sent.error_bodies)
                + scan.scan_lines("error-page", sent.error_pages))
    assert not findings, "\n".join(map(str, findings[:20]))
    # The masked URLs are there, masked: the access log did see the identity data typed into URLs.
    assert any("[redacted]" in str(e.get("url")) for e in access)


def _kela_pushed(receiver: Receiver):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return any(e["type"] != "referral" for e in receiver.envelopes.values())
    return check


async def test_dashboard_lookup_keeps_no_searched_name_in_its_links(make_client, tmp_path) -> None:
    client = await make_client(base_settings(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"))
    r = await client.get("/dashboard/cases?q=Tuomelias", headers=auth(ADMIN_TOKEN))
    assert r.status == 404
    assert "Tuomelias" not in await r.text()
