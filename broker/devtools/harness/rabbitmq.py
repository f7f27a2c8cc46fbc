"""rabbitmqctl for the machine's RabbitMQ node (tests, bench): run a command, make a throw-away vhost.

A test that stops or kills a node runs its own (tests/helpers/private_services.py) with its own
rabbitmqctl bound to that node; these calls reach the local default node only.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["RabbitmqctlError", "rabbitmqctl", "rabbitmqctl_path", "rabbitmqctl_sync", "throwaway_vhost",
           "throwaway_vhost_sync"]

_PACKAGED = Path("/usr/sbin/rabbitmqctl")


class RabbitmqctlError(RuntimeError):
    """rabbitmqctl is missing, failed, or did not finish in time; the message says which."""


def rabbitmqctl_path() -> str | None:
    found = shutil.which("rabbitmqctl")
    if found is None and _PACKAGED.exists():
        found = str(_PACKAGED)
    return found


def _argv(args: tuple[str, ...]) -> list[str]:
    ctl = rabbitmqctl_path()
    if ctl is None:
        raise RabbitmqctlError("rabbitmqctl not found")
    return [ctl, "-q", *args]


def _failed(args: tuple[str, ...], err: str) -> RabbitmqctlError:
    return RabbitmqctlError(f"rabbitmqctl {' '.join(args)} failed: {err.strip()[-500:]}")


async def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """`rabbitmqctl -q *args` without blocking the loop (which may serve a webhook receiver); stdout."""
    proc = await asyncio.create_subprocess_exec(*_argv(args), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:  # timed out, or the caller gave up: leave no rabbitmqctl behind
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        raise _failed(args, err.decode(errors="replace"))
    return out.decode()


def rabbitmqctl_sync(*args: str, timeout: float = 60) -> str:
    """The same, for code outside an event loop (session fixtures)."""
    try:
        done = subprocess.run(_argv(args), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RabbitmqctlError(f"rabbitmqctl {args[0]} did not finish in {timeout:.0f} s") from None
    if done.returncode != 0:
        raise _failed(args, done.stderr or done.stdout)
    return done.stdout


def _vhost_url(amqp_url: str, vhost: str) -> str:
    return urlunsplit(urlsplit(amqp_url)._replace(path=f"/{vhost}"))


def _user(amqp_url: str) -> str:
    return urlsplit(amqp_url).username or "guest"


@contextlib.asynccontextmanager
async def throwaway_vhost(amqp_url: str, prefix: str) -> AsyncIterator[str]:
    """A fresh vhost `<prefix>-<random>` with all rights for the URL's user; yields the URL that names
    it and deletes the vhost afterwards."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await rabbitmqctl("add_vhost", vhost)
    try:
        await rabbitmqctl("set_permissions", "-p", vhost, _user(amqp_url), ".*", ".*", ".*")
        yield _vhost_url(amqp_url, vhost)
    finally:
        with contextlib.suppress(OSError, RabbitmqctlError):
            await rabbitmqctl("delete_vhost", vhost)


@contextlib.contextmanager
def throwaway_vhost_sync(amqp_url: str, prefix: str) -> Iterator[str]:
    """`throwaway_vhost` for code outside an event loop (session fixtures)."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl_sync("add_vhost", vhost)
    try:
        rabbitmqctl_sync("set_permissions", "-p", vhost, _user(amqp_url), ".*", ".*", ".*")
        yield _vhost_url(amqp_url, vhost)
    finally:
        with contextlib.suppress(OSError, RabbitmqctlError):
            rabbitmqctl_sync("delete_vhost", vhost)
