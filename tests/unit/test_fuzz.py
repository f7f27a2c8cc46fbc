"""Fuzzing the two Kela intake endpoints through the real HTTP app (SQLite, embedded transport).

Whatever arrives — arbitrary JSON values, mutated valid referrals, arbitrary bytes, mutated sample XML —
the answer is one of the documented statuses with its documented body shape, never a 500, no error
echoes an identity code that was sent, and the service stays healthy (ready, and a fresh referral is
still accepted and delivered).

Profiles: "ci" (the default; ~50 examples per test) and "fuzz" (`make fuzz`, i.e.
`HYPOTHESIS_PROFILE=fuzz pytest -q tests/unit/test_fuzz.py`; 5000 per test, 1000 for the two that
create a case per example; a few minutes). The profile is
applied to this module's tests only, so loading it does not change other modules' hypothesis
defaults. One app serves every example of the module (an app per example would measure start-up).
Identity codes are test codes (individual numbers 900-999).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.municipal.replies_file import NAMESPACE as REPLY_NS
from adapters.municipal.replies_file import ReplyFileError, parse_reply_file
from broker.delivery.file_replies import FileReplyScanner
from broker.devtools.harness import wait_for
from broker.runtime.app import create_app
from tests.helpers.app import (
    ADMIN_TOKEN,
    KELA_TOKEN,
    ServiceTestServer,
    auth,
    base_settings,
    intake_token,
    services_of,
)
from tests.helpers.support import MUNICIPALITY_OF_AREA, referral_body, reply_body

settings.register_profile("ci", max_examples=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("fuzz", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ci")
PROFILE = settings(settings.get_profile(PROFILE_NAME))
# Tests that create a case per example (two requests, and a file scan) stop at 1000 under "fuzz",
# so that `make fuzz` stays within a few minutes.
PER_CASE = settings(PROFILE, max_examples=min(PROFILE.max_examples, 1000))

SAMPLES = Path(__file__).parents[1] / "samples" / "kela"
SAMPLE_XML = (SAMPLES / "valid_batch.xml").read_text("utf-8")
SAMPLE_HETUS = re.findall(r"<Henkilotunnus>([^<]+)</Henkilotunnus>", SAMPLE_XML)
HETU_SHAPE = re.compile(r"\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]")

JSON_STATUSES = {200, 202, 400, 409, 413, 422}
XML_STATUSES = {207, 400, 413}
NOTICE_STATUSES = {200, 202, 409, 422}


@dataclass
class Live:
    """One running app and the loop it runs on; `post` sends a request and checks nothing."""

    loop: asyncio.AbstractEventLoop
    client: TestClient[Any, Any]
    replies: Path
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    def request(self, method: str, path: str, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        async def go() -> tuple[int, bytes]:
            async with self.client.request(method, path, data=data, headers=headers or {}) as resp:
                return resp.status, await resp.read()
        return self.loop.run_until_complete(go())

    def post(self, path: str, raw: bytes, content_type: str, token: str = KELA_TOKEN) -> tuple[int, Any]:
        status, body = self.request("POST", path, raw, {"Content-Type": content_type, **auth(token)})
        self.statuses[(re.sub(r"/v1/referrals/[^/]+/", "/v1/referrals/{id}/", path), status)] += 1
        assert status != 500, body[:500]
        try:
            return status, json.loads(body)
        except ValueError:
            raise AssertionError(f"{path} answered {status} with a body that is not JSON") from None

    def assert_healthy(self) -> None:
        assert self.request("GET", "/healthz")[0] == 200
        status, body = self.request("GET", "/readyz")
        assert status == 200, body
        ref = f"FUZZ-HEALTH-{uuid.uuid4().hex}"
        status, raw = self.request("POST", "/v1/referrals", json.dumps(referral_body(ref)).encode(),
                                   {"Content-Type": "application/json", **auth(KELA_TOKEN)})
        assert status == 202, raw
        rid = json.loads(raw)["referral_id"]

        async def delivered() -> bool:
            async with self.client.get(f"/v1/referrals/{rid}", headers=auth(ADMIN_TOKEN)) as r:
                return bool((await r.json())["state"] == "delivered")
        self.loop.run_until_complete(wait_for(delivered, 10, "the health referral delivered"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    db = tmp_path_factory.mktemp("fuzz") / "ledger.db"
    loop = asyncio.new_event_loop()

    drop = db.parent / "drop08"
    routes = [{"area": "08", "delivery": "files", "directory": str(drop), "format": "json"},
              *({"area": a, "delivery": "pull"} for a in ("90", "19", "03"))]

    async def start() -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(
            base_settings(f"sqlite+aiosqlite:///{db}", routes=routes))))
        await client.start_server()
        return client

    client = loop.run_until_complete(start())
    state = Live(loop, client, drop / "replies")
    try:
        yield state
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        print(f"\nfuzz profile={PROFILE_NAME} requests by (endpoint, status): "
              f"{dict(sorted(state.statuses.items()))}")


# --- invariants -------------------------------------------------------------------------------------


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def check_error_items(items: Any) -> None:
    assert isinstance(items, list) and items, items
    for item in items:
        assert set(item) == {"loc", "msg", "type"}, item
        assert isinstance(item["loc"], list) and isinstance(item["msg"], str), item


def check_referral_answer(status: int, body: Any, secrets: list[str]) -> None:
    assert status in JSON_STATUSES, (status, body)
    if status in (200, 202):
        assert {"referral_id", "state", "area"} <= set(body), body
        return
    text = json.dumps(body, ensure_ascii=False)
    for secret in secrets:
        assert secret not in text, "an error echoes the identity code that was sent"
    if status == 422:
        check_error_items(body["errors"])
        assert not {"input", "ctx", "url"} & _keys(body)
    else:
        assert set(body["error"]) >= {"code", "message"}, body


def check_notices_answer(status: int, body: Any) -> None:
    assert status in XML_STATUSES, (status, body)
    if status != 207:
        assert set(body["error"]) >= {"code", "message"}, body
        return
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(results)))
    for result in results:
        assert result["status"] in NOTICE_STATUSES, result
        if result["status"] in (200, 202):
            assert {"referral_id", "state", "area"} <= set(result), result
        elif result["status"] == 422:
            check_error_items(result["errors"])
            assert all(e["loc"][:2] == ["Ilmoitus", result["index"]] for e in result["errors"]), result
            text = json.dumps(result["errors"], ensure_ascii=False)
            assert not HETU_SHAPE.search(text), "a notice error echoes an identity code"
            assert not {"input", "ctx", "url"} & _keys(result)


def post_referral_bytes(live: Live, raw: bytes, secrets: list[str]) -> None:
    status, body = live.post("/v1/referrals", raw, "application/json")
    check_referral_answer(status, body, secrets)


def post_notices_bytes(live: Live, raw: bytes) -> None:
    status, body = live.post("/v1/kela/notices", raw, "application/xml")
    check_notices_answer(status, body)


# --- strategies -----------------------------------------------------------------------------------

REFERRAL_KEYS = ["schema_version", "kela_reference", "referral_id", "kind", "urgency", "client",
                 "consent", "justification", "needs", "description", "kela", "attachments", "sent_at",
                 "received_at", "personal_id", "municipality_code", "given", "language"]
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**20, max_value=10**40)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50)
           | st.sampled_from(["", "1", "support_need", "urgent", "091", "478", "999", "fi", "true",
                              "2026-01-02T10:00:00+02:00", "2026-02-31T10:00:00Z", "010170-999R",
                              "010170-999S", "x" * 4001, "\x00", "\ud800", "\udfff\ud800", "\u2028"]))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.sampled_from(REFERRAL_KEYS) | st.text(max_size=12), children, max_size=6),
    max_leaves=25,
)
KINDS = ["support_need", "support_need_without_consent", "application_transfer",
         "basic_amount_reduction", "urgent_assistance"]
KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:/"


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _parent(body: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        body = body[step]
    return body


@st.composite
def mutated_referrals(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    ref = "FZ-" + draw(st.text(KEY_CHARS, min_size=1, max_size=12))
    municipality = draw(st.sampled_from([*MUNICIPALITY_OF_AREA.values(), "999", "000"]))
    body: Any = referral_body(ref, municipality_code=municipality, kind=draw(st.sampled_from(KINDS)),
                              urgency=draw(st.sampled_from(["urgent", "normal"])))
    secrets = [body["client"]["personal_id"]]
    for _ in range(draw(st.integers(0, 4))):
        paths = _paths(body)
        op = draw(st.sampled_from(["delete", "replace", "add", "wrap"]))
        if not paths or op == "add":
            target = body if isinstance(body, dict) else None
            if isinstance(target, dict):
                target[draw(st.sampled_from(REFERRAL_KEYS) | st.text(max_size=10))] = draw(json_values)
            continue
        path = draw(st.sampled_from(paths))
        parent = _parent(body, path)
        if op == "delete":
            del parent[path[-1]]
        elif op == "replace":
            parent[path[-1]] = draw(json_values)
        else:
            parent[path[-1]] = [parent[path[-1]]] if draw(st.booleans()) else {"value": parent[path[-1]]}
    return body, secrets


@st.composite
def mutated_bytes(draw: st.DrawFn, base: bytes) -> bytes:
    raw = bytearray(base)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate"]))
        pos = draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=16)
                                | st.sampled_from([b"<", b">", b"&", b"]]>", b"<![CDATA[", b"&#0;",
                                                   b"&#x110000;", b"\xff", b"\xc3", b"<!DOCTYPE a>",
                                                   b"<?xml?>", b"\"", b"\\u0000", b"{", b"}"]))
        elif op == "delete" and raw:
            end = draw(st.integers(pos, min(len(raw), pos + 64)))
            del raw[pos:end]
        elif raw:
            end = draw(st.integers(pos, min(len(raw), pos + 256)))
            raw[end:end] = raw[pos:end]
    return bytes(raw)


_TEXT = re.compile(r">([^<]*)<")
_LEAF = re.compile(r"<(\w+)>[^<]*</\1>")
_NAME = re.compile(r"</?(\w+)")
_NOTICE = re.compile(r"<Ilmoitus>.*?</Ilmoitus>", re.S)
xml_text = st.text(max_size=40) | st.sampled_from(
    ["", " ", "999", "478", "true", "maybe", "2025-03-03T09:20:00", "2025-02-30T00:00:00Z",
     "010170-999S", "99999999999999999999", "a" * 4001, "sosiaalihuollon_tarve", "kiireellinen_apu"])


@st.composite
def mutated_xml(draw: st.DrawFn) -> bytes:
    doc = SAMPLE_XML
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["text", "raw_text", "drop_leaf", "rename", "dup_notice", "attr"]))
        if op in ("text", "raw_text"):
            spots = list(_TEXT.finditer(doc))
            m = draw(st.sampled_from(spots))
            value = draw(xml_text)
            value = escape(value) if op == "text" else value
            # Characters XML cannot carry at all make the batch malformed: that is a valid outcome.
            doc = doc[: m.start(1)] + value + doc[m.end(1):]
        elif op == "drop_leaf":
            leaves = list(_LEAF.finditer(doc))
            if leaves:
                m = draw(st.sampled_from(leaves))
                doc = doc[: m.start()] + doc[m.end():]
        elif op == "rename":
            names = sorted({m.group(1) for m in _NAME.finditer(doc)})
            old = draw(st.sampled_from(names))
            new = draw(st.sampled_from([*names, "Tuntematon", "x"]))
            doc = re.sub(rf"(</?){old}\b", rf"\g<1>{new}", doc, count=draw(st.integers(0, 3)))
        elif op == "dup_notice":
            notices = list(_NOTICE.finditer(doc))
            if notices:
                m = draw(st.sampled_from(notices))
                doc = doc[: m.end()] + m.group(0) * draw(st.integers(1, 3)) + doc[m.end():]
        else:
            names = sorted({m.group(1) for m in _NAME.finditer(doc)})
            name = draw(st.sampled_from(names))
            attr = draw(st.sampled_from(['versio="1"', 'versio="2"', 'x="1"', 'xml:lang="fi"',
                                         'xmlns="urn:other"', 'xmlns:k="urn:kela:handoff:ilmoitus:1"']))
            doc = doc.replace(f"<{name}>", f"<{name} {attr}>", 1)
    return doc.encode("utf-8", "surrogatepass")


def run_examples(strategy: st.SearchStrategy[Any], check: Callable[[Any], None],
                 profile: settings = PROFILE) -> None:
    @profile
    @given(strategy)
    def examples(value: Any) -> None:
        check(value)

    examples()


REPLY_STATUSES = ["received", "assigned", "client_contacted", "assessment_started", "info_requested",
                  "returned", "decision_made", "closed"]
REPLY_KEYS = ["reply_id", "status", "worker", "question", "reason", "suggested_municipality_code",
              "decision", "outcome", "message", "sent_at", "referral_quality", "findings",
              "client_feedback", "referral_id"]
reply_json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.sampled_from(REPLY_KEYS) | st.text(max_size=12), children, max_size=6),
    max_leaves=25,
)


@st.composite
def mutated_replies(draw: st.DrawFn) -> dict[str, Any]:
    status = draw(st.sampled_from(REPLY_STATUSES))
    body: dict[str, Any] = reply_body(status, "R-" + draw(st.text(KEY_CHARS, min_size=1, max_size=8)))
    if status == "returned" and draw(st.booleans()):
        body["suggested_municipality_code"] = draw(st.sampled_from([*MUNICIPALITY_OF_AREA.values(), "999"]))
    if status == "closed" and draw(st.booleans()):
        body.update(referral_quality="sufficient", findings=["service_gap"],
                    client_feedback={"rating": 5, "heard": True})
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(body)
        op = draw(st.sampled_from(["delete", "replace", "add"]))
        if op == "add" or not paths:
            body[draw(st.sampled_from(REPLY_KEYS) | st.text(max_size=10))] = draw(reply_json_values)
            continue
        path = draw(st.sampled_from(paths))
        parent = _parent(body, path)
        if op == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(reply_json_values)
    return body


def new_referral(live: Live) -> str:
    """A fresh case of area 08 (files route); often still `routed` when the reply comes."""
    ref = f"FZ-R-{uuid.uuid4().hex}"
    status, body = live.post("/v1/referrals", json.dumps(referral_body(ref, municipality_code="837",
                                                                     kind="application_transfer")
                                                       ).encode(), "application/json")
    assert status == 202, body
    rid: str = body["referral_id"]
    return rid


def check_reply_answer(status: int, body: Any) -> None:
    assert status in {200, 202, 400, 409, 422}, (status, body)
    if status in (200, 202):
        assert {"referral_id", "reply_id", "state", "area"} <= set(body), body
    elif status == 422:
        check_error_items(body["errors"])
        assert not {"input", "ctx", "url"} & _keys(body)
    else:
        assert set(body["error"]) >= {"code", "message"}, body


# --- the tests ----------------------------------------------------------------------------------


def test_arbitrary_json_values_to_the_referral_endpoint(live: Live) -> None:
    run_examples(json_values, lambda v: post_referral_bytes(live, json.dumps(v).encode(), []))
    live.assert_healthy()


def test_mutated_valid_referrals(live: Live) -> None:
    def check(drawn: tuple[Any, list[str]]) -> None:
        body, secrets = drawn
        # ASCII escapes: a lone surrogate arrives as a valid JSON escape (\\ud800), not as bad UTF-8.
        post_referral_bytes(live, json.dumps(body).encode(), secrets)

    run_examples(mutated_referrals(), check)
    live.assert_healthy()


def test_arbitrary_and_mutated_bytes_to_the_referral_endpoint(live: Live) -> None:
    base = json.dumps(referral_body("FZ-BYTES", municipality_code="091")).encode()
    run_examples(st.binary(max_size=2048) | mutated_bytes(base),
                 lambda raw: post_referral_bytes(live, raw, []))
    live.assert_healthy()


def test_arbitrary_and_mutated_bytes_to_the_notices_endpoint(live: Live) -> None:
    run_examples(st.binary(max_size=2048) | mutated_bytes(SAMPLE_XML.encode()),
                 lambda raw: post_notices_bytes(live, raw))
    live.assert_healthy()


def test_mutated_sample_xml_to_the_notices_endpoint(live: Live) -> None:
    run_examples(mutated_xml(), lambda raw: post_notices_bytes(live, raw))
    live.assert_healthy()


def test_replies_to_the_reply_endpoint(live: Live) -> None:
    """Replies reach the same case logic as reply files; each example gets a fresh case."""
    def check(value: Any) -> None:
        rid = new_referral(live)
        status, body = live.post(f"/v1/referrals/{rid}/replies", json.dumps(value).encode(),
                                 "application/json", token=intake_token("08"))
        check_reply_answer(status, body)

    run_examples(reply_json_values | mutated_replies(), check, PER_CASE)
    live.assert_healthy()


def test_reply_with_a_lone_surrogate_is_422_not_500(live: Live) -> None:
    """Found while writing these fuzz tests: JSON may spell a lone surrogate as an escape (\\udfff); the reply path
    hashes the raw body before validating it, and the hash's UTF-8 encoding raises."""
    rid = new_referral(live)
    body = json.dumps(reply_body("received", "R-sur", message="x\udfff")).encode()
    assert b"\\udfff" in body
    status, answer = live.request("POST", f"/v1/referrals/{rid}/replies", body,
                                  {"Content-Type": "application/json", **auth(intake_token("08"))})
    assert status == 422, (status, answer)
    assert json.loads(answer)["errors"][0]["loc"] == ["message"]


def test_reply_files_always_end_in_processed_or_rejected(live: Live) -> None:
    """The file scanner over fuzzed files: every file is moved (never left to retry, never lost)."""
    scanner = FileReplyScanner(services_of(live.client).settings, services_of(live.client).cases)
    live.replies.mkdir(parents=True, exist_ok=True)
    counter = iter(range(10**9))

    def check(drawn: tuple[str, Any]) -> None:
        kind, value = drawn
        rid = new_referral(live)
        n = next(counter)
        if kind == "json":
            raw = (json.dumps({"referral_id": rid, **value}).encode() if isinstance(value, dict)
                   else json.dumps(value).encode())
        elif kind == "xml":
            raw = value.replace(b"@RID@", rid.encode())
        else:
            raw = value
        name = f"f{n}.{'xml' if kind == 'xml' else 'json'}"
        (live.replies / name).write_bytes(raw)
        report = live.loop.run_until_complete(scanner.scan_once())
        assert report.retried == 0, report
        assert report.processed + report.duplicate + report.rejected == 1, report
        assert not (live.replies / name).exists()
        moved = [live.replies / d / name for d in ("processed", "rejected")]
        assert sum(p.exists() for p in moved) == 1
        if moved[1].exists():
            doc = json.loads((live.replies / "rejected" / f"{name}.error.json").read_text("utf-8"))
            assert doc["status"] in (400, 404, 409, 413, 422), doc
            check_error_items(doc["errors"])

    xml_base = (f'<Vastaus xmlns="{REPLY_NS}" versio="1"><LaheteId>@RID@</LaheteId>'
                "<VastausId>V-1</VastausId><Tila>vastaanotettu</Tila>"
                "<Lahetetty>2026-01-02T10:00:00+02:00</Lahetetty></Vastaus>").encode()
    strategy = (st.tuples(st.just("json"), mutated_replies() | reply_json_values)
                | st.tuples(st.just("xml"), mutated_bytes(xml_base))
                | st.tuples(st.just("bytes"), st.binary(max_size=512)))
    run_examples(strategy, check, PER_CASE)
    live.assert_healthy()


@PROFILE
@given(st.binary(max_size=2048), st.sampled_from(["r.json", "r.xml", "R.XML", "r.txt"]))
def test_parse_reply_file_raises_only_reply_file_error(raw: bytes, name: str) -> None:
    try:
        referral_id, data = parse_reply_file(name, raw)
    except ReplyFileError as exc:
        check_error_items(exc.errors)
    else:
        uuid.UUID(referral_id)
        assert isinstance(data, dict) and "referral_id" not in data


def test_fuzzing_left_no_crash_behind(live: Live) -> None:
    """Runs last in the module: the same app, after every example above, is still sound."""
    live.assert_healthy()
    status, raw = live.request("GET", "/metrics")
    assert status == 200 and b"handoff_validation_rejections_total" in raw


# --- hostile input on both stores (issue 15): the classes, not the instances -----------------------


@pytest.fixture
def hostile(store_url: str, tmp_path: Path) -> Iterator[Live]:
    """A fresh app on each store (SQLite and PostgreSQL), on the runner `handoff run` uses."""
    loop = asyncio.new_event_loop()

    async def start() -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(ServiceTestServer(create_app(base_settings(store_url))))
        await client.start_server()
        return client

    client = loop.run_until_complete(start())
    try:
        yield Live(loop, client, tmp_path)
    finally:
        loop.run_until_complete(client.close())
        loop.close()


ASCII_DIGITS = "0123456789"
# Every character Unicode calls a number (decimal digits of any script, superscripts, fractions,
# Roman numerals...) except the ASCII digits: str.isdigit() or int() accept many of them.
unicode_number_chars = st.characters(categories=["Nd", "No", "Nl"]).filter(lambda c: c not in ASCII_DIGITS)
non_ascii_numbers = st.tuples(st.text(ASCII_DIGITS, max_size=2), st.text(unicode_number_chars, min_size=1,
                                                                          max_size=3),
                              st.text(ASCII_DIGITS, max_size=2)).map("".join)


def _status_json(live: Live, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else None
    headers = {**auth(token), **({"Content-Type": "application/json"} if raw is not None else {})}
    status, answer = live.request(method, path, raw, headers)
    assert status != 500, (method, path, answer[:300])
    try:
        return status, json.loads(answer)
    except ValueError:
        return status, answer.decode("utf-8", "replace")


def test_non_ascii_digits_are_no_number_anywhere_in_a_url(hostile: Live) -> None:
    def check(value: str) -> None:
        quoted = urllib.parse.quote(value, safe="")
        for path, token in (("/v1/inbox", intake_token("08")), ("/v1/updates", KELA_TOKEN),
                            ("/v1/admin/dead-letters", ADMIN_TOKEN)):
            status, body = _status_json(hostile, "GET", f"{path}?limit={quoted}", token)
            assert status == 422 and ["query", "limit"] in [e["loc"] for e in body["errors"]], body
        status, body = _status_json(hostile, "POST", f"/v1/admin/dead-letters/{quoted}/replay", ADMIN_TOKEN)
        assert status == 404, body
        status, body = _status_json(hostile, "GET", f"/v1/statistics?from=2026-01&to={quoted}",
                                    ADMIN_TOKEN)
        assert status == 422, body

    run_examples(non_ascii_numbers, check)


# Ids that are no referral id: control and format characters, spaces, Unicode digits, among
# the characters of a real one.
hostile_id_chars = st.characters(categories=["Cc", "Cf", "Zs", "Nd", "No"]) | st.sampled_from("-abcdef0123456789")
hostile_ids = (st.text(hostile_id_chars, min_size=1, max_size=40)
               | st.builds(lambda rid, i, c: rid[:i] + c + rid[i:], st.uuids().map(str),
                           st.integers(0, 36), st.characters(categories=["Cc", "Cf", "Nd"])))


def test_hostile_path_ids_are_unknown_ids(hostile: Live) -> None:
    answer = {"answer_id": "A-fz", "message": "Vastaus (keksitty).", "sent_at": "2026-01-02T10:00:00+02:00"}

    def check(value: str) -> None:
        quoted = urllib.parse.quote(value, safe="")
        for method, path, token, body in (
            ("GET", f"/v1/referrals/{quoted}", ADMIN_TOKEN, None),
            ("POST", f"/v1/referrals/{quoted}/replies", intake_token("08"), reply_body("received", "R-fz")),
            ("POST", f"/v1/referrals/{quoted}/answers", KELA_TOKEN, answer),
            ("POST", f"/v1/admin/referrals/{quoted}/route", ADMIN_TOKEN, {"area": "08"}),
        ):
            status, out = _status_json(hostile, method, path, token, body)
            # 405: a value such as ".." that the URL resolves into another route.
            assert status in (404, 405, 422), (method, path, status, out)

    run_examples(hostile_ids, check)


def test_deep_json_on_every_json_endpoint(hostile: Live) -> None:
    rid = new_referral(hostile)
    endpoints = [("/v1/referrals", KELA_TOKEN), (f"/v1/referrals/{rid}/replies", intake_token("08")),
                 (f"/v1/referrals/{rid}/answers", KELA_TOKEN),
                 (f"/v1/admin/referrals/{rid}/route", ADMIN_TOKEN)]

    def check(drawn: tuple[int, str, bool, tuple[str, str]]) -> None:
        depth, opener, closed, (path, token) = drawn
        closer = "]" if opener == "[" else "}"
        raw = (opener * depth + ("1" if opener != "[" else "") + (closer * depth if closed else "")).encode()
        status, body = hostile.post(path, raw, "application/json", token)
        assert status in (400, 422), (path, depth, status, body)
        assert "body" in json.dumps(body), body

    run_examples(st.tuples(st.integers(65, 20_000), st.sampled_from(["[", '{"a":']), st.booleans(),
                           st.sampled_from(endpoints)), check)
    hostile.assert_healthy()


def test_identity_codes_with_non_ascii_digits_are_422(hostile: Live) -> None:
    decimal_digits = st.characters(categories=["Nd"]).filter(lambda c: c not in ASCII_DIGITS)

    @st.composite
    def spoofed(draw: st.DrawFn) -> str:
        code: str = draw(st.sampled_from(SAMPLE_HETUS))
        positions = [i for i, c in enumerate(code) if c in ASCII_DIGITS]
        chosen = draw(st.lists(st.sampled_from(positions), min_size=1, unique=True))
        chars = list(code)
        for i in chosen:
            chars[i] = draw(decimal_digits)
        return "".join(chars)

    def check(code: str) -> None:
        body = referral_body(f"FZ-HETU-{uuid.uuid4().hex[:12]}", personal_id=code)
        status, out = hostile.post("/v1/referrals", json.dumps(body).encode(), "application/json")
        assert status == 422, (status, out)
        assert ["client", "personal_id"] in [e["loc"] for e in out["errors"]], out
        assert code not in json.dumps(out, ensure_ascii=False)

    run_examples(spoofed(), check)
