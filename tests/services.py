"""Real Redis and PostgreSQL for the tests: from REDIS_URL/DATABASE_URL when set, from
testcontainers when a Docker daemon answers, else embedded servers (a fresh machine, CI)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from consumers import local
from consumers.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from consumers.store import Store

ROOT = Path(__file__).resolve().parent.parent


def _docker_answers() -> bool:
    """Whether a Docker daemon answers /_ping (asked with a raw socket: docker-py leaks one
    when no daemon listens, which pytest's unraisable-exception check turns into an error)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parts = urlsplit(host)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = parts.path
        else:
            sock = socket.socket()
            address = (parts.hostname or "127.0.0.1", parts.port or 2375)
        with sock:
            sock.settimeout(2)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except OSError:
        return False


@contextlib.contextmanager
def redis_url(workdir: Path) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
    elif _docker_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as container:
            host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
    else:
        with EmbeddedRedis(workdir / "redis") as server:
            yield server.url


@contextlib.contextmanager
def postgres_url(workdir: Path) -> Iterator[str]:
    """A server URL (any database); the caller creates its own database on it."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
    elif _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url()
    else:
        with EmbeddedPostgres(workdir / "postgres") as server:
            yield server.url()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(server_url: str, name: str, *, migrate: bool = True) -> str:
    """A database of its own, built by `switchboard migrate`'s code: every test runs on exactly
    the schema users get (`migrate=False`: empty, for the tests of migrate itself)."""
    await Store.ensure_database(server_url, name)
    url = with_database(server_url, name)
    if migrate:
        await local.migrate(url)
    return url


def run_sync(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


class Process:
    """A child process started as a user would, with its output kept for failure reports."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._out = self.log.open("wb")
        self.popen = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = 15, timeout: float = 20) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()
        return self.popen.returncode


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def wait_http(url: str, process: Process, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.output()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{process.name} did not answer {url}:\n{process.output()}")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


__all__ = ["free_port"]
