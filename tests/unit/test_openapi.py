"""The OpenAPI document (`GET /v1/openapi.json`): valid OpenAPI 3.1, complete, and true to the service.

Completeness is checked against the routes the aiohttp app registers; truth is checked by schemathesis
against the real app (SQLite ledger, embedded transport) listening on a real port: no generated request
may produce a 5xx, and every response must match the status codes, content types and schemas the
document promises.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from broker.http.openapi import openapi_document
from broker.runtime.app import create_app
from tests.helpers.app import ADMIN_TOKEN, KELA_TOKEN, auth, base_settings, intake_token
from tests.helpers.support import referral_body

DOCUMENT = openapi_document()
METHODS = {"get", "post", "put", "patch", "delete"}


def test_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    validate(DOCUMENT)


def test_every_route_is_documented(tmp_path: Path) -> None:
    app = create_app(base_settings(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"))
    registered = {
        (route.method.lower(), resource.canonical)
        for resource in app.router.resources()
        if not resource.canonical.startswith("/dashboard")
        for route in resource
        if route.method.lower() in METHODS
    }
    documented = {(method, path) for path, item in DOCUMENT["paths"].items()
                  for method in item if method in METHODS}
    assert registered, "no routes found"
    assert registered - documented == set(), "routes missing from the OpenAPI document"
    assert documented - registered == set(), "documented operations the app does not serve"


def test_public_operations_need_no_token_and_the_rest_do() -> None:
    public = {"/healthz", "/readyz", "/metrics", "/v1/openapi.json", "/v1/schema/{name}.json",
              "/v1/schema/kela-notices.xsd"}
    assert DOCUMENT["security"] == [{"bearer": []}]
    for path, item in DOCUMENT["paths"].items():
        for method, op in item.items():
            if path in public:
                assert op.get("security") == [], (method, path)
            else:
                assert "security" not in op, (method, path)
                assert {"401", "403"} <= set(op["responses"]), (method, path)


def test_model_definitions_are_hoisted_into_components() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    for name in ("Referral", "Reply", "Answer", "Client", "Consent", "Worker", "Kind", "ReplyStatus",
                 "AcceptResult", "Case", "ValidationErrors", "Error"):
        assert name in schemas, name

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    assert "$defs" not in str(DOCUMENT)
    for ref in refs(DOCUMENT):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


# --- schemathesis against the live service ---------------------------------------------------------


class LiveServer:
    """The real app on 127.0.0.1 (a free port), served from its own event loop in a thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _start(self) -> str:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    store = tmp_path_factory.mktemp("openapi") / "ledger.db"
    with LiveServer(create_app(base_settings(f"sqlite+aiosqlite:///{store}"))) as server:
        # A real case in area 90 (Helsinki), so that operations on {referral_id} reach past the 404.
        resp = requests.post(f"{server.url}/v1/referrals", json=referral_body("OPENAPI-1",
                                                                           municipality_code="091"),
                             headers=auth(KELA_TOKEN), timeout=10)
        assert resp.status_code == 202, resp.text
        yield {"url": server.url, "referral_id": resp.json()["referral_id"]}


SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = {op["operationId"]: op for item in DOCUMENT["paths"].values()
              for method, op in item.items() if method in METHODS}
TOKENS = {"kela": KELA_TOKEN, "intake": intake_token("90"), "admin": ADMIN_TOKEN}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def _token(operation_id: str) -> str:
    tags = OPERATIONS[operation_id].get("tags", [])
    return TOKENS[tags[0]] if tags and tags[0] in TOKENS else KELA_TOKEN


@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
def test_schemathesis_live(live: dict[str, Any], operation_id: str) -> None:
    operation = SCHEMA.find_operation_by_id(operation_id)
    headers = auth(_token(operation_id))
    strategies = [operation.as_strategy()]
    if any(p["name"] == "referral_id" for p in OPERATIONS[operation_id].get("parameters", [])):
        strategies.append(operation.as_strategy(path_parameters={"referral_id": live["referral_id"]}))

    @settings(max_examples=15, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def run(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=live["url"], headers=headers, timeout=10)
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.parametrize("request_", ["updates", "inbox", "dead_letters", "replay"])
def test_out_of_range_ids_are_not_server_errors(live: dict[str, Any], request_: str) -> None:
    big = 2**64

    def cursor(kind: str) -> str:
        return base64.urlsafe_b64encode(f"{kind}:{big}".encode()).decode().rstrip("=")

    url = live["url"]
    if request_ == "replay":
        resp = requests.post(f"{url}/v1/admin/dead-letters/{big}/replay", headers=auth(ADMIN_TOKEN),
                             timeout=10)
    else:
        path, kind, token = {"updates": ("/v1/updates", "u", KELA_TOKEN),
                             "inbox": ("/v1/inbox", "i", intake_token("90")),
                             "dead_letters": ("/v1/admin/dead-letters", "d", ADMIN_TOKEN)}[request_]
        resp = requests.get(f"{url}{path}", params={"after": cursor(kind)}, headers=auth(token),
                            timeout=10)
    assert resp.status_code < 500, (request_, resp.status_code)
