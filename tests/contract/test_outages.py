"""Outages as clients and load balancers see them: 503 with Retry-After (never 500) while the ledger
cannot write, /readyz not ready while it cannot, and ready-but-degraded while only the broker is away.

The SQLite ledger lives on a tmpfs of its own (1 MiB... a few MiB), which the test fills to the last
byte: a real "database or disk is full", not a simulated one. Mounting needs root; on a laptop
without it the test skips, in CI it fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.app import IN_CI, KELA_TOKEN, auth, base_settings
from tests.helpers.support import closed_port, hetu_with, referral_body

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs for the disk-full test: {result.stderr.strip()}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path: Path) -> Path:
    """Write until the file system refuses: the disk is full to the last block."""
    ballast = path / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return ballast


async def test_sqlite_disk_full_is_503_and_not_ready(make_client, small_disk: Path) -> None:
    settings = base_settings(f"sqlite+aiosqlite:///{small_disk / 'ledger.db'}",
                             store={"min_free_disk_mb": 1})
    client = await make_client(settings)
    code = hetu_with(dt.date(1980, 5, 17), "-", 934)
    ok = await client.post("/v1/referrals", json=referral_body("DISK-0"), headers=auth(KELA_TOKEN))
    assert ok.status == 202
    assert (await client.get("/readyz")).status == 200

    ballast = _fill(small_disk)
    body = referral_body(f"DISK-{uuid.uuid4().hex[:6]}")
    body["client"]["personal_id"] = code
    # Large enough that SQLite must grow the file or its WAL.
    body["description"] = "x" * 3900
    statuses = []
    for i in range(20):
        body["kela_reference"] = f"DISK-FULL-{i}"
        r = await client.post("/v1/referrals", json=body, headers=auth(KELA_TOKEN))
        statuses.append(r.status)
        text = await r.text()
        assert code not in text
        if r.status == 503:
            assert r.headers["Retry-After"].isdigit()
            assert (await r.json())["error"]["code"] == "unavailable"
            break
    assert statuses[-1] == 503, statuses
    assert 500 not in statuses
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["store"] is False

    ballast.unlink()
    body["kela_reference"] = "DISK-AFTER"
    r = await client.post("/v1/referrals", json=body, headers=auth(KELA_TOKEN))
    assert r.status == 202, await r.text()
    assert (await client.get("/readyz")).status == 200


async def test_broker_unreachable_at_start_keeps_intake_ready(make_client, store_url: str) -> None:
    """`handoff run` starts without RabbitMQ: intake works, /readyz is ready but degraded."""
    url = f"amqp://guest:guest@127.0.0.1:{closed_port()}/"
    client = await make_client(base_settings(store_url, url))
    r = await client.post("/v1/referrals", json=referral_body("NO-BROKER-1"), headers=auth(KELA_TOKEN))
    assert r.status == 202
    ready = await client.get("/readyz")
    assert ready.status == 200
    body = await ready.json()
    assert body["status"] == "degraded" and body["degraded"] == ["transport"]
    assert body["store"] is True and body["transport"] is False
    metrics = await (await client.get("/metrics")).text()
    assert "handoff_transport_connected 0.0" in metrics
    assert "handoff_outbox_pending 1.0" in metrics
