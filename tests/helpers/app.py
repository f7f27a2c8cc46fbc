"""The app under test: its settings (`base_settings`), the parties' tokens, the CI switch, and access
to a running test client's services. Fixtures live in tests/conftest.py; test modules import these."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from broker.config.settings import Settings
from broker.runtime.services import SERVICES, Services
from broker.security.auth import hash_token
from broker.web.server import HandoffRunner

__all__ = [
    "ADMIN_TOKEN", "AMQP_URL", "IN_CI", "KELA2_TOKEN", "KELA_CENTRAL_TOKEN", "KELA_TOKEN", "PG_DSN_ADMIN",
    "Factory", "ServiceTestServer", "auth", "base_settings", "intake_token", "missing_service", "services_of",
]

PG_DSN_ADMIN = os.environ.get("HANDOFF_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("HANDOFF_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI") == "true"

KELA_TOKEN = "test-kela-token"
KELA2_TOKEN = "test-kela2-token"
KELA_CENTRAL_TOKEN = "test-kela-central-token"
ADMIN_TOKEN = "test-admin-token"


def intake_token(area: str) -> str:
    return f"test-intake-{area}"


def missing_service(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI=true) but is not reachable")
    pytest.skip(f"{what} is not reachable on this machine")


def base_settings(store_url: str, transport_url: str = "embedded", *,
                  routes: list[dict[str, Any]] | None = None, **sections: Any) -> Settings:
    areas = ["08", "90", "19", "03"]
    parties: list[dict[str, Any]] = [
        {"id": "kela-1", "role": "kela", "token_sha256": hash_token(KELA_TOKEN)},
        {"id": "kela-2", "role": "kela", "token_sha256": hash_token(KELA2_TOKEN)},
        # Kela's central reader: sees every sender's cases and the whole feed.
        {"id": "kela-central", "role": "kela", "central_reader": True,
         "token_sha256": hash_token(KELA_CENTRAL_TOKEN)},
        {"id": "admin-1", "role": "admin", "token_sha256": hash_token(ADMIN_TOKEN)},
    ] + [{"id": f"intake-{a}", "role": "intake", "area": a, "token_sha256": hash_token(intake_token(a))}
         for a in [*areas, "91"]]
    data: dict[str, Any] = {
        "store": {"url": store_url},
        "transport": {"url": transport_url, "retry_tiers_s": [0.2, 1, 5]},
        # Reply files are scanned by the tests themselves (scan_once), not by the background job.
        "delivery": {"initial_backoff_s": 0.05, "max_backoff_s": 0.2, "give_up_after_s": 30,
                     "timeout_s": 2, "file_scan_interval_s": 3600},
        "relay": {"poll_interval_s": 0.05},
        # Tests send hundreds of requests a second with one token; tests/contract/test_http_guards.py turns
        # the limits on where it tests them.
        "server": {"shutdown_timeout_s": 3, "rate_limit_per_s": 0},
        "parties": parties,
        "routes": routes if routes is not None else [{"area": a, "delivery": "pull"} for a in areas],
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value) if isinstance(value, dict) else data.__setitem__(key, value)
    return Settings.model_validate(data)


Factory = Callable[..., Awaitable[TestClient[Any, Any]]]


class ServiceTestServer(TestServer):
    """The app on the runner `handoff run` uses (its answers to unreadable requests included)."""

    async def _make_runner(self, **kwargs: Any) -> HandoffRunner:
        return HandoffRunner(self.app, **kwargs)


def services_of(client: TestClient[Any, Any]) -> Services:
    return client.app[SERVICES]  # type: ignore[index]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
