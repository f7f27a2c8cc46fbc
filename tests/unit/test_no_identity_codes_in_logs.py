"""Identity codes never reach a log event: not from handlers, workers, errors, nor the access log."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import re
import uuid
import warnings
from collections.abc import Callable, Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from broker.devtools.demo_data import make_referral
from broker.observability.logs import configure_logging, redact_identity_codes
from schemas.hetu import IDENTITY_CODE_RE, contains_identity_code, mask_identity_codes
from tests.helpers.app import KELA_TOKEN, auth, base_settings, intake_token
from tests.helpers.support import hetu_with, wait_state


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
    assert not contains_identity_code(blob)
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

    from broker.observability.logs import configure_logging

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


# --- One definition of "an identity code in text" (schemas.hetu), wherever the code stands -----------

_BORN = dt.date(1990, 1, 1)
# Every century sign, each a valid test code (individual number 900-999).
_CODES = [hetu_with(_BORN if sign in "+-UVWXY" else dt.date(2001, 1, 1), sign, 900 + n)
          for n, sign in enumerate("+-UVWXYABCDEF")]


def _placed(code: str) -> list[str]:
    lower = code.lower()
    return [code, lower, f"abc{code}", f"{code}abc", f"abc{lower}xyz", f"_{code}_", f"x{code}9",
            f"/v1/referrals/{code}xyz?q=1", f"GET /v1/referrals/x{lower}x HTTP/1.1",
            repr(f"GET /{code}xyz".encode()), f"ValueError('bad id {code}Ä')",
            f"reply-{code}.json", f"{code[:6]}%2{'B' if code[6] == '+' else 'D'}{code[7:]}"
            if code[6] in "+-" else f"é{code}é"]


@pytest.mark.parametrize("code", _CODES)
def test_a_code_is_masked_wherever_it_stands(code: str) -> None:
    for text in _placed(code):
        masked = mask_identity_codes(text)
        assert contains_identity_code(text), text
        assert IDENTITY_CODE_RE.search(text), text
        assert "[redacted-hetu]" in masked, (text, masked)
        assert code.upper() not in masked.upper() and code[7:10] + code[10] not in masked.upper(), masked
        assert not contains_identity_code(masked)


def test_a_code_in_fullwidth_digits_is_masked_too() -> None:
    wide = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in _CODES[1])
    assert mask_identity_codes(f"id={wide}x") == "id=[redacted-hetu]x"


def test_uuids_and_hashes_keep_their_chance_code_shapes() -> None:
    """About 1 UUID in 100 has a code's shape by chance; ids must stay readable in the log."""
    rng = random.Random(15)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(3000)]
    ids += [hashlib.sha256(str(n).encode()).hexdigest() for n in range(3000)]
    shaped = [i for i in ids if IDENTITY_CODE_RE.search(i)]
    assert len(shaped) > 20, "the sample must hold chance code shapes, or this tests nothing"
    line = " ".join(f"referral_id={i}" for i in ids)
    assert mask_identity_codes(line) == line
    assert not contains_identity_code(line)


def test_a_valid_code_hidden_in_a_uuid_or_glued_to_one_is_masked() -> None:
    code = next(c for c in (hetu_with(_BORN, "-", n) for n in range(900, 1000)) if c[-1] in "0123456789")
    hidden = f"ab{code.lower()}-1234-1234-123456789abc"  # a well-formed UUID holding the code
    assert uuid.UUID(hidden)
    assert mask_identity_codes(hidden) == "[redacted-hetu]"
    glued = f"{uuid.uuid4()}{code}"
    assert code not in mask_identity_codes(glued)
    run_on = "0" * 26 + code  # a hex run that a code's sign and digits continue
    assert code not in mask_identity_codes(run_on)


# --- Every record, structlog's and the standard library's, in both formats, with tracebacks ---------

@pytest.fixture
def configured(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[str], str]]:
    """configure_logging(fmt) for one test; returns a function giving what went to stderr."""
    root = logging.getLogger()
    handlers, level, previous = root.handlers[:], root.level, structlog.get_config()

    def configure(fmt: str) -> str:
        logging.captureWarnings(False)  # an earlier configure_logging may hold pytest's showwarning
        configure_logging("debug", fmt)
        return fmt

    try:
        yield configure
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**previous)
        logging.captureWarnings(False)


def _raise_with(code: str) -> None:
    try:
        raise KeyError(f"no case {code}abc")
    except KeyError as exc:
        raise RuntimeError(f"lookup of x{code.lower()} failed") from exc


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_record_and_traceback_is_redacted(configured, capsys, fmt: str) -> None:
    configured(fmt)
    code, other = _CODES[1], _CODES[7]
    log = structlog.get_logger("test")
    try:
        _raise_with(code)
    except RuntimeError as exc:
        log.exception("lookup_failed", path=f"/v1/referrals/{code}xyz", raw=f"GET /{other}".encode(),
                      error=exc, ids={f"k{code}": [other.lower()]})
        for name in ("aiohttp.server", "asyncpg", "aio_pika.robust_connection", "sqlalchemy.pool.impl"):
            logging.getLogger(name).error("Error handling request %r", f"{code}abc".encode(),
                                          exc_info=exc, stack_info=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"odd value {other}x", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err.count("[redacted-hetu]") >= 12, err
    for c in (code, other):
        assert c.upper() not in err.upper(), err
    assert not contains_identity_code(err)
    # The lines are there, with their tracebacks, only masked.
    assert "lookup_failed" in err and "RuntimeError" in err and "KeyError" in err
    assert err.count("Error handling request") >= 4 and "odd value" in err
    if fmt == "json":
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        first = lines[0]
        assert first["event"] == "lookup_failed" and "Traceback" in first["exception"]
        assert first["path"] == "/v1/referrals/[redacted-hetu]xyz"
        assert {line.get("logger") for line in lines} >= {"aiohttp.server", "asyncpg", "py.warnings"}
        library = [line for line in lines if line["event"].startswith("Error handling request")]
        assert len(library) == 4 and all("Traceback" in line["exception"] for line in library)
        assert all(line["stack_info"].startswith("Stack") for line in library)
