"""Running `handoff run` as a real subprocess for durability and fault tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from broker.auth import hash_token
from tests.conftest import ADMIN_TOKEN, KELA_TOKEN
from tests.receiver import SECRET

SECRET_ENV = "HANDOFF_TEST_WEBHOOK_SECRET"
# A resend after a crash must be the identical body, or it is (rightly) a 409.
SENT_AT = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, *, port: int, store_url: str, transport_url: str, hook_url: str,
                 give_up_after_s: float = 120) -> Path:
    path.write_text(f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_timeout_s = 3
rate_limit_per_s = 0

[store]
url = "{store_url}"

[transport]
url = "{transport_url}"
retry_tiers_s = [0.2, 1, 5]

[delivery]
initial_backoff_s = 0.1
max_backoff_s = 0.5
give_up_after_s = {give_up_after_s}
timeout_s = 2

[relay]
poll_interval_s = 0.1

[log]
level = "warning"
format = "json"

[[parties]]
id = "kela-1"
role = "kela"
token_sha256 = "{hash_token(KELA_TOKEN)}"

[[parties]]
id = "admin-1"
role = "admin"
token_sha256 = "{hash_token(ADMIN_TOKEN)}"

[[routes]]
area = "08"
delivery = "webhook"
url = "{hook_url}"
secret_env = "{SECRET_ENV}"

[[routes]]
area = "90"
delivery = "webhook"
url = "{hook_url}"
secret_env = "{SECRET_ENV}"
""", "utf-8")
    return path


class ServiceProcess:
    def __init__(self, config: Path, port: int, log_path: Path) -> None:
        self.config, self.port, self.log_path = config, port, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30) -> ServiceProcess:
        env = {**os.environ, "HANDOFF_CONFIG": str(self.config), SECRET_ENV: SECRET}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "run"], env=env,
                                     stdout=log, stderr=log)
        async with aiohttp.ClientSession() as http:
            deadline = asyncio.get_running_loop().time() + timeout
            while asyncio.get_running_loop().time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"service exited: {self.log_path.read_text()[-2000:]}")
                try:
                    async with http.get(f"{self.base}/readyz") as r:
                        if r.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError("service did not become ready")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(20)
        return self.proc.returncode if self.proc else 0


async def send_referrals(base_urls: list[str], refs: list[str], *, concurrency: int = 8,
                         on_accepted: Any = None,
                         municipality_of: Callable[[str], str] | None = None,
                         rejected: dict[str, int | str] | None = None) -> dict[str, str]:
    """POST referrals round-robin over the services; returns kela_reference -> referral_id for 202/200.

    `base_urls` is read again for every request, so a caller may drop a dead process from the list
    mid-stream, as a load balancer would, and the rest of the stream goes round-robin over the others.
    `municipality_of(ref)`, if given, picks the municipality from the reference alone, so that a resend
    of a sub-list is the identical body (by default it alternates with the position in `refs`).
    `rejected`, if given, collects the other answers: the status, or the client error's class name."""
    import random

    from broker.demo_data import make_referral

    accepted: dict[str, str] = {}
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for i, ref in enumerate(refs):
        queue.put_nowait((i, ref))
    headers = {"Authorization": f"Bearer {KELA_TOKEN}"}

    async def worker(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i, ref = queue.get_nowait()
            # From the reference alone: a resend after a crash must be the identical body.
            municipality = (municipality_of(ref) if municipality_of is not None
                            else "837" if sum(map(ord, ref)) % 2 else "091")
            body = make_referral(random.Random(ref), kela_reference=ref, sent_at=SENT_AT,
                                 municipality_code=municipality)
            try:
                async with http.post(f"{base_urls[i % len(base_urls)]}/v1/referrals", json=body,
                                     headers=headers) as r:
                    if r.status in (200, 202):
                        accepted[ref] = (await r.json())["referral_id"]
                        if on_accepted is not None:
                            on_accepted(len(accepted))
                    elif rejected is not None:
                        rejected[ref] = r.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                # the process was killed mid-request: no 202, no promise
                if rejected is not None:
                    rejected[ref] = type(exc).__name__

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return accepted


async def case_events(base: str, referral_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(
            f"{base}/v1/referrals/{referral_id}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
        body: dict[str, Any] = await r.json()
        return body
