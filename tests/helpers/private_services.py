"""Private RabbitMQ and PostgreSQL instances for fault tests (issue 15).

A fault test that must stop, kill or freeze a broker or a database starts its own instance on free
ports in a temporary directory, breaks only that one, and removes it at the end. The machine's
shared RabbitMQ (5672) and PostgreSQL (5432) are never stopped, restarted or reconfigured: other
test runs use them at the same time.

    rabbit = await PrivateRabbitMQ().start()     # fixture: `private_rabbitmq`
    rabbit.url                                   # amqp://guest:guest@127.0.0.1:<port>/
    await rabbit.stop(); await rabbit.start()    # a full node restart on the same data directory
    await rabbit.stop_app(); await rabbit.start_app()  # the broker app only, the VM keeps running
    await rabbit.kill9(); await rabbit.start()   # SIGKILL of this node's OS processes, then recovery
    await rabbit.rabbitmqctl("list_queues")      # rabbitmqctl bound to this node (-n, own cookie)
    await rabbit.queue_depths()                  # {queue: messages} of the default vhost "/"
    await rabbit.cleanup()                       # kill -9 and remove the directory

    pg = await PrivatePostgres().start()         # fixture: `private_postgres`
    pg.url / pg.dsn                              # postgresql+asyncpg://... / postgresql://...
    await pg.stop("fast"); await pg.start()      # same data directory
    await pg.freeze(); await pg.thaw()           # SIGSTOP / SIGCONT the postmaster and its children
    await pg.kill9(); await pg.start()           # crash recovery
    await pg.cleanup()                           # kill -9 and remove the directory

RabbitMQ runs the packaged scripts (`/usr/lib/rabbitmq/bin`, not the `/usr/sbin` wrappers, which
`su` to the rabbitmq user and read `/var/lib/rabbitmq`). Everything the node reads or writes lives
in its directory: the config (`listeners.tcp.default`), an empty plugin list, the Mnesia and log
bases, the pid file, and its own Erlang cookie in `$HOME/.erlang.cookie` (HOME is the directory for
the node and for its rabbitmqctl), so no CLI call can reach another node by accident. The
node registers its name with the machine's epmd (4369), which it shares with the other nodes; if
no epmd runs, Erlang starts one, which outlives the node (as with any Erlang node). A start takes
3.5-5 s on the 2-core machine, up to 8 s when other runs load it (`start_seconds` keeps each one).

PostgreSQL is a fresh `initdb` cluster (trust auth, `listen_addresses = 127.0.0.1`, the unix
socket in the directory, fsync on). `postgres` runs in the foreground as a direct child of the
test process, as the `postgres` OS user when the tests run as root (initdb refuses root), instead
of through `pg_ctl start`: pg_ctl orphans the postmaster, and on a machine whose PID 1 does not reap
orphans a SIGKILLed postmaster would stay a zombie whose pid in `postmaster.pid` blocks the next
start. `stop(mode)` sends the signal `pg_ctl stop -m mode` would send. A first start (with initdb)
takes 1-2 s, a restart 0.1 s, one after a kill -9 (crash recovery) about 1.5 s.

All the methods that start, stop, kill or signal are coroutines, so the test's loop (which may also
serve a webhook receiver) keeps running meanwhile.

Both fixtures skip when the binaries are missing (a laptop), and fail in CI (CI=true). Linux only
(/proc, signals). Processes orphaned by a kill -9 (Erlang's port helpers, the
PostgreSQL backends) are killed too, but may stay as zombies where PID 1 does not reap them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest

from broker.devtools.harness import ConditionTimeout, free_port, port_open, wait_for
from tests.helpers.app import missing_service

__all__ = ["PrivatePostgres", "PrivateRabbitMQ", "postgres_bin_dir", "private_postgres", "private_rabbitmq",
           "rabbitmq_bin_dir"]

_RABBIT_DIRS = [Path("/usr/lib/rabbitmq/bin")]
_PG_DIRS = [Path("/usr/lib/postgresql/15/bin"), *sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                                                         reverse=True)]
_PG_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


def _port_open(port: int) -> bool:
    return port_open("127.0.0.1", port, timeout=0.5)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process from /proc, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]  # the command name may contain spaces
    return state, int(ppid)


def _alive(pid: int) -> bool:
    """Running (or stopped), not gone and not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _descendants(pid: int) -> list[int]:
    """All processes below `pid` (children by ppid, recursively), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop(0)
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        await wait_for(lambda: proc.poll() is not None, timeout, "the exit", interval=0.05)
    except ConditionTimeout:
        return False
    return True


async def _wait_gone(pids: list[int], timeout: float, what: str) -> None:
    try:
        await wait_for(lambda: not any(_alive(p) for p in pids), timeout, f"{what} gone", interval=0.05)
    except ConditionTimeout:
        raise RuntimeError(f"{what} survived SIGKILL: {[p for p in pids if _alive(p)]}") from None


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# --- RabbitMQ -----------------------------------------------------------------------------------


def rabbitmq_bin_dir() -> Path | None:
    """The directory of the real `rabbitmq-server` and `rabbitmqctl` scripts, or None."""
    for d in _RABBIT_DIRS:
        if (d / "rabbitmq-server").exists() and (d / "rabbitmqctl").exists():
            return d
    found = shutil.which("rabbitmq-server")  # elsewhere: the real script, not a wrapper
    if found:
        d = Path(found).resolve().parent
        if (d / "rabbitmq-server").exists() and (d / "rabbitmqctl").exists():
            return d
    return None


class PrivateRabbitMQ:
    """One RabbitMQ node of our own: node `handoff-<random>@localhost` on free ports."""

    def __init__(self, base_dir: Path | None = None, bin_dir: Path | None = None) -> None:
        found = bin_dir or rabbitmq_bin_dir()
        if found is None:
            raise FileNotFoundError("rabbitmq-server (the Debian package's /usr/lib/rabbitmq/bin)")
        self.bin_dir = found
        self.dir = Path(tempfile.mkdtemp(prefix="handoff-rabbit-", dir=base_dir))
        self.node = f"handoff-{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.dist_port = free_port({self.port})
        self.start_seconds: list[float] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_files()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid_file(self) -> Path:
        return self.dir / "rabbitmq.pid"

    @property
    def log_path(self) -> Path:
        return self.dir / "stdout.log"

    def _write_files(self) -> None:
        cookie = self.dir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
)
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq/rabbitmq-env.conf

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RABBITMQ_", "ERL_")) and k not in ("HOME", "NOTIFY_SOCKET")}
        d = self.dir
        env.update({
            "HOME": str(d),  # the node's and the CLI's Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),  # absent
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",  # only used if this node has to start epmd
        })
        return env

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def os_pid(self) -> int | None:
        """The beam process of this node (from its pid file), if it runs."""
        if not self.running:
            return None
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    async def rabbitmqctl(self, *args: str, timeout: float = 60) -> str:
        """`rabbitmqctl -q -n <this node> *args`; returns stdout, raises RuntimeError on failure.
        Only ever this test's own node (`handoff-<hex>@localhost`, its own cookie), never the
        machine's shared broker."""
        assert self.node.startswith("handoff-"), self.node
        proc = await asyncio.create_subprocess_exec(
            str(self.bin_dir / "rabbitmqctl"), "-q", "-n", self.node, *args, env=self._env(),
            cwd=self.dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await asyncio.shield(proc.wait())
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node} failed: "
                               f"{(err or out).decode(errors='replace')[-800:]}")
        return out.decode()

    async def start(self, timeout: float = 90) -> PrivateRabbitMQ:
        """Starts the node (again, on the same data) and waits for `await_startup`."""
        if self.running:
            return self
        started = time.monotonic()
        self.pid_file.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([str(self.bin_dir / "rabbitmq-server")], env=self._env(),
                                          cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        deadline = started + timeout

        async def booted() -> bool:
            if not self.running:
                raise RuntimeError(f"RabbitMQ node {self.node} exited at start:\n{_tail(self.log_path)}")
            # The AMQP listener comes near the end of the boot: the CLI's own Erlang VM is not
            # started before, where it would take CPU from the booting node.
            if not _port_open(self.port):
                return False
            try:
                await self.rabbitmqctl("await_startup", "--timeout",
                                       str(max(1, int(deadline - time.monotonic()))))
            except RuntimeError:
                return False  # still booting
            return True

        try:
            await wait_for(booted, timeout, f"RabbitMQ node {self.node} to start", interval=0.2)
        except ConditionTimeout:
            await self.kill9()
            raise TimeoutError(f"RabbitMQ node {self.node} did not start in {timeout} s:\n"
                               f"{_tail(self.log_path)}") from None
        self.start_seconds.append(time.monotonic() - started)
        return self

    async def stop(self, timeout: float = 60) -> None:
        """A graceful stop of this private node only; its data directory stays for `start()`."""
        if not self.running:
            return
        assert self._proc is not None
        with contextlib.suppress(RuntimeError, TimeoutError):
            await self.rabbitmqctl("stop", timeout=timeout)
        if not await _wait_exit(self._proc, timeout):
            await self.kill9()

    async def stop_app(self) -> None:
        """Stops the broker application only (connections and listeners go; the VM stays)."""
        await self.rabbitmqctl("stop_app")

    async def start_app(self) -> None:
        await self.rabbitmqctl("start_app")
        await self.rabbitmqctl("await_startup")

    async def kill9(self) -> None:
        """SIGKILL the node's beam process and every process below it (and the start script)."""
        if not self.running:
            return
        assert self._proc is not None
        beam = self.os_pid()
        victims = ([beam, *_descendants(beam)] if beam is not None else []) + [self._proc.pid]
        victims += [p for p in _descendants(self._proc.pid) if p not in victims]
        _signal_all(victims, signal.SIGKILL)
        if not await _wait_exit(self._proc, 30):
            raise RuntimeError(f"RabbitMQ node {self.node} survived SIGKILL")
        await _wait_gone(victims, 30, f"RabbitMQ node {self.node}")

    async def queue_depths(self, vhost: str = "/") -> dict[str, int]:
        out = await self.rabbitmqctl("list_queues", "-p", vhost, "name", "messages",
                                     "--no-table-headers")
        rows = (line.split() for line in out.splitlines())
        return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit()}

    async def cleanup(self) -> None:
        """Kills the node (a graceful stop takes 2 s more, for data thrown away) and removes its
        directory."""
        try:
            await self.kill9()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


# --- PostgreSQL ---------------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """The directory of `initdb` and `postgres`, or None."""
    for d in _PG_DIRS:
        if (d / "initdb").exists() and (d / "postgres").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


class PrivatePostgres:
    """One PostgreSQL cluster of our own on a free port; user `postgres`, trust auth."""

    def __init__(self, base_dir: Path | None = None, bin_dir: Path | None = None) -> None:
        found = bin_dir or postgres_bin_dir()
        if found is None:
            raise FileNotFoundError("initdb and postgres (the postgresql-15 package)")
        self.bin_dir = found
        # initdb and postgres refuse root: as root they run as the postgres OS user.
        self._user: str | None = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            pwd.getpwnam(self._user)  # KeyError: no such user
        # Not pytest's tmp_path: its parents are 0700 root, which the postgres user cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix="handoff-pg-", dir=base_dir))
        if self._user is not None:
            shutil.chown(self.dir, self._user, self._user)
        self.data = self.dir / "data"
        self.port = free_port()
        self.start_seconds: list[float] = []
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """For asyncpg.connect."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        """For the service's [store] url (SQLAlchemy)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.dir / "postgres.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def postmaster_pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"HOME": str(self.dir), "LC_ALL": "C.UTF-8"})
        return env

    async def _initdb(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", env=self._env(), cwd=self.dir,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            user=self._user, group=self._user, extra_groups=[] if self._user else None)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.decode(errors='replace')[-2000:]}")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# tests/helpers/private_services.py\nport = {self.port}\n"
                       "listen_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.dir}'\n"
                       "max_connections = 50\nshared_buffers = 32MB\n")

    def _status(self) -> str:
        """The last line of postmaster.pid: "starting", "ready", "stopping" (or "")."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return ""
        return lines[7].strip() if len(lines) > 7 else ""

    async def start(self, timeout: float = 60) -> PrivatePostgres:
        """initdb on the first start; then runs postgres and waits until it accepts connections."""
        if self.running:
            return self
        started = time.monotonic()
        if not (self.data / "PG_VERSION").exists():
            await self._initdb()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data)], env=self._env(),
                cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, user=self._user, group=self._user,
                extra_groups=[] if self._user else None)

        def accepting() -> bool:
            if not self.running:
                raise RuntimeError(f"postgres exited at start:\n{_tail(self.log_path)}")
            return self._status() == "ready" and _port_open(self.port)

        try:
            await wait_for(accepting, timeout, "postgres to start", interval=0.05)
        except ConditionTimeout:
            await self.kill9()
            raise TimeoutError(f"postgres did not start in {timeout} s:\n{_tail(self.log_path)}") from None
        self.start_seconds.append(time.monotonic() - started)
        return self

    async def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast",
                   timeout: float = 60) -> None:
        """Like `pg_ctl stop -m mode`; the data stays for `start()`."""
        if not self.running:
            return
        assert self._proc is not None
        await self.thaw()
        self._proc.send_signal(_PG_STOP_SIGNALS[mode])
        if not await _wait_exit(self._proc, timeout):
            await self.kill9()

    def _tree(self) -> list[int]:
        pid = self.postmaster_pid()
        return [pid, *_descendants(pid)] if pid is not None else []

    async def freeze(self) -> None:
        """SIGSTOP the postmaster, then every backend and auxiliary process (each backend is in a
        session of its own, so they are found by ppid, not by process group). Connections then hang:
        the kernel still completes the TCP handshake, nobody answers."""
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError("postgres is not running")
        os.kill(pid, signal.SIGSTOP)  # first, so that it forks no new child meanwhile
        _signal_all(_descendants(pid), signal.SIGSTOP)

    async def thaw(self) -> None:
        """SIGCONT to the postmaster and all of its children."""
        tree = self._tree()
        _signal_all(tree[1:], signal.SIGCONT)
        _signal_all(tree[:1], signal.SIGCONT)

    async def kill9(self) -> None:
        """SIGKILL the postmaster and every process below it: a crash; `start()` then recovers."""
        if not self.running:
            return
        assert self._proc is not None
        tree = self._tree()
        _signal_all(tree, signal.SIGKILL)
        if not await _wait_exit(self._proc, 30):
            raise RuntimeError("postgres survived SIGKILL")
        await _wait_gone(tree, 30, "postgres")  # no backend holds the shared memory any more

    async def cleanup(self) -> None:
        """Kills the cluster (its data is thrown away) and removes its directory."""
        try:
            await self.kill9()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


# --- fixtures -----------------------------------------------------------------------------------


def _missing(what: str) -> None:
    missing_service(what)


@pytest.fixture
async def private_rabbitmq() -> AsyncIterator[PrivateRabbitMQ]:
    """A started RabbitMQ node of the test's own, removed at the end (see the module docstring)."""
    if rabbitmq_bin_dir() is None or shutil.which("erl") is None:
        _missing("rabbitmq-server and erl (for a private RabbitMQ node)")
    rabbit = PrivateRabbitMQ()
    try:
        yield await rabbit.start()
    finally:
        await rabbit.cleanup()


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A started PostgreSQL cluster of the test's own, removed at the end."""
    if postgres_bin_dir() is None:
        _missing("initdb and postgres (for a private PostgreSQL cluster)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _missing("the postgres OS user (initdb refuses to run as root)")
    pg = PrivatePostgres()
    try:
        yield await pg.start()
    finally:
        await pg.cleanup()                           # kill -9 and remove the directory
