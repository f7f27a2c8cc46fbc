"""Delivery per route (DESIGN § 7, § 10): webhook with signatures, retries and dead letters; files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from broker.devtools.harness import wait_for
from broker.transport.protocol import Ack, InboundMessage
from tests.helpers.app import ADMIN_TOKEN, KELA_TOKEN, auth, base_settings, services_of
from tests.helpers.receiver import Receiver, webhook_routes
from tests.helpers.support import post, wait_state


def deliveries(client: Any, outcome: str) -> float:
    """`handoff_deliveries_total{area="08", outcome=...}` read from the app's own registry."""
    value = services_of(client).metrics.registry.get_sample_value(
        "handoff_deliveries_total", {"area": "08", "outcome": outcome})
    return value or 0.0


@pytest.fixture
async def receiver() -> Any:
    rec = await Receiver().start()
    yield rec
    await rec.stop()


async def test_webhook_envelope_and_signature(make_client, store_url, transport_url, receiver) -> None:
    client = await make_client(base_settings(store_url, transport_url, routes=webhook_routes(receiver.url)))
    rid = await post(client, "W-1")
    case = await wait_state(client, rid, "delivered")
    assert receiver.bad_signatures == 0
    (event_id, env), = receiver.envelopes.items()
    assert set(env) >= {"event_id", "type", "referral_id", "area", "occurred_at", "data"}
    assert env["type"] == "referral" and env["referral_id"] == rid and env["area"] == "08"
    assert env["data"]["referral_id"] == rid and env["data"]["received_at"]
    assert env["data"]["client"]["municipality_code"] == "837"
    assert next(e for e in case["events"] if e["type"] == "delivered")["via"] == "webhook"
    assert receiver.by_event[event_id] == 1


async def test_webhook_retries_same_event_id_until_2xx(make_client, store_url, transport_url) -> None:
    rec = Receiver(behaviour=lambda n: 503 if n <= 3 else 204)
    seen = rec.attempts  # every request's event id, retries included
    await rec.start()
    try:
        client = await make_client(base_settings(store_url, transport_url, routes=webhook_routes(rec.url)))
        rid = await post(client, "W-2")
        await wait_state(client, rid, "delivered")
        assert len(seen) == 4 and len(set(seen)) == 1  # three 503s, then the 2xx, one event id
        assert deliveries(client, "retried") == 3
        assert deliveries(client, "delivered") == 1
    finally:
        await rec.stop()


async def test_webhook_timeout_is_retried(make_client, store_url, receiver) -> None:
    receiver.behaviour = lambda n: "hang" if n == 1 else 204
    settings = base_settings(store_url, routes=webhook_routes(receiver.url), delivery={"timeout_s": 0.3})
    client = await make_client(settings)
    with capture_logs() as logs:
        rid = await post(client, "W-3")
        await wait_state(client, rid, "delivered")
    # The first request really hung (no answer, so not counted as accepted); the retry got the 204.
    assert receiver.requests == 2
    assert sum(receiver.by_event.values()) == 1
    failed = [e for e in logs if e["event"] == "delivery_attempt_failed"]
    assert [(e["reason"], e["attempt"]) for e in failed] == [("timeout", 1)]
    assert deliveries(client, "retried") == 1 and deliveries(client, "delivered") == 1


async def test_unreachable_endpoint_dead_letters_then_replay(make_client, store_url, transport_url,
                                                              receiver) -> None:
    healthy = False
    receiver.behaviour = lambda _n: 204 if healthy else 503
    # Long enough for several attempts (backoff 0.05 s doubling to 0.2 s) even when a loaded CI
    # machine is slow to make the first one: at 1 s a late first attempt was sometimes the last.
    settings = base_settings(store_url, transport_url, routes=webhook_routes(receiver.url),
                             delivery={"give_up_after_s": 2.5})
    client = await make_client(settings)
    rid = await post(client, "W-4")
    case = await wait_state(client, rid, "failed")
    assert "delivery_failed" in [e["type"] for e in case["events"]]
    dead = await (await client.get("/v1/admin/dead-letters", headers=auth(ADMIN_TOKEN))).json()
    (item,) = dead["items"]
    assert item["referral_id"] == rid and item["reason"] == "http_503" and item["attempts"] >= 2
    feed = await (await client.get("/v1/updates", headers=auth(KELA_TOKEN))).json()
    assert [i["type"] for i in feed["items"]] == ["delivery_failed"]
    healthy = True
    r = await client.post(f"/v1/admin/dead-letters/{item['id']}/replay", headers=auth(ADMIN_TOKEN))
    assert r.status == 202, await r.text()
    await wait_state(client, rid, "delivered")
    assert receiver.referral_ids()[rid] == 1
    again = await client.post(f"/v1/admin/dead-letters/{item['id']}/replay", headers=auth(ADMIN_TOKEN))
    assert again.status == 409  # a replay re-enters the normal path once
    dead = await (await client.get("/v1/admin/dead-letters", headers=auth(ADMIN_TOKEN))).json()
    assert dead["items"] == []


async def test_connection_refused_is_retried_then_delivered(make_client, store_url) -> None:
    rec = Receiver()
    await rec.start()
    port = rec.port
    await rec.stop()  # nothing listens: connection refused
    client = await make_client(base_settings(store_url, routes=webhook_routes(f"http://127.0.0.1:{port}/hook")))
    late = Receiver(port=port)
    with capture_logs() as logs:
        rid = await post(client, "W-5")
        # A refused attempt has happened (and been counted as a retry) before anything listens.
        await wait_for(lambda: deliveries(client, "retried") >= 1, 10, "a refused attempt")
        try:
            await wait_for(lambda: _start_when_free(late), 5, "the port free again", interval=0.05)
            await wait_state(client, rid, "delivered")
            assert late.referral_ids()[rid] == 1
        finally:
            await late.stop()
    failed = [e for e in logs if e["event"] == "delivery_attempt_failed"]
    assert failed and all(e["reason"].startswith("connection_error") for e in failed), failed
    assert deliveries(client, "delivered") == 1


async def _start_when_free(rec: Receiver) -> bool:
    try:
        await rec.start()
    except OSError:
        return False
    return True


async def test_files_delivery_is_atomic_json(make_client, store_url, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    routes = [{"area": "08", "delivery": "files", "directory": str(drop), "format": "json"}]
    client = await make_client(base_settings(store_url, routes=routes))
    rids = [await post(client, f"F-{i}") for i in range(5)]
    for rid in rids:
        await wait_state(client, rid, "delivered")
    files = sorted(f for f in drop.iterdir() if f.is_file())  # replies/ is the intake's inbound side
    assert [f.name for f in files if f.name.startswith(".")] == []  # no temp file left behind
    assert len(files) == 5 and all(f.suffix == ".json" for f in files)
    envs = [json.loads(f.read_text("utf-8")) for f in files]
    assert sorted(e["referral_id"] for e in envs) == sorted(rids)
    assert all(e["data"]["kela_reference"].startswith("F-") for e in envs)


async def test_files_delivery_xml(make_client, store_url, tmp_path: Path) -> None:
    from adapters.kela.notices_xml import NAMESPACE

    drop = tmp_path / "xml"
    routes = [{"area": "08", "delivery": "files", "directory": str(drop), "format": "xml"}]
    client = await make_client(base_settings(store_url, routes=routes))
    rid = await post(client, "X-1")
    await wait_state(client, rid, "delivered")
    (f,) = [f for f in drop.iterdir() if f.is_file()]
    text = f.read_text("utf-8")
    assert f.suffix == ".xml" and NAMESPACE in text and rid in text


async def test_duplicate_delivery_is_dropped(make_client, store_url, receiver) -> None:
    """A redelivered message (same event id) is not applied twice: one delivered event."""
    client = await make_client(base_settings(store_url, routes=webhook_routes(receiver.url)))
    rid = await post(client, "D-1")
    await wait_state(client, rid, "delivered")
    svc = services_of(client)
    (event_id,) = receiver.by_event
    body = json.dumps({"event_id": event_id, "type": "referral", "referral_id": rid, "area": "08",
                       "occurred_at": "2026-01-01T00:00:00+00:00", "data": {}}).encode()
    msg = InboundMessage(event_id=event_id, queue="handoff.intake.08", routing_key="referral.08.support_need",
                         body=body, headers={}, redelivered=True, attempt=1)
    disposition = await svc.intake_worker.handle(msg)
    assert isinstance(disposition, Ack)  # settled: acked, neither retried nor dead-lettered
    case = await (await client.get(f"/v1/referrals/{rid}", headers=auth(ADMIN_TOKEN))).json()
    assert [e["type"] for e in case["events"]].count("delivered") == 1
    assert receiver.by_event[event_id] == 1 and receiver.requests == 1  # not posted a second time
    assert deliveries(client, "delivered") == 1
