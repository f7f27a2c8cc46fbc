"""Durability: a referral that got 202 is delivered even if the service is SIGKILLed mid-stream.

Runs the real `handoff run` as a subprocess on each store and transport.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.devtools.harness import free_port, wait_for
from tests.helpers.processes import ServiceProcess, case_events, send_referrals, write_config
from tests.helpers.receiver import Receiver

pytestmark = pytest.mark.slow


async def _wait_all_delivered(receiver: Receiver, referral_ids: set[str], timeout: float = 60) -> None:
    await wait_for(lambda: referral_ids <= set(receiver.referral_ids()), timeout,
                   "every referral at the webhook", interval=0.1)


async def test_sigkill_mid_stream_then_restart(tmp_path: Path, store_url: str, transport_url: str) -> None:
    receiver = await Receiver().start()
    port = free_port()
    config = write_config(tmp_path / "handoff.toml", port=port, store_url=store_url,
                          transport_url=transport_url, hook_url=receiver.url)
    service = ServiceProcess(config, port, tmp_path / "service.log")
    try:
        await service.start()
        refs = [f"DUR-{i}" for i in range(200)]
        killed = asyncio.Event()

        def maybe_kill(n: int) -> None:
            if n >= 80 and not killed.is_set():
                killed.set()
                service.kill()

        first = await send_referrals([service.base], refs, on_accepted=maybe_kill)
        assert killed.is_set() and 80 <= len(first) < 200
        await service.start()
        rest = [r for r in refs if r not in first]
        second = await send_referrals([service.base], rest)
        accepted = {**first, **second}
        assert len(accepted) == 200
        await _wait_all_delivered(receiver, set(accepted.values()))
        counts = receiver.referral_ids()
        assert set(counts) == set(accepted.values())  # nothing delivered that was not accepted
        for rid in list(accepted.values())[::10]:
            case = await case_events(service.base, rid)
            assert case["state"] == "delivered"
            assert [e["type"] for e in case["events"]].count("delivered") == 1
        assert service.terminate() == 0  # SIGTERM: graceful shutdown exits cleanly
    finally:
        service.kill()
        await receiver.stop()
