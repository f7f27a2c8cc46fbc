"""HTTP API (DESIGN § 7): thin handlers that authenticate, parse, call the case logic, and answer.

Domain errors are raised, never turned into responses here: `broker.web.errors` maps them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapters.kela.notices_json import MalformedBody, load_json
from adapters.kela.notices_xml import NoticeBatchError, notices_xsd, parse_notices, xml_loc
from broker.cases import body_hash, dump_intake_update, dump_update
from broker.domain.deadlines import compute_deadlines
from broker.domain.errors import (
    Conflict,
    InvalidInput,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from broker.http.openapi import openapi_document
from broker.runtime.services import SERVICES, Services
from broker.security.audit import Actor, AuditEntry, append_alone
from broker.security.auth import PRINCIPAL, Principal
from broker.store.ledger import CaseRow, utcnow
from broker.store.statistics import compute_statistics, parse_stats_query, rows_to_csv
from broker.web.cursors import decode_cursor, encode_cursor, parse_position
from broker.web.errors import REQUEST_ID
from schemas.enums import CaseState
from schemas.errors import ErrorItem, SchemaError, redact_identity_codes, safe_loc
from schemas.export import SCHEMAS, json_schema
from schemas.models import Referral
from schemas.rules import parse_answer, parse_referral

__all__ = ["routes"]

routes = web.RouteTableDef()

JSON_TYPES = ("application/json",)
MAX_LIMIT = 500


def _svc(request: web.Request) -> Services:
    return request.app[SERVICES]


async def _principal(request: web.Request, *roles: str) -> Principal:
    svc = _svc(request)
    principal = await svc.tokens.authenticate(request.headers.get("Authorization"))
    request[PRINCIPAL] = principal
    return svc.tokens.require(principal, *roles)


def _actor(request: web.Request, principal: Principal) -> Actor:
    return Actor(principal.party_id, principal.role, request.get(REQUEST_ID))


async def read_body(request: web.Request, content_types: tuple[str, ...] = JSON_TYPES) -> bytes:
    """Read at most max_body_bytes (exactly 1 MiB is accepted, one byte more is a 413)."""
    limit = _svc(request).settings.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    if request.content_type not in content_types:
        raise UnsupportedMediaType(f"Content-Type must be {' or '.join(content_types)}")
    chunks, size = [], 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: web.Request) -> Any:
    """Every JSON body of the API is decoded here: UTF-8, no repeated keys, nesting bounded."""
    raw = await read_body(request)
    try:
        return load_json(raw)
    except MalformedBody as exc:
        raise MalformedRequest(exc.message) from None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False,
                                                                             default=str))


def _limit(request: web.Request, default: int = 100) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    limit = parse_position(raw)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput([{"loc": ["query", "limit"], "msg": f"limit must be 1..{MAX_LIMIT}",
                             "type": "limit_invalid"}])
    return limit


async def _refuse_invalid(request: web.Request, principal: Principal, action: str,
                          referral_id: str | None, exc: SchemaError) -> InvalidInput:
    """A body refused before it reached the case logic still leaves its audit record."""
    await append_alone(_svc(request).ledger, _actor(request, principal),
                       [AuditEntry(action, referral_id, "invalid")], utcnow())
    return InvalidInput(exc.errors)


def case_summary(case: CaseRow) -> dict[str, Any]:
    return {"referral_id": case.referral_id, "kela_reference": case.kela_reference,
            "state": case.state, "area": case.area, "kind": case.kind, "urgency": case.urgency,
            "received_at": case.received_at.isoformat(),
            # A purged case (retention) has `referral: {}` and minimised events; this says why.
            "purged_at": case.purged_at.isoformat() if case.purged_at else None}


# --- Kela ------------------------------------------------------------------------------------


@routes.post("/v1/referrals", name="post_referral")
async def post_referral(request: web.Request) -> web.Response:
    svc = _svc(request)
    principal = await _principal(request, "kela")
    data = await read_json(request)
    try:
        referral = parse_referral(data)
    except SchemaError as exc:
        svc.metrics.validation_rejections.labels(channel="api").inc()
        raise await _refuse_invalid(request, principal, "referral_received", None, exc) from None
    try:
        result = await svc.cases.accept_referral(_actor(request, principal), referral,
                                                 referral_hash(referral))
    except InvalidInput:
        svc.metrics.validation_rejections.labels(channel="api").inc()
        raise
    if result.created:
        svc.metrics.referrals_received.labels(kind=referral.kind.value, channel="api").inc()
    return _json(result.body(), 202 if result.created else 200)


def referral_hash(referral: Referral) -> str:
    """Idempotency compares meaning, so the same notice sent as JSON or as XML is one referral."""
    return body_hash(referral.model_dump(mode="json", exclude={"referral_id", "received_at"}))


XML_TYPES = ("application/xml", "text/xml")


def _safe_errors(errors: list[ErrorItem]) -> list[ErrorItem]:
    return [{**e, "loc": safe_loc(e["loc"])} for e in errors]


@routes.post("/v1/kela/notices", name="post_notices")
async def post_notices(request: web.Request) -> web.Response:
    """A batch of Kela notices in XML: 207 with one result per notice, each applied on its own."""
    svc = _svc(request)
    principal = await _principal(request, "kela")
    raw = await read_body(request, XML_TYPES)
    try:
        notices = parse_notices(raw, max_bytes=svc.settings.server.max_body_bytes)
    except NoticeBatchError as exc:
        if exc.code == "too_large":
            raise PayloadTooLarge(exc.message) from None
        raise MalformedRequest(f"{exc.code}: {exc.message}") from None
    results: list[dict[str, Any]] = []
    for notice in notices:
        # The reference is whatever Kela wrote in <KelanViite>: named back, but never a code in it.
        reference = (redact_identity_codes(notice.kela_reference)
                     if isinstance(notice.kela_reference, str) else notice.kela_reference)
        item: dict[str, Any] = {"index": notice.index, "kela_reference": reference}
        if notice.referral is None:
            svc.metrics.validation_rejections.labels(channel="xml").inc()
            results.append({**item, "status": 422, "errors": _safe_errors(notice.errors)})
            continue
        try:
            accepted = await svc.cases.accept_referral(_actor(request, principal), notice.referral,
                                                       referral_hash(notice.referral))
        except InvalidInput as exc:
            svc.metrics.validation_rejections.labels(channel="xml").inc()
            errors: list[ErrorItem] = [{**e, "loc": ["Ilmoitus", notice.index, *xml_loc(e["loc"])]}
                                       for e in exc.errors]
            results.append({**item, "status": 422, "errors": _safe_errors(errors)})
            continue
        except Conflict as exc:
            results.append({**item, "status": 409,
                            "error": {"code": exc.code, "message": exc.message}})
            continue
        if accepted.created:
            svc.metrics.referrals_received.labels(kind=notice.referral.kind.value, channel="xml").inc()
        results.append({**item, "status": 202 if accepted.created else 200, **accepted.body()})
    return _json({"results": results}, 207)


@routes.get("/v1/schema/kela-notices.xsd", name="get_notices_xsd")
async def get_notices_xsd(_request: web.Request) -> web.Response:
    return web.Response(body=notices_xsd(), content_type="application/xml", charset="utf-8")


@routes.post("/v1/referrals/{referral_id}/answers", name="post_answer")
async def post_answer(request: web.Request) -> web.Response:
    svc = _svc(request)
    principal = await _principal(request, "kela")
    referral_id = request.match_info["referral_id"]
    data = await read_json(request)
    try:
        answer = parse_answer(data)
    except SchemaError as exc:
        raise await _refuse_invalid(request, principal, "answer_applied", referral_id, exc
                                    ) from None
    # Another sender's case is the same 404 as a missing one (unless Kela's central reader asks).
    result = await svc.cases.apply_answer(referral_id, answer, body_hash(data),
                                          actor=_actor(request, principal),
                                          sender=principal.own_sender)
    return _json(result.body, 202 if result.created else 200)


@routes.get("/v1/updates", name="get_updates")
async def get_updates(request: web.Request) -> web.Response:
    svc = _svc(request)
    principal = await _principal(request, "kela")
    after = decode_cursor("u", request.query.get("after"))
    # A Kela party reads the entries of the cases it sent; Kela's central reader the whole feed.
    rows = await svc.ledger.feed(after, _limit(request), sender=principal.own_sender)
    await svc.cases.record_reads(_actor(request, principal), "feed_read",
                                 [r["referral_id"] for r in rows])
    items = [dump_update(r) for r in rows]
    for item in items:
        item["cursor"] = encode_cursor("u", int(item["cursor"]))
    last = int(rows[-1]["seq"]) if rows else after
    return _json({"items": items, "next": encode_cursor("u", last)})


# --- everyone with a stake in the case ---------------------------------------------------------


@routes.get("/v1/referrals/{referral_id}", name="get_referral")
async def get_referral(request: web.Request) -> web.Response:
    svc = _svc(request)
    principal = await _principal(request, "kela", "intake", "admin")
    # An intake of another area, and a Kela party asking for another sender's case (unless it is
    # Kela's central reader), get the same 404 as for an id that does not exist.
    found = await svc.cases.read_case(request.match_info["referral_id"], _actor(request, principal),
                                      area=principal.area if principal.role == "intake" else None,
                                      sender=principal.own_sender)
    if found is None:
        raise NotFound("no such referral")
    case = found[0]
    body = {**case_summary(case), "referral": case.referral(), "events": found[1],
            "deadlines": _deadlines(svc, case), "unroutable_reason": case.unroutable_reason}
    return _json(body)


def _deadlines(svc: Services, case: CaseRow) -> list[dict[str, str]]:
    return [{"name": d.name, "due_at": d.due_at.isoformat()}
            for d in compute_deadlines(case.received_at, case.kind, case.urgency, svc.settings.sla)]


# --- municipal intake -----------------------------------------------------------------------------

INBOX_STATES = {s.value for s in CaseState}


@routes.get("/v1/inbox", name="get_inbox")
async def get_inbox(request: web.Request) -> web.Response:
    svc = _svc(request)
    principal = await _principal(request, "intake")
    assert principal.area is not None
    states = request.query.get("state", "delivered").split(",")
    if not all(s in INBOX_STATES for s in states):
        raise InvalidInput([{"loc": ["query", "state"], "msg": "unknown case state",
                             "type": "enum"}])
    limit = _limit(request)
    after = decode_cursor("i", request.query.get("after"))
    rows = await svc.ledger.inbox(principal.area, states, after, limit + 1)
    page, more = rows[:limit], len(rows) > limit
    await svc.cases.record_fetch([c.referral_id for c in page], area=principal.area,
                                 actor=_actor(request, principal))
    latest = await svc.ledger.latest_events([c.referral_id for c in page])
    items = [{**case_summary(c), "referral": c.referral(),
              "deadlines": _deadlines(svc, c), "latest_event": latest.get(c.referral_id)}
             for c in page]
    return _json({"items": items, "next": encode_cursor("i", page[-1].pk) if more else None})


@routes.get("/v1/intake/updates", name="get_intake_updates")
async def get_intake_updates(request: web.Request) -> web.Response:
    """The area's intake feed: the cursor rules of `/v1/updates` (`next` is always the cursor to
    resume from; an empty page means caught up). Intake tokens only, their own area."""
    svc = _svc(request)
    principal = await _principal(request, "intake")
    assert principal.area is not None
    after = decode_cursor("n", request.query.get("after"))
    rows = await svc.ledger.intake_feed(principal.area, after, _limit(request))
    await svc.cases.record_reads(_actor(request, principal), "intake_feed_read",
                                 [r["referral_id"] for r in rows])
    items = [dump_intake_update(r) for r in rows]
    for item in items:
        item["cursor"] = encode_cursor("n", int(item["cursor"]))
    last = int(rows[-1]["seq"]) if rows else after
    return _json({"items": items, "next": encode_cursor("n", last)})


@routes.post("/v1/referrals/{referral_id}/replies", name="post_reply")
async def post_reply(request: web.Request) -> web.Response:
    svc = _svc(request)
    principal = await _principal(request, "intake")
    data = await read_json(request)
    result = await svc.cases.apply_reply(request.match_info["referral_id"], data,
                                         actor=_actor(request, principal), area=principal.area)
    return _json(result.body, 202 if result.created else 200)


# --- operators --------------------------------------------------------------------------------


@routes.get("/v1/admin/dead-letters", name="get_dead_letters")
async def get_dead_letters(request: web.Request) -> web.Response:
    svc = _svc(request)
    principal = await _principal(request, "admin")
    limit = _limit(request)
    after = decode_cursor("d", request.query.get("after"))
    rows = await svc.ledger.list_dead_letters(after, limit + 1)
    page, more = rows[:limit], len(rows) > limit
    await svc.cases.record_reads(_actor(request, principal), "dead_letter_read",
                                 [r["referral_id"] for r in page])
    items = [{"id": r["id"], "event_id": r["event_id"], "referral_id": r["referral_id"],
              "area": r["area"], "queue": r["queue"], "reason": r["reason"],
              "attempts": r["attempts"], "created_at": r["created_at"].isoformat()} for r in page]
    return _json({"items": items, "next": encode_cursor("d", page[-1]["id"]) if more else None})


@routes.post("/v1/admin/dead-letters/{dl_id}/replay", name="replay_dead_letter")
async def replay_dead_letter(request: web.Request) -> web.Response:
    svc = _svc(request)
    principal = await _principal(request, "admin")
    dl_id = parse_position(request.match_info["dl_id"])
    if dl_id is None:
        raise NotFound("no such dead letter")
    return _json(await svc.cases.replay_dead_letter(dl_id, actor=_actor(request, principal)), 202)


@routes.post("/v1/admin/referrals/{referral_id}/route", name="admin_route")
async def admin_route(request: web.Request) -> web.Response:
    svc = _svc(request)
    principal = await _principal(request, "admin")
    data = await read_json(request)
    if not isinstance(data, dict) or not isinstance(data.get("area"), str):
        raise InvalidInput([{"loc": ["area"], "msg": "area (string) is required", "type": "missing"}])
    extra = sorted(set(data) - {"area"})
    if extra:
        raise InvalidInput([{"loc": [extra[0]], "msg": "Extra inputs are not permitted",
                             "type": "extra_forbidden"}])
    result = await svc.cases.admin_route(request.match_info["referral_id"], data["area"],
                                         actor=_actor(request, principal))
    return _json(result, 202)


@routes.get("/v1/statistics", name="get_statistics")
async def get_statistics(request: web.Request) -> web.Response:
    """§ 11 statistics: admin and Kela see every area, an intake its own area only."""
    svc = _svc(request)
    principal = await _principal(request, "admin", "kela", "intake")
    query = parse_stats_query(dict(request.query), svc.classification,
                              own_area=principal.area if principal.role == "intake" else None)
    rows = await compute_statistics(svc.ledger, svc.classification, query)
    if query.format == "csv":
        return web.Response(text=rows_to_csv(rows), content_type="text/csv", charset="utf-8")
    return _json({"items": rows})


# --- public ---------------------------------------------------------------------------------------


@routes.get("/v1/schema/{name}.json", name="get_schema")
async def get_schema(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in SCHEMAS:
        raise NotFound("no such schema")
    return _json(json_schema(name))


@routes.get("/v1/openapi.json", name="get_openapi")
async def get_openapi(_request: web.Request) -> web.Response:
    return _json(openapi_document())


@routes.get("/healthz", name="healthz")
async def healthz(_request: web.Request) -> web.Response:
    return _json({"status": "ok"})


@routes.get("/readyz", name="readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready means "send me referrals": the ledger answers and the process accepts. A transport
    that is down does not make a replica unready, because the outbox holds what is accepted until
    the broker is back; pulling every replica then would turn a broker outage into an intake outage.
    The body (and `handoff_transport_connected`) says the transport is degraded."""
    svc = _svc(request)
    store, transport = await asyncio.gather(svc.ledger.ping(), svc.transport.is_ready())
    ready = store and svc.accepting
    degraded = [] if transport else ["transport"]
    status = "not_ready" if not ready else "degraded" if degraded else "ready"
    return _json({"status": status, "store": store, "transport": transport,
                  "degraded": degraded, "accepting": svc.accepting}, 200 if ready else 503)


@routes.get("/metrics", name="metrics")
async def metrics(request: web.Request) -> web.Response:
    svc = _svc(request)
    svc.metrics.transport_connected.set(1 if await svc.transport.is_ready() else 0)
    await svc.metrics.gauges.refresh(svc.ledger)
    body = generate_latest(svc.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
