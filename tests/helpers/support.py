"""Shared helpers for the HTTP contract tests: build bodies, post them, wait on conditions.

Every wait polls a condition inside `asyncio.wait_for(..., timeout)`; nothing sleeps "to let things
run". Identity codes are test codes only (individual number 900-999, `make_test_hetu`).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import uuid
import zlib
from collections.abc import Iterable
from typing import Any

from aiohttp.test_utils import TestClient

from broker.devtools.demo_data import make_referral, make_test_hetu
from broker.devtools.harness import free_port, wait_for
from tests.helpers.app import ADMIN_TOKEN, KELA_TOKEN, auth, intake_token

__all__ = [
    "CHECK_CHARS", "MUNICIPALITY_OF_AREA", "REQUIRED_FIELDS", "SENT_AT", "assert_safe_422",
    "case_events", "closed_port", "drive_to", "error_locs", "get_case", "hetu_with", "new_case",
    "post", "post_referral", "referral_body", "reply", "reply_body", "wait_for", "wait_state",
]

SENT_AT = "2026-01-02T10:00:00+02:00"
CHECK_CHARS = "0123456789ABCDEFHJKLMNPRSTUVWXY"

# One municipality per organiser area used by the tests (Statistics Finland codes).
MUNICIPALITY_OF_AREA = {
    "08": "837",  # Tampere, Pirkanmaa
    "90": "091",  # Helsinki
    "19": "564",  # Oulu, Pohjois-Pohjanmaa
    "03": "049",  # Espoo, Länsi-Uusimaa
    "91": "478",  # Maarianhamina, Åland (no route in base_settings)
    "05": "853",  # Turku, Varsinais-Suomi (no route in base_settings)
}

# What each reply status must carry (DESIGN § 4); filled in by `reply_body`.
REQUIRED_FIELDS: dict[str, dict[str, Any]] = {
    "assigned": {"worker": {"name": "Keksitty Työntekijä", "title": "sosiaaliohjaaja",
                            "phone": "+358 40 000 0001"}},
    "info_requested": {"question": "Onko asiakkaalla voimassa oleva vuokrasopimus? (keksitty)"},
    "returned": {"reason": "Asiakas on muuttanut (keksitty esimerkki)."},
    "decision_made": {"decision": "granted"},
    "closed": {"outcome": "services_arranged"},
}

Client = TestClient[Any, Any]


def hetu_with(born: dt.date, sign: str, individual: int) -> str:
    """A well-formed identity code with the right check character for the given parts."""
    digits = f"{born:%d%m}{born.year % 100:02d}{individual:03d}"
    return f"{digits[:6]}{sign}{digits[6:]}{CHECK_CHARS[int(digits) % 31]}"


def referral_body(kela_reference: str, *, municipality_code: str = "837",
                  kind: str = "support_need", urgency: str = "normal",
                  personal_id: str | None = None) -> dict[str, Any]:
    """A valid referral (invented person, test identity code), deterministic per reference."""
    rng = random.Random(zlib.crc32(kela_reference.encode()))
    body = make_referral(rng, kela_reference=kela_reference, municipality_code=municipality_code,
                         kind=kind, urgency=urgency,
                         sent_at=dt.datetime(2026, 1, 2, 8, 0, tzinfo=dt.UTC))
    body["client"]["personal_id"] = personal_id or make_test_hetu(rng)
    return body


def reply_body(status: str, reply_id: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"reply_id": reply_id, "status": status, "sent_at": SENT_AT}
    body.update(copy.deepcopy(REQUIRED_FIELDS.get(status, {})))
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


async def _json_or_text(resp: Any) -> Any:
    text = await resp.text()
    try:
        return json.loads(text)
    except ValueError:
        return text


async def post_referral(client: Client, body: Any, token: str = KELA_TOKEN,
                        ) -> tuple[int, Any]:
    r = await client.post("/v1/referrals", json=body, headers=auth(token))
    return r.status, await _json_or_text(r)


async def post(client: Client, ref: str, municipality: str = "837") -> str:
    """POST the referral generated from `ref` (202 expected); its referral id."""
    body = make_referral(random.Random(ref), kela_reference=ref, municipality_code=municipality)
    r = await client.post("/v1/referrals", json=body, headers=auth(KELA_TOKEN))
    assert r.status == 202, await r.text()
    return str((await r.json())["referral_id"])


async def reply(client: Client, rid: str, status: str, *, area: str = "08",
                reply_id: str | None = None, **extra: Any) -> tuple[int, Any]:
    """POST a reply with the required fields filled in (None drops a field); (status, body)."""
    reply_id = reply_id or f"R-{status}-{uuid.uuid4().hex[:12]}"
    r = await client.post(f"/v1/referrals/{rid}/replies", json=reply_body(status, reply_id, **extra),
                          headers=auth(intake_token(area)))
    return r.status, await _json_or_text(r)


async def get_case(client: Client, rid: str, token: str = ADMIN_TOKEN) -> dict[str, Any]:
    r = await client.get(f"/v1/referrals/{rid}", headers=auth(token))
    assert r.status == 200, await r.text()
    body: dict[str, Any] = await r.json()
    return body


async def wait_state(client: Client, rid: str, state: str, timeout: float = 10) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        case = await get_case(client, rid)
        return case if case["state"] == state else None
    result: dict[str, Any] = await wait_for(check, timeout, f"case state {state}")
    return result


async def new_case(client: Client, kela_reference: str, *, area: str = "08",
                   kind: str = "support_need", wait_delivered: bool = True) -> str:
    body = referral_body(kela_reference, municipality_code=MUNICIPALITY_OF_AREA[area], kind=kind)
    status, out = await post_referral(client, body)
    assert status == 202, out
    rid: str = out["referral_id"]
    if wait_delivered:
        await wait_state(client, rid, "delivered")
    return rid


# How to reach each starting state of § 10 from `delivered`, with earlier replies.
_PATHS: dict[str, list[str]] = {
    "delivered": [],
    "acknowledged": ["received"],
    "in_progress": ["received", "assigned"],
    "info_requested": ["received", "info_requested"],
    "closed": ["received", "closed"],
}


async def drive_to(client: Client, rid: str, state: str, area: str = "08") -> None:
    for i, status in enumerate(_PATHS[state]):
        code, out = await reply(client, rid, status, area=area, reply_id=f"prep-{i}-{status}")
        assert code == 202, (status, out)
    case = await get_case(client, rid)
    assert case["state"] == state, case["state"]


def case_events(case: dict[str, Any], type_: str | None = None) -> list[dict[str, Any]]:
    return [e for e in case["events"] if type_ is None or e["type"] == type_]


def error_locs(body: Any) -> list[list[Any]]:
    return [e["loc"] for e in body["errors"]]


def _walk_keys(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk_keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk_keys(v)


async def assert_safe_422(resp: Any, *, secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A 422 of the § 7 shape that echoes no identity code and carries no `input`/`ctx`/`url`."""
    text = await resp.text()
    assert resp.status == 422, (resp.status, text[:300])
    for secret in secrets:
        assert secret not in text, "a 422 body echoes the identity code that was sent"
    body: dict[str, Any] = json.loads(text)
    assert isinstance(body.get("errors"), list) and body["errors"], body
    for item in body["errors"]:
        assert {"loc", "msg", "type"} <= set(item), item
        assert isinstance(item["loc"], list), item
    forbidden = {"input", "ctx", "url"} & set(_walk_keys(body))
    assert not forbidden, f"422 body carries {forbidden}: {body}"
    return body


def closed_port() -> int:
    """A loopback TCP port with nothing listening on it (connections are refused)."""
    return free_port()
