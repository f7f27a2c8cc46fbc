"""Replies dropped as files by intakes with `files` delivery (issue 6): `broker.delivery.file_replies`.

The scanner is driven with `scan_once()`; every case first reaches `delivered` through the real
files delivery. Identity codes are test codes (individual numbers 900-999); names are invented.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.municipal.replies_file import (
    NAMESPACE,
    STATUS_CODES,
    ReplyFileError,
    file_loc,
    parse_reply_file,
    reply_xml_loc,
)
from broker.delivery.file_replies import FileReplyScanner, ScanReport
from broker.devtools.harness import wait_for
from schemas.enums import ReplyStatus
from tests.helpers.app import KELA_TOKEN, auth, base_settings, services_of
from tests.helpers.support import (
    SENT_AT,
    case_events,
    get_case,
    hetu_with,
    new_case,
    reply_body,
)

SAMPLES = Path(__file__).parents[1] / "samples" / "kela"
TEST_HETU = hetu_with(dt.date(1970, 1, 1), "-", 999)  # 010170-999R
SECRET_TEXT = "Keksitty salainen viesti Aino Testiselle"


@dataclass
class Env:
    client: Any
    scanner: FileReplyScanner
    root: Path

    def drop_dir(self, area: str) -> Path:
        return self.root / f"drop{area}"

    def replies(self, area: str = "08") -> Path:
        return self.drop_dir(area) / "replies"

    async def scan(self, **expected: int) -> ScanReport:
        report = await self.scanner.scan_once()
        for key, value in expected.items():
            assert getattr(report, key) == value, (key, report)
        return report


@pytest.fixture
async def env(make_client: Any, store_url: str, tmp_path: Path) -> Env:
    routes = [
        {"area": "08", "delivery": "files", "directory": str(tmp_path / "drop08"), "format": "json"},
        {"area": "90", "delivery": "files", "directory": str(tmp_path / "drop90"), "format": "xml"},
        {"area": "19", "delivery": "pull"},
    ]
    client = await make_client(base_settings(store_url, routes=routes))
    svc = services_of(client)
    return Env(client, FileReplyScanner(svc.settings, svc.cases), tmp_path)


def drop(directory: Path, name: str, content: bytes | str) -> Path:
    """Write as a well-behaved intake does: a hidden temp name, then a rename into place."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = content.encode("utf-8") if isinstance(content, str) else content
    tmp = directory / f".{name}.partial"
    tmp.write_bytes(raw)
    final = directory / name
    os.replace(tmp, final)
    return final


def json_reply(rid: str, status: str, reply_id: str, **extra: Any) -> str:
    return json.dumps({"referral_id": rid, **reply_body(status, reply_id, **extra)}, ensure_ascii=False)


def xml_reply(rid: str | None, status_code: str, reply_id: str, extra: str = "",
              sent_at: str = SENT_AT) -> str:
    lahete = f"<LaheteId>{rid}</LaheteId>" if rid is not None else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Vastaus xmlns="{NAMESPACE}" versio="1">'
            f"{lahete}<VastausId>{reply_id}</VastausId><Tila>{status_code}</Tila>"
            f"<Lahetetty>{sent_at}</Lahetetty>{extra}</Vastaus>\n")


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def all_files(root: Path) -> Counter[str]:
    """Every file name under root (any depth), error files left out, as a multiset."""
    names: Counter[str] = Counter()
    for path in root.rglob("*"):
        if path.name.endswith(".error.json") or (path.is_dir() and not path.name.endswith(".json")):
            continue
        names[path.name] += 1
    return names


def error_doc(env: Env, name: str, area: str = "08") -> dict[str, Any]:
    path = env.replies(area) / "rejected" / f"{name}.error.json"
    assert path.exists(), listing(path.parent)
    doc: dict[str, Any] = json.loads(path.read_text("utf-8"))
    assert set(doc) >= {"errors", "status", "file", "at"}
    dt.datetime.fromisoformat(doc["at"])
    for item in doc["errors"]:
        assert set(item) == {"loc", "msg", "type"}, item
    return doc


def delivered_file(env: Env, area: str, rid: str) -> Path:
    (path,) = [p for p in env.drop_dir(area).iterdir() if p.is_file() and rid in p.name]
    return path


async def reply_events(env: Env, rid: str) -> list[dict[str, Any]]:
    return case_events(await get_case(env.client, rid), "reply")


# --- the happy paths ------------------------------------------------------------------------------


async def test_json_reply_is_applied_and_moved_to_processed(env: Env) -> None:
    rid = await new_case(env.client, "FR-1", area="08")
    referral_file = delivered_file(env, "08", rid)
    assert referral_file.name.startswith(f"referral-{rid}-")
    drop(env.replies(), "vastaus-1.json", json_reply(rid, "received", "R-1"))
    await env.scan(processed=1, duplicate=0, rejected=0, retried=0)
    case = await get_case(env.client, rid)
    assert case["state"] == "acknowledged"
    (event,) = case_events(case, "reply")
    assert event["actor"] == "files-08"
    assert listing(env.replies()) == ["processed"]
    assert listing(env.replies() / "processed") == ["vastaus-1.json"]
    assert referral_file.exists()  # the referral file is the intake's, never touched
    await env.scan(processed=0, duplicate=0, rejected=0, retried=0)  # nothing left to do


async def test_replies_directory_is_created_for_every_files_route(env: Env) -> None:
    await env.scan(processed=0)
    assert env.replies("08").is_dir() and env.replies("90").is_dir()


async def test_xml_reply_is_applied(env: Env) -> None:
    rid = await new_case(env.client, "FR-X1", area="90")
    assert delivered_file(env, "90", rid).suffix == ".xml"
    worker = ("<Tyontekija><Nimi>Keksitty Työntekijä</Nimi><Nimike>sosiaaliohjaaja</Nimike>"
              "<Puhelin>+358 40 000 0001</Puhelin></Tyontekija>")
    drop(env.replies("90"), "v1.xml", xml_reply(rid.upper(), "tyontekija_nimetty", "V-1", worker))
    await env.scan(processed=1, rejected=0)
    case = await get_case(env.client, rid)
    assert case["state"] == "in_progress"
    (event,) = case_events(case, "reply")
    assert event["actor"] == "files-90"
    feed = await (await env.client.get("/v1/updates", headers=auth(KELA_TOKEN))).json()
    (item,) = [i for i in feed["items"] if i["type"] == "reply"]
    assert item["reply"]["status"] == "assigned" and item["reply"]["reply_id"] == "V-1"
    assert item["reply"]["worker"] == {"name": "Keksitty Työntekijä", "title": "sosiaaliohjaaja",
                                       "phone": "+358 40 000 0001"}
    assert listing(env.replies("90") / "processed") == ["v1.xml"]


async def test_xml_closing_reply_with_statistics_fields(env: Env) -> None:
    rid = await new_case(env.client, "FR-X2", area="90")
    extra = ("<Lopputulos>palvelut_jarjestetty</Lopputulos><LahetteenLaatu>riittava</LahetteenLaatu>"
             "<Havainnot><Havainto>asuntopula</Havainto><Havainto>pitka_odotusaika</Havainto></Havainnot>"
             "<AsiakasPalaute><Arvio>4</Arvio><TuliKuulluksi>true</TuliKuulluksi></AsiakasPalaute>"
             "<Viesti>Asiakkaalle järjestetty asumisneuvonta.</Viesti>")
    drop(env.replies("90"), "close.xml", xml_reply(rid, "suljettu", "V-close", extra))
    await env.scan(processed=1, rejected=0)
    case = await get_case(env.client, rid)
    assert case["state"] == "closed"
    (event,) = case_events(case, "reply")
    assert event["reply"]["findings"] == ["housing_shortage", "long_waiting_time"]
    assert event["reply"]["client_feedback"] == {"rating": 4, "heard": True}
    assert event["reply"]["referral_quality"] == "sufficient"
    assert event["reply"]["outcome"] == "services_arranged"


async def test_files_are_applied_in_arrival_order(env: Env) -> None:
    """`received` must come before `assigned`: modification time decides, not the name."""
    rid = await new_case(env.client, "FR-ORD", area="08")
    first = drop(env.replies(), "b-first.json", json_reply(rid, "received", "R-a"))
    second = drop(env.replies(), "a-second.json", json_reply(rid, "assigned", "R-b"))
    os.utime(first, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    os.utime(second, ns=(1_700_000_001_000_000_000, 1_700_000_001_000_000_000))
    await env.scan(processed=2, rejected=0)
    assert (await get_case(env.client, rid))["state"] == "in_progress"
    assert [e["reply"]["status"] for e in await reply_events(env, rid)] == ["received", "assigned"]


# --- idempotency and conflicts ------------------------------------------------------------------


async def test_identical_repeat_is_processed_once_and_nothing_is_overwritten(env: Env) -> None:
    rid = await new_case(env.client, "FR-DUP", area="08")
    body = json_reply(rid, "received", "R-dup")
    drop(env.replies(), "r.json", body)
    await env.scan(processed=1, duplicate=0)
    # The same reply again: under another name (key order changed), then under the same name.
    reordered = json.dumps(dict(reversed(list(json.loads(body).items()))))
    drop(env.replies(), "r-again.json", reordered)
    await env.scan(processed=0, duplicate=1, rejected=0)
    drop(env.replies(), "r.json", body)
    await env.scan(processed=0, duplicate=1, rejected=0)
    assert listing(env.replies() / "processed") == ["r-again.json", "r.1.json", "r.json"]
    assert (env.replies() / "processed" / "r.1.json").read_text("utf-8") == body
    assert len(await reply_events(env, rid)) == 1
    assert (await get_case(env.client, rid))["state"] == "acknowledged"


async def test_same_reply_id_with_another_body_is_rejected_409(env: Env) -> None:
    rid = await new_case(env.client, "FR-409", area="08")
    drop(env.replies(), "r1.json", json_reply(rid, "received", "R-same"))
    await env.scan(processed=1)
    drop(env.replies(), "r2.json", json_reply(rid, "received", "R-same", message="toinen sisältö"))
    await env.scan(processed=0, duplicate=0, rejected=1)
    doc = error_doc(env, "r2.json")
    assert doc["status"] == 409 and doc["file"] == "r2.json"
    assert [e["loc"] for e in doc["errors"]] == [["reply_id"]]
    assert listing(env.replies() / "rejected") == ["r2.json", "r2.json.error.json"]
    assert len(await reply_events(env, rid)) == 1


async def test_reply_that_does_not_fit_the_state_is_rejected_409(env: Env) -> None:
    rid = await new_case(env.client, "FR-409s", area="08")
    drop(env.replies(), "close.json", json_reply(rid, "closed", "R-c"))
    await env.scan(processed=1)
    drop(env.replies(), "late.json", json_reply(rid, "received", "R-late"))
    await env.scan(rejected=1)
    doc = error_doc(env, "late.json")
    assert doc["status"] == 409 and [e["loc"] for e in doc["errors"]] == [["status"]]
    assert (await get_case(env.client, rid))["state"] == "closed"


# --- rejections -----------------------------------------------------------------------------------


async def test_schema_error_is_rejected_with_an_error_file_naming_the_field(env: Env) -> None:
    rid = await new_case(env.client, "FR-422", area="08")
    content = json_reply(rid, "bogus", "R-bogus", message=f"{SECRET_TEXT} {TEST_HETU}")
    drop(env.replies(), "bad.json", content)
    await env.scan(processed=0, rejected=1)
    doc = error_doc(env, "bad.json")
    assert doc["status"] == 422
    assert [e["loc"] for e in doc["errors"]] == [["status"]]
    raw = (env.replies() / "rejected" / "bad.json.error.json").read_text("utf-8")
    assert TEST_HETU not in raw and SECRET_TEXT not in raw and "bogus" not in raw
    # The rejected file is kept exactly as the intake wrote it.
    assert (env.replies() / "rejected" / "bad.json").read_text("utf-8") == content
    assert (await get_case(env.client, rid))["state"] == "delivered"


async def test_kind_rule_is_checked_as_for_the_http_api(env: Env) -> None:
    rid = await new_case(env.client, "FR-kind", area="08")  # a support_need
    drop(env.replies(), "ack.json", json_reply(rid, "received", "R-ack"))
    drop(env.replies(), "decision.json", json_reply(rid, "decision_made", "R-dec"))
    os.utime(env.replies() / "ack.json", ns=(1_000_000_000, 1_000_000_000))
    await env.scan(processed=1, rejected=1)
    doc = error_doc(env, "decision.json")
    assert doc["status"] == 422 and [e["type"] for e in doc["errors"]] == ["status_not_for_kind"]


@pytest.mark.parametrize(("content", "status", "type_", "loc"), [
    (b'{"referral_id": "x", "status": ', 400, "json_invalid", []),
    (b'{"reply_id": "R-1", "reply_id": "R-2"}', 400, "json_duplicate_key", []),
    (b'{"referral_id": "6f9619ff-8b86-4011-b42d-00cf4fc964ff", "x": NaN}', 400, "json_invalid", []),
    (b"\xff\xfe{\x00}\x00", 400, "encoding_invalid", []),
    ('{"status": "received", "note": "ä"}'.encode("latin-1"), 400, "encoding_invalid", []),
    (b"[1, 2]", 422, "model_type", []),
    (b'{"reply_id": "R-1", "status": "received", "sent_at": "2026-01-02T10:00:00+02:00"}', 422,
     "missing", ["referral_id"]),
    (b'{"referral_id": 12345, "reply_id": "R-1"}', 422, "uuid_parsing", ["referral_id"]),
    (b"[" * 100_000, 400, "json_too_deep", []),
    (b"", 400, "json_invalid", []),
])
async def test_unreadable_documents_are_rejected(env: Env, content: bytes, status: int, type_: str,
                                                 loc: list[Any]) -> None:
    drop(env.replies(), "x.json", content)
    await env.scan(processed=0, rejected=1, retried=0)
    doc = error_doc(env, "x.json")
    assert doc["status"] == status
    assert [(e["type"], e["loc"]) for e in doc["errors"]] == [(type_, loc)]
    assert (env.replies() / "rejected" / "x.json").read_bytes() == content


async def test_a_lone_surrogate_is_refused_naming_the_field(env: Env) -> None:
    """JSON can spell a lone surrogate ("\\udfff"); it is not text, and must not reach the ledger."""
    rid = await new_case(env.client, "FR-sur", area="08")
    content = json.dumps({"referral_id": rid, **reply_body("received", "R-sur", message="x\udfff")})
    assert "\\udfff" in content
    drop(env.replies(), "sur.json", content)
    await env.scan(processed=0, rejected=1, retried=0)
    doc = error_doc(env, "sur.json")
    assert doc["status"] == 422
    assert [(e["loc"], e["type"]) for e in doc["errors"]] == [(["message"], "string_unicode")]
    assert (await get_case(env.client, rid))["state"] == "delivered"


async def test_xml_errors_name_the_elements(env: Env) -> None:
    rid = await new_case(env.client, "FR-X422", area="90")
    drop(env.replies("90"), "no-worker.xml", xml_reply(rid, "tyontekija_nimetty", "V-1"))
    drop(env.replies("90"), "bad-code.xml", xml_reply(rid, "valmis", "V-2", "<Tuntematon>x</Tuntematon>"))
    drop(env.replies("90"), "no-id.xml", xml_reply(None, "vastaanotettu", "V-3"))
    drop(env.replies("90"), "bad-time.xml", xml_reply(rid, "vastaanotettu", "V-4", sent_at="2026-01-02T10:00:00"))
    drop(env.replies("90"), "laughs.xml", (SAMPLES / "billion_laughs.xml").read_bytes())
    drop(env.replies("90"), "other-root.xml", (SAMPLES / "valid_batch.xml").read_bytes())
    drop(env.replies("90"), "broken.xml", b"<Vastaus xmlns='urn:kela:handoff:vastaus:1'>")
    await env.scan(processed=0, rejected=7)
    no_worker = error_doc(env, "no-worker.xml", "90")
    assert no_worker["status"] == 422
    assert [e["loc"] for e in no_worker["errors"]] == [["Vastaus", "Tyontekija"]]
    bad_code = error_doc(env, "bad-code.xml", "90")
    assert bad_code["status"] == 422
    assert [(e["loc"], e["type"]) for e in bad_code["errors"]] == [
        (["Vastaus", "Tila"], "enum"), (["Vastaus", "Tuntematon"], "extra_forbidden")]
    assert "vastaanotettu" in bad_code["errors"][0]["msg"]  # lists the codes, not the value sent
    assert "valmis" not in json.dumps(bad_code)
    no_id = error_doc(env, "no-id.xml", "90")
    assert [(e["loc"], e["type"]) for e in no_id["errors"]] == [(["Vastaus", "LaheteId"], "missing")]
    bad_time = error_doc(env, "bad-time.xml", "90")
    assert [(e["loc"], e["type"]) for e in bad_time["errors"]] == [(["Vastaus", "Lahetetty"],
                                                                   "timezone_aware")]
    for name, type_ in [("laughs.xml", "dtd_forbidden"), ("other-root.xml", "root_invalid"),
                        ("broken.xml", "xml_malformed")]:
        doc = error_doc(env, name, "90")
        assert doc["status"] == 400 and [e["type"] for e in doc["errors"]] == [type_], name
    assert (await get_case(env.client, rid))["state"] == "delivered"


async def test_a_case_of_another_area_is_404_as_for_an_unknown_one(env: Env) -> None:
    rid90 = await new_case(env.client, "FR-404", area="90")
    drop(env.replies("08"), "theirs.json", json_reply(rid90, "received", "R-x"))
    drop(env.replies("08"), "nobody.json", json_reply(str(uuid.uuid4()), "received", "R-y"))
    drop(env.replies("90"), "nobody.xml", xml_reply(str(uuid.uuid4()), "vastaanotettu", "V-y"))
    await env.scan(processed=0, rejected=3)
    theirs, nobody = error_doc(env, "theirs.json"), error_doc(env, "nobody.json")
    assert theirs["status"] == nobody["status"] == 404
    assert theirs["errors"] == nobody["errors"] == [
        {"loc": ["referral_id"], "msg": "no such referral", "type": "not_found"}]
    assert error_doc(env, "nobody.xml", "90")["errors"][0]["loc"] == ["Vastaus", "LaheteId"]
    assert (await get_case(env.client, rid90))["state"] == "delivered"


async def test_size_limit_is_the_http_body_limit(env: Env) -> None:
    rid = await new_case(env.client, "FR-size", area="08")
    limit = services_of(env.client).settings.server.max_body_bytes
    body = json_reply(rid, "received", "R-big").encode()
    exact = body + b" " * (limit - len(body))
    assert len(exact) == limit == 1024 * 1024
    drop(env.replies(), "big.json", exact + b" ")
    await env.scan(rejected=1, processed=0)
    doc = error_doc(env, "big.json")
    assert doc["status"] == 413 and doc["errors"][0]["type"] == "too_large"
    drop(env.replies(), "exact.json", exact)
    await env.scan(processed=1, rejected=0)
    assert (await get_case(env.client, rid))["state"] == "acknowledged"


# --- partial writes, unreadable files, moves that fail --------------------------------------------


async def test_partial_and_hidden_files_are_ignored_until_renamed(env: Env) -> None:
    rid = await new_case(env.client, "FR-part", area="08")
    replies = env.replies()
    replies.mkdir(parents=True, exist_ok=True)
    content = json_reply(rid, "received", "R-part")
    half = content[: len(content) // 2]
    (replies / ".x.json.partial").write_text(half, "utf-8")
    (replies / ".hidden.json").write_text(half, "utf-8")
    (replies / "y.json.tmp").write_text(half, "utf-8")
    (replies / "z.json.partial").write_text(half, "utf-8")
    (replies / "notes.txt").write_text("muistiinpano", "utf-8")
    before = listing(replies)
    await env.scan(processed=0, duplicate=0, rejected=0, retried=0)
    assert listing(replies) == before
    assert (await get_case(env.client, rid))["state"] == "delivered"
    (replies / ".x.json.partial").write_text(content, "utf-8")  # the writer finishes ...
    os.replace(replies / ".x.json.partial", replies / "x.json")  # ... and renames into place
    await env.scan(processed=1, rejected=0)
    assert listing(replies / "processed") == ["x.json"]
    assert set(listing(replies)) == {".hidden.json", "y.json.tmp", "z.json.partial", "notes.txt",
                                     "processed"}


async def test_unreadable_file_is_rejected_not_retried_forever(env: Env,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Decision: a file the broker may not read is refused (400) into rejected/ with its error file:
    it will not become readable by itself, and rejected/ is where the intake's operators look.
    (Tests run as root, so chmod 000 would not stop a read: os.open is made to refuse instead.)"""
    rid = await new_case(env.client, "FR-perm", area="08")
    drop(env.replies(), "locked.json", json_reply(rid, "received", "R-locked"))
    real_open = os.open

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith("locked.json"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    await env.scan(processed=0, rejected=1, retried=0)
    monkeypatch.undo()
    doc = error_doc(env, "locked.json")
    assert doc["status"] == 400 and doc["errors"][0]["type"] == "file_unreadable"
    assert (env.replies() / "rejected" / "locked.json").exists()
    assert (await get_case(env.client, rid))["state"] == "delivered"


async def test_directories_symlinks_and_fifos_named_like_replies_are_rejected_unread(env: Env) -> None:
    rid = await new_case(env.client, "FR-odd", area="08")
    replies = env.replies()
    (replies / "dir.json").mkdir(parents=True)
    (replies / "dir.json" / "inside.txt").write_text("sisältö", "utf-8")
    target = drop(env.root / "elsewhere", "target.json", json_reply(rid, "received", "R-link"))
    (replies / "link.json").symlink_to(target)
    os.mkfifo(replies / "pipe.xml")
    await asyncio.wait_for(env.scan(processed=0, rejected=3, retried=0), 10)  # a FIFO must not block
    for name in ("dir.json", "link.json", "pipe.xml"):
        doc = error_doc(env, name)
        assert doc["status"] == 400 and doc["errors"][0]["type"] == "not_a_file", name
    assert (replies / "rejected" / "dir.json" / "inside.txt").read_text("utf-8") == "sisältö"
    assert (replies / "rejected" / "link.json").is_symlink()
    assert target.exists()
    assert (await get_case(env.client, rid))["state"] == "delivered"


async def test_a_file_that_cannot_be_moved_stays_and_is_retried(env: Env) -> None:
    rid = await new_case(env.client, "FR-move", area="08")
    replies = env.replies()
    drop(replies, "stuck.json", json_reply(rid, "received", "R-stuck"))
    (replies / "processed").write_text("a file where the directory belongs", "utf-8")
    with capture_logs() as logs:
        await env.scan(processed=0, duplicate=0, rejected=0, retried=1)
    assert (replies / "stuck.json").exists()
    assert next(e for e in logs if e["event"] == "reply_file_move_failed")["file"] == "stuck.json"
    assert (await get_case(env.client, rid))["state"] == "acknowledged"  # applied once already
    os.rename(replies / "processed", env.root / "blocker.txt")  # the operator clears the way
    await env.scan(processed=0, duplicate=1, rejected=0, retried=0)
    assert listing(replies / "processed") == ["stuck.json"]
    assert len(await reply_events(env, rid)) == 1


async def test_a_failure_that_is_not_the_files_leaves_it_in_place(env: Env,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    rid = await new_case(env.client, "FR-db", area="08")
    drop(env.replies(), "later.json", json_reply(rid, "received", "R-later"))
    svc = services_of(env.client)

    async def ledger_down(*_a: Any, **_k: Any) -> Any:
        raise ConnectionError("ledger unreachable")

    monkeypatch.setattr(svc.cases, "apply_reply", ledger_down)
    with capture_logs() as logs:
        await env.scan(processed=0, rejected=0, retried=1)
    assert [e["event"] for e in logs if e["event"].startswith("reply_")] == ["reply_file_failed"]
    assert listing(env.replies()) == ["later.json"]
    monkeypatch.undo()
    await env.scan(processed=1)
    assert (await get_case(env.client, rid))["state"] == "acknowledged"


# --- nothing deleted; logs without content ------------------------------------------------------


async def test_a_mixed_drop_loses_no_file(env: Env) -> None:
    rid = await new_case(env.client, "FR-mix", area="08")
    rid90 = await new_case(env.client, "FR-mix90", area="90")
    replies = env.replies()
    drop(replies, "ok.json", json_reply(rid, "received", "R-ok"))
    drop(replies, "dup.json", json_reply(rid, "received", "R-ok"))
    drop(replies, "conflict.json", json_reply(rid, "received", "R-ok", message="toinen"))
    drop(replies, "bad.json", json_reply(rid, "bogus", "R-bad"))
    drop(replies, "garbage.json", b"\x00\x01 not json")
    drop(replies, "other-area.json", json_reply(rid90, "received", "R-o"))
    drop(replies, "wrong.xml", b"<Vastaus/>")
    (replies / ".pending.json.partial").write_text("{", "utf-8")
    for i, name in enumerate(["ok.json", "dup.json", "conflict.json"]):
        os.utime(replies / name, ns=(10**18 + i, 10**18 + i))
    before = all_files(env.root)
    report = await env.scan(processed=1, duplicate=1, rejected=5, retried=0)
    assert report == ScanReport(processed=1, duplicate=1, rejected=5, retried=0)
    assert all_files(env.root) == before  # every file is still somewhere, under its own name
    assert listing(replies / "processed") == ["dup.json", "ok.json"]
    assert len([n for n in listing(replies / "rejected") if n.endswith(".error.json")]) == 5
    statuses = {n: error_doc(env, n)["status"] for n in
                ["conflict.json", "bad.json", "garbage.json", "other-area.json", "wrong.xml"]}
    assert statuses == {"conflict.json": 409, "bad.json": 422, "garbage.json": 400,
                        "other-area.json": 404, "wrong.xml": 400}
    again = await env.scan(processed=0, duplicate=0, rejected=0, retried=0)
    assert again == ScanReport()
    assert all_files(env.root) == before


async def test_rejected_names_never_overwrite_earlier_rejections(env: Env) -> None:
    for round_ in range(3):
        drop(env.replies(), "same.json", f'{{"round": {round_}')  # malformed each time
        await env.scan(rejected=1)
    rejected = env.replies() / "rejected"
    assert listing(rejected) == ["same.1.json", "same.1.json.error.json", "same.2.json",
                                 "same.2.json.error.json", "same.json", "same.json.error.json"]
    assert [(rejected / n).read_text() for n in ["same.json", "same.1.json", "same.2.json"]] == [
        '{"round": 0', '{"round": 1', '{"round": 2']
    assert error_doc(env, "same.2.json")["file"] == "same.json"  # the name the intake gave it


async def test_logs_name_area_file_and_status_but_no_content(env: Env) -> None:
    rid = await new_case(env.client, "FR-log", area="08")
    message = f"{SECRET_TEXT}, hetu {TEST_HETU}"
    drop(env.replies(), "good.json", json_reply(rid, "received", "R-log", message=message))
    drop(env.replies(), "bad.json", json_reply(rid, "bogus", "R-log2", message=message))
    drop(env.replies(), f"vastaus-{TEST_HETU}.json", b"{broken")
    with capture_logs() as logs:
        await env.scan(processed=1, rejected=2)
    events = {e["event"]: e for e in logs if e["event"].startswith("reply_file_")}
    processed = [e for e in logs if e["event"] == "reply_file_processed"]
    rejected = [e for e in logs if e["event"] == "reply_file_rejected"]
    assert len(processed) == 1 and len(rejected) == 2, events
    assert processed[0]["area"] == "08" and processed[0]["file"] == "good.json"
    assert processed[0]["status"] == 202
    assert {(e["file"], e["status"]) for e in rejected} == {
        ("bad.json", 422), ("vastaus-[redacted-hetu].json", 400)}
    text = repr(logs)
    assert TEST_HETU not in text and SECRET_TEXT not in text
    masked = env.replies() / "rejected" / f"vastaus-{TEST_HETU}.json.error.json"
    doc = json.loads(masked.read_text("utf-8"))
    assert doc["file"] == "vastaus-[redacted-hetu].json"
    assert TEST_HETU not in masked.read_text("utf-8")


async def test_run_loop_keeps_scanning_after_a_failed_scan(env: Env,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    rid = await new_case(env.client, "FR-run", area="08")
    scanner = FileReplyScanner(services_of(env.client).settings, services_of(env.client).cases,
                               poll_interval_s=0.01)
    real_scan = scanner.scan_once
    calls = 0

    async def flaky_scan() -> ScanReport:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("first scan fails")
        return await real_scan()

    monkeypatch.setattr(scanner, "scan_once", flaky_scan)
    drop(env.replies(), "run.json", json_reply(rid, "received", "R-run"))
    task = asyncio.ensure_future(scanner.run())
    try:
        async def acknowledged() -> bool:
            return (await get_case(env.client, rid))["state"] == "acknowledged"
        await wait_for(acknowledged, 10, "the reply applied after a failed scan")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert calls >= 2
    assert listing(env.replies() / "processed") == ["run.json"]


# --- the pure adapter ---------------------------------------------------------------------------


def test_status_codes_cover_every_reply_status() -> None:
    assert sorted(STATUS_CODES.values()) == sorted(ReplyStatus)
    assert all(code.isascii() and code == code.lower() for code in STATUS_CODES)


def test_parse_reply_file_json_takes_referral_id_out() -> None:
    rid = str(uuid.uuid4())
    got = parse_reply_file("A.JSON", json_reply(rid.upper(), "received", "R-1").encode())
    assert got == (rid, reply_body("received", "R-1"))


def test_parse_reply_file_refuses_other_suffixes() -> None:
    with pytest.raises(ReplyFileError) as info:
        parse_reply_file("reply.txt", b"{}")
    assert info.value.type == "file_type" and info.value.malformed


def test_xml_deep_nesting_and_entities_are_refused() -> None:
    deep = (f'<Vastaus xmlns="{NAMESPACE}">' + "<Tyontekija>" * 20 + "</Tyontekija>" * 20
            + "</Vastaus>").encode()
    with pytest.raises(ReplyFileError) as info:
        parse_reply_file("d.xml", deep)
    assert info.value.type == "too_deep"
    with pytest.raises(ReplyFileError) as info:
        parse_reply_file("e.xml", (SAMPLES / "external_entity.xml").read_bytes())
    assert info.value.type == "dtd_forbidden" and info.value.malformed


def test_xml_attributes_and_versions() -> None:
    rid = str(uuid.uuid4())
    ok = xml_reply(rid, "vastaanotettu", "V-1").replace(
        'versio="1"', 'versio="1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="urn:kela:handoff:vastaus:1 vastaus.xsd"')
    assert parse_reply_file("v.xml", ok.encode())[1]["status"] == "received"
    with pytest.raises(ReplyFileError) as info:
        parse_reply_file("v.xml", xml_reply(rid, "vastaanotettu", "V-1").replace('versio="1"',
                                                                                 'versio="2"').encode())
    assert info.value.type == "version_unsupported"
    with pytest.raises(ReplyFileError) as info:
        parse_reply_file("v.xml", xml_reply(rid, "vastaanotettu", "V-1").replace(
            "<Tila>", '<Tila koodi="x">').encode())
    assert info.value.errors == [{"loc": ["Vastaus", "Tila", "@koodi"], "msg": "attribute not permitted",
                                  "type": "extra_forbidden"}]


def test_xml_tokens_are_trimmed_text_is_kept() -> None:
    rid = str(uuid.uuid4())
    raw = xml_reply(f"  {rid}\n", " lisatietoja_pyydetty ", "V-1",
                    "<Kysymys>  Onko vuokrasopimus voimassa?\n</Kysymys>")
    _rid, data = parse_reply_file("v.xml", raw.encode())
    assert _rid == rid
    assert data["status"] == "info_requested" and data["question"] == "  Onko vuokrasopimus voimassa?\n"


def test_error_locations_point_into_the_file() -> None:
    assert file_loc("a.json", ["worker", "name"]) == ["worker", "name"]
    assert file_loc("a.XML", ["worker", "name"]) == ["Vastaus", "Tyontekija", "Nimi"]
    assert reply_xml_loc(["findings", 2]) == ["Vastaus", "Havainnot", "Havainto", 2]
    assert reply_xml_loc(["client_feedback", "rating"]) == ["Vastaus", "AsiakasPalaute", "Arvio"]
    assert reply_xml_loc([]) == ["Vastaus"]


async def test_error_files_never_name_an_identity_code_a_key_holds(env: Env) -> None:
    """A key (JSON) or element name (XML) holding an identity code, in any case and between any
    neighbours, is masked in the `.error.json` `loc`."""
    rid = await new_case(env.client, "FR-KEY", area="08")
    rid90 = await new_case(env.client, "FR-KEY-90", area="90")
    lower = TEST_HETU[:-1] + TEST_HETU[-1].lower()
    keys = [TEST_HETU, lower, TEST_HETU.lower(), f"x{lower}", f"{lower}abc", f"_{TEST_HETU}_"]
    for i, key in enumerate(keys):
        drop(env.replies(), f"k{i}.json", json.dumps(
            {"referral_id": rid, **reply_body("received", f"R-k{i}"), key: "x"}))
    for i, name in enumerate(("x" + lower, "x" + TEST_HETU + "abc")):
        drop(env.replies("90"), f"k{i}.xml",
             xml_reply(rid90, "vastaanotettu", f"R-k{i}", extra=f"<{name}>1</{name}>"))
    await env.scan(processed=0, rejected=len(keys) + 2)
    docs = [(env.replies() / "rejected" / f"k{i}.json.error.json") for i in range(len(keys))]
    docs += [(env.replies("90") / "rejected" / f"k{i}.xml.error.json") for i in range(2)]
    for path in docs:
        text = path.read_text("utf-8")
        assert TEST_HETU.casefold() not in text.casefold(), text
        doc = json.loads(text)
        assert doc["status"] == 422 and "<redacted>" in json.dumps(doc["errors"]), doc
