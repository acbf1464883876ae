"""Shared fixtures: real Redis and PostgreSQL, an isolated database and key prefix per run."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from consumers.store import Store
from ingress import topology as topology_mod
from ingress.topology import Topology
from tests import services

RUN = uuid.uuid4().hex[:8]
PREFIX = f"sbt{RUN}"
TABLES = (
    "contacts",
    "conversations",
    "messages",
    "outbound",
    "webhook_events",
    "backfill_watermarks",
    "turn_log",
    "worker_apps",
    "pushes",
    "push_attempts",
    "meta_owner_apps",
    "meta_forwards",
)
BOT_TOKEN = "test-bot-token"
USER_TOKEN = "test-user-token"


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("services")
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def redis_url(workdir: Path) -> Iterator[str]:
    with services.redis_url(workdir) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server(workdir: Path) -> Iterator[str]:
    """A PostgreSQL server URL; each user of it creates its own database."""
    with services.postgres_url(workdir) as server:
        yield server


@pytest.fixture(scope="session")
def database_url(postgres_server: str) -> Iterator[str]:
    name = f"sbtest_{RUN}"
    url = asyncio.run(services.create_database(postgres_server, name))
    yield url
    asyncio.run(_drop_database(postgres_server, name))


@pytest.fixture
def empty_database(postgres_server: str) -> Iterator[str]:
    """A database of its own with no schema at all, dropped after the test."""
    name = f"sbempty_{RUN}_{uuid.uuid4().hex[:8]}"
    url = asyncio.run(services.create_database(postgres_server, name, migrate=False))
    yield url
    asyncio.run(_drop_database(postgres_server, name))


async def _drop_database(server: str, name: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def topology() -> Topology:
    loaded = topology_mod.load(services.ROOT / "streams.yaml")
    return msgspec.structs.replace(loaded, prefix=PREFIX)


@pytest.fixture(scope="session")
def streams_file(workdir: Path, topology: Topology) -> Path:
    """streams.yaml with this run's prefix, for processes started by the tests."""
    text = (services.ROOT / "streams.yaml").read_text().replace("prefix: sb", f"prefix: {PREFIX}")
    path = workdir / "streams.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def process_env(redis_url: str, database_url: str, streams_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        SWITCHBOARD_STREAMS=str(streams_file),
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"*{PREFIX}:*")]
    if keys:
        await client.delete(*keys)
    yield client
    await client.aclose()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store.connect(database_url, max_size=4)
    async with opened.pool.acquire() as conn:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    yield opened
    await opened.close()


class Fake:
    """The fake Chatwoot server, seen from a test."""

    def __init__(self, url: str) -> None:
        self.url = url

    def reset(self) -> None:
        httpx.post(f"{self.url}/_fake/reset").raise_for_status()

    def faults(self, *rules: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/_fake/faults", json={"rules": list(rules)}).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = httpx.get(f"{self.url}/_fake/requests").json()
        return answer

    def messages(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = httpx.get(f"{self.url}/_fake/messages").json()
        return answer


@pytest.fixture(scope="session")
def fake_server(workdir: Path) -> Iterator[str]:
    port = services.free_port()
    process = services.Process(
        "fake-chatwoot-session",
        services.python(
            "scripts/fake_chatwoot.py",
            "--port",
            str(port),
            "--token",
            BOT_TOKEN,
            "--user-token",
            USER_TOKEN,
        ),
        dict(os.environ),
        workdir,
    )
    url = f"http://127.0.0.1:{port}"
    services.wait_http(f"{url}/_fake/requests", process)
    yield url
    process.stop()


@pytest.fixture
def fake(fake_server: str) -> Fake:
    client = Fake(fake_server)
    client.reset()
    return client
