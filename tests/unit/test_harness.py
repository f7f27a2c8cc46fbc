"""broker/devtools/harness, which tests, bench and demo share: the config it writes loads as the
service would load it, the receiver checks signatures and answers as told, wait_for waits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest

from adapters.municipal.envelope import EVENT_ID_HEADER, SIGNATURE_HEADER, sign
from broker.config.settings import load_settings
from broker.devtools.harness import (
    ConditionTimeout,
    WebhookReceiver,
    free_port,
    party,
    port_open,
    service_config,
    wait_for,
    webhook_route,
    write_config,
)
from broker.security.auth import hash_token


def test_written_config_loads_as_the_service_loads_it(tmp_path: Path) -> None:
    directory = tmp_path / 'files "19"'  # a quote and a space survive the TOML writer
    config = service_config(
        port=18080, store_url="sqlite+aiosqlite:///./x.db", transport_url="embedded",
        parties=[party("kela-1", "kela", "plain-kela-token"), party("intake-08", "intake", "t08", area="08")],
        routes=[webhook_route("08", "http://127.0.0.1:1/hook", "HANDOFF_X_SECRET"),
                {"area": "19", "delivery": "files", "directory": directory}],
        transport={"retry_tiers_s": (0.2, 1)}, reconcile={"after_s": 3600})
    path = write_config(tmp_path / "handoff.toml", config)
    settings = load_settings(path, env={"HANDOFF_X_SECRET": "s3cret"})
    assert settings.server.port == 18080 and settings.server.rate_limit_per_s == 0
    assert list(settings.transport.retry_tiers_s) == [0.2, 1]
    assert settings.reconcile.after_s == 3600
    assert [(p.id, p.role) for p in settings.parties] == [("kela-1", "kela"), ("intake-08", "intake")]
    assert settings.parties[0].token_sha256 == hash_token("plain-kela-token")
    assert "plain-kela-token" not in path.read_text("utf-8")  # the hash, never the token
    webhook, files = settings.routes
    assert webhook.secret is not None and webhook.secret.get_secret_value() == "s3cret"
    assert files.directory == directory


async def test_receiver_checks_signatures_and_answers_as_told() -> None:
    receiver = await WebhookReceiver(b"k", behaviour=lambda n: 503 if n == 3 else 204).start()
    env = {"event_id": "e-1", "type": "referral", "referral_id": "r-1"}
    body = json.dumps(env).encode()

    def headers(secret: bytes) -> dict[str, str]:
        return {SIGNATURE_HEADER: sign(secret, body, int(time.time())), EVENT_ID_HEADER: "e-1"}

    try:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for secret in (b"wrong", b"k", b"k", b"k"):
                async with http.post(receiver.url, data=body, headers=headers(secret)) as r:
                    statuses.append(r.status)
        assert statuses == [401, 204, 503, 204]  # the n-th request (1-based, bad ones counted) gets behaviour(n)
        assert receiver.requests == 4 and receiver.bad_signatures == 1
        assert receiver.by_event == {"e-1": 2} and receiver.duplicates == 1
        assert set(receiver.first_seen) == {"r-1"} and receiver.referral_ids() == {"r-1": 1}
        assert await receiver.wait_for_referrals(["r-1", "r-2"], within_s=0.05) == {"r-2"}
    finally:
        await receiver.stop()


async def test_wait_for_returns_the_value_or_names_what_it_waited_for() -> None:
    calls = iter(range(5))
    assert await wait_for(lambda: next(calls) >= 3 and "done", 5, "three calls") == "done"

    async def never() -> bool:
        return False

    with pytest.raises(ConditionTimeout, match="waiting for the impossible"):
        await wait_for(never, 0.05, "the impossible")


def test_a_free_port_refuses_connections() -> None:
    assert not port_open("127.0.0.1", free_port(), timeout=0.5)
