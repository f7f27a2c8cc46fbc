"""OpenAPI 3.1 description of the HTTP API (DESIGN § 7), served at `GET /v1/openapi.json`.

The request bodies come from the pydantic models, so the document cannot drift from what the service
validates; the small response shapes are written out here and held to the live service by
`tests/test_openapi.py`.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from schemas.models import Answer, Referral, Reply

__all__ = ["openapi_document"]

REF = "#/components/schemas/{model}"
JSON = "application/json"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def _model_schemas() -> dict[str, Schema]:
    """Referral, Reply and Answer with their nested models and enums hoisted into components."""
    out: dict[str, Schema] = {}
    for model in (Referral, Reply, Answer):
        schema = model.model_json_schema(mode="validation", ref_template=REF)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


_ERROR_ITEM: Schema = {
    "type": "object",
    "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
    },
}

_NULLABLE_STRING: Schema = {"type": ["string", "null"]}
_CURSOR: Schema = {"type": "string", "description": "Opaque, URL-safe cursor."}


_DEADLINES: Schema = {"type": "array", "items": {
    "type": "object", "required": ["name", "due_at"],
    "properties": {"name": {"type": "string"}, "due_at": {"type": "string", "format": "date-time"}},
}}


def _page(items: Schema, *, next_nullable: bool) -> Schema:
    return {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": items},
            "next": _NULLABLE_STRING if next_nullable else _CURSOR,
        },
    }


def _response_schemas() -> dict[str, Schema]:
    case_summary: Schema = {
        "type": "object",
        "required": ["referral_id", "kela_reference", "state", "area", "kind", "urgency",
                     "received_at"],
        "properties": {
            "referral_id": {"type": "string"},
            "kela_reference": {"type": "string"},
            "state": {"type": "string"},
            "area": _NULLABLE_STRING,
            "kind": {"type": "string"},
            "urgency": {"type": "string"},
            "received_at": {"type": "string", "format": "date-time"},
            "purged_at": {**_NULLABLE_STRING, "description":
                          "Set once retention removed the case's personal data: `referral` is then "
                          "{} and events keep only codes (marked `purged: true`)."},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": _ref("ErrorBody")},
        },
        "ErrorBody": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
        "ErrorItem": _ERROR_ITEM,
        "ValidationErrors": {
            "type": "object",
            "required": ["errors"],
            "properties": {"errors": {"type": "array", "items": _ref("ErrorItem")}},
        },
        "AcceptResult": {
            "type": "object",
            "required": ["referral_id", "state", "area"],
            "properties": {
                "referral_id": {"type": "string"},
                "state": {"type": "string", "description": "State after routing: routed or unroutable."},
                "area": _NULLABLE_STRING,
                "reason": {"type": "string"},
            },
        },
        "ReplyResult": {
            "type": "object",
            "required": ["referral_id", "state", "area"],
            "properties": {
                "referral_id": {"type": "string"},
                "reply_id": {"type": "string"},
                "answer_id": {"type": "string"},
                "state": {"type": "string"},
                "area": _NULLABLE_STRING,
            },
        },
        "CaseSummary": case_summary,
        "Case": {
            "allOf": [_ref("CaseSummary")],
            "type": "object",
            "required": ["referral", "events", "deadlines"],
            "properties": {
                "referral": {"type": "object"},
                "events": {"type": "array", "items": {
                    "type": "object", "required": ["type", "at"],
                    "properties": {"type": {"type": "string"}, "at": {"type": "string"}},
                }},
                "deadlines": _DEADLINES,
                "unroutable_reason": _NULLABLE_STRING,
            },
        },
        "InboxItem": {
            "allOf": [_ref("CaseSummary")],
            "type": "object",
            "required": ["referral", "deadlines", "latest_event"],
            "properties": {
                "referral": {"type": "object"},
                "deadlines": _DEADLINES,
                "latest_event": {
                    "type": ["object", "null"], "required": ["type", "at"],
                    "description": "The case's latest event (inbox reads left out).",
                    "properties": {"type": {"type": "string"},
                                   "at": {"type": "string", "format": "date-time"}},
                },
            },
        },
        "InboxPage": _page(_ref("InboxItem"), next_nullable=True),
        "IntakeUpdate": {
            "type": "object",
            "required": ["cursor", "referral_id", "type", "at", "area"],
            "properties": {
                "cursor": _CURSOR,
                "referral_id": {"type": "string"},
                "type": {"type": "string", "enum": ["answer", "escalation", "rerouted_in",
                                                    "rerouted_out", "delivered"]},
                "at": {"type": "string", "format": "date-time"},
                "area": {"type": "string", "description": "The reading token's area."},
                "answer_id": {"type": "string"},
                "event_id": {"type": "string"},
                "state": {"type": "string"},
                "deadline": {"type": "string"},
                "due_at": {"type": "string", "format": "date-time"},
                "from_area": _NULLABLE_STRING,
                "to_area": {"type": "string"},
                "via": {"type": "string"},
                "message_id": {"type": "string"},
            },
        },
        "IntakeUpdatesPage": _page(_ref("IntakeUpdate"), next_nullable=False),
        "Update": {
            "type": "object",
            "required": ["cursor", "referral_id", "kela_reference", "type"],
            "properties": {
                "cursor": _CURSOR,
                "referral_id": {"type": "string"},
                "kela_reference": {"type": "string"},
                "type": {"type": "string",
                         "description": "reply, escalation, rerouted, unroutable, delivery_failed, ..."},
            },
        },
        "UpdatesPage": _page(_ref("Update"), next_nullable=False),
        "DeadLetter": {
            "type": "object",
            "required": ["id", "event_id", "referral_id", "area", "queue", "reason", "attempts",
                         "created_at"],
            "properties": {
                "id": {"type": "integer"},
                "event_id": {"type": "string"},
                "referral_id": _NULLABLE_STRING,
                "area": _NULLABLE_STRING,
                "queue": {"type": "string"},
                "reason": {"type": "string"},
                "attempts": {"type": "integer"},
                "created_at": {"type": "string", "format": "date-time"},
            },
        },
        "DeadLettersPage": _page(_ref("DeadLetter"), next_nullable=True),
        "ReplayResult": {
            "type": "object",
            "required": ["id", "event_id"],
            "properties": {"id": {"type": "integer"}, "event_id": {"type": "string"},
                           "referral_id": _NULLABLE_STRING},
        },
        "RouteRequest": {
            "type": "object",
            "required": ["area"],
            "additionalProperties": False,
            "properties": {"area": {"type": "string", "description": "Area code, e.g. 08."}},
        },
        "NoticeResult": {
            "type": "object",
            "required": ["index", "kela_reference", "status"],
            "properties": {
                "index": {"type": "integer"},
                "kela_reference": _NULLABLE_STRING,
                "status": {"type": "integer", "enum": [200, 202, 409, 422]},
                "referral_id": {"type": "string"},
                "state": {"type": "string"},
                "area": _NULLABLE_STRING,
                "errors": {"type": "array", "items": _ref("ErrorItem")},
                "error": _ref("ErrorBody"),
            },
        },
        "NoticeResults": {
            "type": "object",
            "required": ["results"],
            "properties": {"results": {"type": "array", "items": _ref("NoticeResult")}},
        },
        "Statistics": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": {"type": "object"}}},
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["ok"]}},
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "store", "transport", "degraded", "accepting"],
            "properties": {
                "status": {"type": "string", "enum": ["ready", "degraded", "not_ready"],
                           "description": "`degraded`: ready for intake while a dependency that "
                                          "the outbox covers (the transport) is down."},
                "store": {"type": "boolean"},
                "transport": {"type": "boolean"},
                "degraded": {"type": "array", "items": {"type": "string", "enum": ["transport"]}},
                "accepting": {"type": "boolean"},
            },
        },
    }


# --- operations ---------------------------------------------------------------------------------


def _json_response(description: str, schema: str | Schema) -> Schema:
    body = _ref(schema) if isinstance(schema, str) else schema
    return {"description": description, "content": {JSON: {"schema": body}}}


def _error(description: str) -> Schema:
    return _json_response(description, "Error")


_VALIDATION = _json_response("Invalid input: one item per problem; never echoes the input.",
                             "ValidationErrors")
_RETRY_AFTER = {"Retry-After": {"description": "Whole seconds to wait before trying again.",
                                 "schema": {"type": "integer", "minimum": 1}}}
_AUTH = {"401": _error("Missing, unknown, expired or revoked bearer token."),
         "403": _error("The token's role may not call this operation."),
         "429": {**_error("Over the party's rate limit (`[server] rate_limit_per_s`, per process), "
                          "or, for a wrong token, over the client address's limit of failed "
                          "authentications."),
                 "headers": _RETRY_AFTER}}
_BODY = {"400": _error("The body is not well-formed."),
         "408": _error("The body did not arrive within `[server] read_timeout_s`."),
         "413": _error("The body is larger than 1 MiB (exactly 1,048,576 bytes is accepted)."),
         "415": _error("Unsupported Content-Type.")}
_NOT_FOUND = {"404": _error("No such resource (or not visible to this party).")}
_KELA_SCOPE = ("A Kela party sees the cases it sent; only Kela's central reader (`central_reader = "
               "true` on the party, or `handoff token create --central-reader`) sees every "
               "sender's. Another sender's case is the same 404 as an id that does not exist.")


def _path_param(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


def _query(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_REFERRAL_ID = _path_param("referral_id", "The broker's referral id.")
_AFTER = _query("after", "Cursor from a previous page's `next`.")
_LIMIT = _query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 500,
                                        "default": 100})


def _json_body(schema: str | Schema) -> Schema:
    body = _ref(schema) if isinstance(schema, str) else schema
    return {"required": True, "content": {JSON: {"schema": body}}}


_UNAVAILABLE = {"503": {**_error("The ledger is unavailable (down, frozen past the store's "
                                  "deadlines, or its disk full); nothing was done. Retry after "
                                  "`Retry-After` seconds."), "headers": _RETRY_AFTER}}


def _op(operation_id: str, summary: str, responses: dict[str, Any], *, tags: list[str],
        public: bool = False, **extra: Any) -> Schema:
    op: Schema = {"operationId": operation_id, "summary": summary, "tags": tags, **extra,
                  "responses": responses if public else {**_UNAVAILABLE, **responses, **_AUTH}}
    if public:
        op["security"] = []
    return op


def _paths() -> dict[str, Schema]:
    return {
        "/v1/referrals": {"post": _op(
            "post_referral", "Send a referral (Kela).", tags=["kela"],
            requestBody=_json_body("Referral"),
            responses={
                "202": _json_response("Accepted and routed (or unroutable).", "AcceptResult"),
                "200": _json_response("The same kela_reference with the same body: the first result.",
                                      "AcceptResult"),
                "409": _error("The same kela_reference with a different body."),
                "422": _VALIDATION, **_BODY,
            })},
        "/v1/kela/notices": {"post": _op(
            "post_notices", "Send a batch of Kela notices in XML (Kela).", tags=["kela"],
            requestBody={"required": True, "content": {
                media: {"schema": {"type": "string",
                                   "description": "A notice batch valid against "
                                                  "/v1/schema/kela-notices.xsd."}}
                for media in ("application/xml", "text/xml")}},
            responses={"207": _json_response("One result per notice, each applied on its own.",
                                             "NoticeResults"), **_BODY})},
        "/v1/referrals/{referral_id}": {"get": _op(
            "get_referral", "Read a case with its events and deadlines (Kela, owning area, admin).",
            description=_KELA_SCOPE + " An intake of another area gets that 404 too.",
            tags=["kela", "intake", "admin"], parameters=[_REFERRAL_ID],
            responses={"200": _json_response("The case.", "Case"), **_NOT_FOUND})},
        "/v1/referrals/{referral_id}/answers": {"post": _op(
            "post_answer", "Answer an intake's information request (Kela).", tags=["kela"],
            description=_KELA_SCOPE,
            parameters=[_REFERRAL_ID], requestBody=_json_body("Answer"),
            responses={
                "202": _json_response("Applied.", "ReplyResult"),
                "200": _json_response("The same answer_id with the same body: the first result.",
                                      "ReplyResult"),
                "409": _error("The case is not waiting for an answer, or the same answer_id "
                              "with a different body."),
                "422": _VALIDATION, **_NOT_FOUND, **_BODY,
            })},
        "/v1/updates": {"get": _op(
            "get_updates", "The replies feed, for a Kela side that pulls (Kela).", tags=["kela"],
            description="A Kela party reads the entries of the cases it sent; Kela's central reader "
                        "(`central_reader = true`) reads the whole feed. Cursors work alike.",
            parameters=[_AFTER, _LIMIT],
            responses={"200": _json_response("A page; `next` is always the cursor to resume from.",
                                             "UpdatesPage"), "422": _VALIDATION})},
        "/v1/inbox": {"get": _op(
            "get_inbox", "Referrals to handle in the token's own area (intake).", tags=["intake"],
            parameters=[
                _query("state", "Comma-separated case states.", {"type": "string",
                                                                 "default": "delivered"}),
                _LIMIT, _AFTER,
            ],
            responses={"200": _json_response("A page; `next` is null on the last page.", "InboxPage"),
                       "422": _VALIDATION})},
        "/v1/intake/updates": {"get": _op(
            "get_intake_updates", "The intake feed of the token's own area (intake).",
            tags=["intake"],
            description="Kela's answers to information requests (`answer`), escalations of the SLA "
                        "clock (`escalation`), re-routings out of and into the area "
                        "(`rerouted_out`, `rerouted_in`) and deliveries of referrals (`delivered`). "
                        "Ids, types, areas, times and deadline names only; the case itself is "
                        "`GET /v1/referrals/{id}`. Cursors work as in `/v1/updates`. Kela and "
                        "admin tokens get 403.",
            parameters=[_AFTER, _LIMIT],
            responses={"200": _json_response("A page; `next` is always the cursor to resume from.",
                                             "IntakeUpdatesPage"), "422": _VALIDATION})},
        "/v1/referrals/{referral_id}/replies": {"post": _op(
            "post_reply", "Reply to a referral (intake of the case's current area).",
            tags=["intake"], parameters=[_REFERRAL_ID], requestBody=_json_body("Reply"),
            responses={
                "202": _json_response("Applied.", "ReplyResult"),
                "200": _json_response("The same reply_id with the same body: the first result.",
                                      "ReplyResult"),
                "409": _error("The status does not fit the case's state, or the same reply_id "
                              "with a different body."),
                "422": _VALIDATION, **_NOT_FOUND, **_BODY,
            })},
        "/v1/admin/dead-letters": {"get": _op(
            "get_dead_letters", "List dead letters (admin).", tags=["admin"],
            parameters=[_LIMIT, _AFTER],
            responses={"200": _json_response("A page; `next` is null on the last page.",
                                             "DeadLettersPage"), "422": _VALIDATION})},
        "/v1/admin/dead-letters/{dl_id}/replay": {"post": _op(
            "replay_dead_letter", "Replay a dead letter (admin).", tags=["admin"],
            parameters=[_path_param("dl_id", "Dead letter id.", {"type": "string",
                                                                 "pattern": "^[0-9]+$"})],
            responses={"202": _json_response("Queued again.", "ReplayResult"), **_NOT_FOUND,
                       "409": _error("The dead letter was already replayed.")})},
        "/v1/admin/referrals/{referral_id}/route": {"post": _op(
            "admin_route", "Re-route a returned, unroutable or failed case by hand (admin).",
            tags=["admin"], parameters=[_REFERRAL_ID], requestBody=_json_body("RouteRequest"),
            responses={"202": _json_response("Re-routed.", "AcceptResult"), **_NOT_FOUND,
                       "409": _error("The case is not in a state that can be re-routed."),
                       "422": _VALIDATION, **_BODY})},
        "/v1/statistics": {"get": _op(
            "get_statistics", "Monthly statistics (admin, Kela; an intake: its own area).",
            description="Aggregates: every Kela party sees every area and every sender's cases.",
            tags=["kela", "intake", "admin"],
            parameters=[
                _query("from", "First month, YYYY-MM.", {"type": "string"}),
                _query("to", "Last month, YYYY-MM.", {"type": "string"}),
                _query("area", "Area code.", {"type": "string"}),
                _query("format", "Response format.", {"type": "string", "enum": ["json", "csv"],
                                                      "default": "json"}),
            ],
            responses={"200": {"description": "One row per month and area.", "content": {
                JSON: {"schema": _ref("Statistics")},
                "text/csv": {"schema": {"type": "string"}}}}, "422": _VALIDATION})},
        "/v1/schema/{name}.json": {"get": _op(
            "get_schema", "JSON Schema of the common schema v1.", tags=["public"], public=True,
            parameters=[_path_param("name", "Schema name.",
                                    {"type": "string", "enum": ["referral", "reply", "answer"]})],
            responses={"200": _json_response("A JSON Schema (draft 2020-12).", {"type": "object"}),
                       **_NOT_FOUND})},
        "/v1/schema/kela-notices.xsd": {"get": _op(
            "get_notices_xsd", "XML Schema of a Kela notice batch.", tags=["public"], public=True,
            responses={"200": {"description": "The XSD.",
                               "content": {"application/xml": {"schema": {"type": "string"}}}}})},
        "/v1/openapi.json": {"get": _op(
            "get_openapi", "This document.", tags=["public"], public=True,
            responses={"200": _json_response("OpenAPI 3.1 document.", {"type": "object"})})},
        "/healthz": {"get": _op(
            "healthz", "Liveness.", tags=["public"], public=True,
            responses={"200": _json_response("The process is up.", "Health")})},
        "/readyz": {"get": _op(
            "readyz", "Readiness for intake: the ledger answers (within 1.5 s) and the process "
            "accepts. A transport that is down makes it `degraded`, not unready: the outbox holds "
            "what is accepted until the broker is back.", tags=["public"],
            public=True,
            responses={"200": _json_response("Ready, or degraded.", "Readiness"),
                       "503": _json_response("Not ready.", "Readiness")})},
        "/metrics": {"get": _op(
            "metrics", "Prometheus metrics.", tags=["public"], public=True,
            responses={"200": {"description": "Prometheus text exposition format.",
                               "content": {"text/plain": {"schema": {"type": "string"}}}}})},
    }


@cache
def _document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kela-handoff",
            "version": "1",
            "description": "Hand-off of Kela referrals to municipal social services (DESIGN § 7).",
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "security": [{"bearer": []}],
        "tags": [{"name": t} for t in ("kela", "intake", "admin", "public")],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "Per-party token from the configuration."}},
            "schemas": {**_model_schemas(), **_response_schemas()},
        },
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may mutate it)."""
    return copy.deepcopy(_document())

