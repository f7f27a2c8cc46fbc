"""Identity codes never reach a log event: not from handlers, workers, errors, nor the access log."""

from __future__ import annotations

import random
import re

import structlog
from structlog.testing import capture_logs

from broker.demo_data import make_referral
from broker.logs import HETU_PATTERN, redact_identity_codes
from tests.conftest import KELA_TOKEN, auth, base_settings, intake_token
from tests.test_smoke_flow import wait_state


async def test_no_identity_code_in_any_log_event(make_client, tmp_path) -> None:
    client = await make_client(base_settings(f"sqlite+aiosqlite:///{tmp_path / 'l.db'}"))
    rng = random.Random(7)
    good = make_referral(rng, kela_reference="LOG-1", municipality_code="837")
    bad = make_referral(rng, kela_reference="LOG-2", municipality_code="837")
    hetus = {good["client"]["personal_id"]}
    bad["client"]["personal_id"] = bad["client"]["personal_id"][:-1] + (
        "X" if bad["client"]["personal_id"][-1] != "X" else "Y")
    hetus.add(bad["client"]["personal_id"])
    with capture_logs() as events:
        r = await client.post("/v1/referrals", json=good, headers=auth(KELA_TOKEN))
        rid = (await r.json())["referral_id"]
        r2 = await client.post("/v1/referrals", json=bad, headers=auth(KELA_TOKEN))
        assert r2.status == 422
        assert bad["client"]["personal_id"] not in await r2.text()
        await wait_state(client, rid, "delivered")
        await client.get(f"/v1/referrals/{rid}", headers=auth(intake_token("08")))
        await client.get(f"/v1/referrals/{good['client']['personal_id']}", headers=auth(KELA_TOKEN))
    assert events, "the service logged nothing"
    blob = repr(events)
    for hetu in hetus:
        assert hetu not in blob
    assert not HETU_PATTERN.search(blob)
    names = {e["event"] for e in events}
    assert {"request_handled", "referral_delivered"} <= names
    # The access log names the route pattern, never the raw path someone typed.
    routes = {e.get("route") for e in events if e["event"] == "request_handled"}
    assert "/v1/referrals/{referral_id}" in routes


def test_redaction_processor_masks_codes_anywhere() -> None:
    event = {"event": "x", "detail": "client 010190-999X said", "nested": {"k": ["120503A9442"]}}
    out = redact_identity_codes(None, "info", dict(event))
    assert "010190-999X" not in repr(out) and "120503A9442" not in repr(out)
    assert re.search(r"\[redacted-hetu\]", out["detail"])


def test_library_log_records_are_redacted_too(capsys) -> None:
    """aiohttp, asyncpg and aio-pika log through the standard library: the same redactor applies."""
    import json
    import logging

    from broker.logs import configure_logging

    root = logging.getLogger()
    handlers, level, previous = root.handlers[:], root.level, structlog.get_config()
    try:
        configure_logging("info", "json")
        logging.getLogger("aiohttp.server").warning("bad request from %s", "010190-9000")
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**previous)
    line = json.loads(err.strip().splitlines()[-1])
    assert line["logger"] == "aiohttp.server" and line["level"] == "warning"
    assert line["event"] == "bad request from [redacted-hetu]"
    assert "010190-9000" not in err
