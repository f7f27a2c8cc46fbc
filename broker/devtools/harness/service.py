"""One `handoff run` subprocess (tests, bench): started on a generated config, ready when /readyz says
so, stopped gracefully (SIGTERM) or killed (SIGKILL), observed through /proc."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from broker.devtools.harness.waiting import ConditionTimeout, wait_for

__all__ = ["ServiceProcess", "ServiceStartError"]


class ServiceStartError(RuntimeError):
    """The service exited at start or did not become ready; the message ends with its log."""


class ServiceProcess:
    def __init__(self, config: Path, port: int, log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        """`env`: the child's whole environment (default: this process's)."""
        self.config, self.port, self.log_path = config, port, log_path
        self.env = dict(os.environ if env is None else env)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = 60, wait_for_status: str | None = "ready") -> ServiceProcess:
        """Start and wait until /readyz answers 200 with `wait_for_status` ("ready": the transport is
        connected too; None: any 200, "degraded" included)."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "broker.cli", "run", "--config", str(self.config)],
                env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

            async def ready() -> bool:
                if not self.running():
                    raise ServiceStartError(f"the service exited at start:\n{self.log_tail()}")
                try:
                    async with http.get(f"{self.base}/readyz") as r:
                        if r.status != 200:
                            return False
                        return wait_for_status is None or (await r.json()).get("status") == wait_for_status
                except (aiohttp.ClientError, TimeoutError):
                    return False

            try:
                await wait_for(ready, timeout, "/readyz", interval=0.1)
            except ConditionTimeout:
                raise ServiceStartError(f"the service did not become ready in {timeout:.0f} s:\n"
                                        f"{self.log_tail()}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown at all (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM and wait for the exit (blocking); the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        return self.proc.returncode

    async def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM (the graceful path) without blocking the loop, then SIGKILL if it does not finish
        within `timeout`; the exit code (None if never started)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await wait_for(lambda: proc.poll() is not None, timeout, "the exit", interval=0.05)
            except ConditionTimeout:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        return proc.returncode

    def rss_mb(self) -> float:
        """VmRSS from /proc/<pid>/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text("utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def cpu_s(self) -> float:
        """User + system CPU seconds so far, from /proc/<pid>/stat."""
        stat = Path(f"/proc/{self.pid}/stat").read_text("utf-8")
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 is fields[0]
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text("utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"
