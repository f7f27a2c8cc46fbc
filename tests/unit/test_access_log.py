"""The access log (`request_handled`): one event per request with the real URL, minus anything personal."""

from __future__ import annotations

import random
from typing import Any

from structlog.testing import capture_logs

from broker.devtools.demo_data import make_referral, make_test_hetu
from broker.web.cursors import encode_cursor
from tests.helpers.app import ADMIN_TOKEN, KELA_TOKEN, auth, base_settings, intake_token


async def test_access_log_keeps_ids_and_masks_personal_values(make_client, tmp_path) -> None:
    client = await make_client(base_settings(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"))
    hetu = make_test_hetu(random.Random(3))
    body = make_referral(random.Random(4), kela_reference="ACC-1", municipality_code="837")
    cursor = encode_cursor("u", 0)
    with capture_logs() as events:
        r = await client.post("/v1/referrals", json=body, headers={**auth(KELA_TOKEN),
                                                                   "X-Request-Id": "req-acc-1"})
        rid = (await r.json())["referral_id"]
        requests: list[tuple[str, dict[str, str]]] = [
            (f"/v1/referrals/{rid}", auth(KELA_TOKEN)),
            (f"/v1/updates?after={cursor}&limit=5", auth(KELA_TOKEN)),
            ("/v1/inbox?state=delivered,acknowledged&limit=3", auth(intake_token("08"))),
            ("/v1/statistics?from=2026-01&to=2026-11&area=08&format=csv", auth(ADMIN_TOKEN)),
            (f"/v1/referrals/{hetu}", auth(KELA_TOKEN)),
            (f"/v1/referrals/x{hetu.lower()}", auth(KELA_TOKEN)),
            ("/v1/referrals/Virtanen", auth(KELA_TOKEN)),
            (f"/v1/updates?after=Virtanen&limit=5&name=Matti&{hetu}=1", auth(KELA_TOKEN)),
            ("/v1/inbox?state=virtanen", auth(intake_token("08"))),
            (f"/dashboard/cases?q={hetu}", auth(ADMIN_TOKEN)),
            ("/dashboard/cases?q=Virtanen", auth(ADMIN_TOKEN)),
            ("/dashboard/cases?q=ACC-1", auth(ADMIN_TOKEN)),
            (f"/v1/nothing/{hetu}/Virtanen", {}),
        ]
        for path, headers in requests:
            await client.get(path, headers=headers)
    access = [e for e in events if e["event"] == "request_handled"]
    assert len(access) == len(requests) + 1, "one access event per request"
    urls = [e["url"] for e in access]
    assert urls[:5] == [
        "/v1/referrals",
        f"/v1/referrals/{rid}",
        f"/v1/updates?after={cursor}&limit=5",
        "/v1/inbox?state=delivered,acknowledged&limit=3",
        "/v1/statistics?from=2026-01&to=2026-11&area=08&format=csv",
    ]
    assert urls[5:] == [
        "/v1/referrals/[redacted]",
        "/v1/referrals/[redacted]",
        "/v1/referrals/[redacted]",
        "/v1/updates?after=[redacted]&limit=5&name=[redacted]&[redacted]=[redacted]",
        "/v1/inbox?state=[redacted]",
        "/dashboard/cases?q=[redacted]",
        "/dashboard/cases?q=[redacted]",
        "/dashboard/cases?q=ACC-1",
        "/v1/[redacted]/[redacted]/[redacted]",
    ]
    first: dict[str, Any] = access[0]
    assert first["method"] == "POST" and first["status"] == 202 and first["party"] == "kela-1"
    assert first["request_id"] == "req-acc-1" and first["route"] == "/v1/referrals"
    assert isinstance(first["bytes"], int) and first["bytes"] > 0
    assert first["remote"] == "127.0.0.1" and first["duration_ms"] >= 0
    blob = repr(events).lower()
    assert hetu.lower() not in blob and "virtanen" not in blob and "matti" not in blob
