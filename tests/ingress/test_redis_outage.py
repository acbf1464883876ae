"""A Redis that stops answering (accepts, reads, never replies): the ingress spools within
about a second instead of spending Chatwoot's 5 s, and drains when Redis answers again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager

from consumers.embedded import free_port
from ingress import events
from ingress.app import create_app
from ingress.settings import Settings
from ingress.topology import Topology
from tests import chatwoot


class Blackhole:
    """A TCP proxy in front of Redis. While `silent`, it still accepts connections and reads
    what is sent, but forwards nothing: a hung server, or a network that drops packets."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Blackhole:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(65536):
                if not self.silent:  # silent: the bytes vanish, nobody answers
                    sink.write(chunk)
                    await sink.drain()
        sink.close()


def webhook(n: int) -> tuple[bytes, dict[str, str]]:
    data = chatwoot.payload("message_created__whatsapp_incoming_phone")
    data["id"] = 940000 + n
    body = chatwoot.rails_json(data)
    return body, chatwoot.headers(body)


@pytest.fixture
async def blackhole(redis_url: str) -> AsyncIterator[Blackhole]:
    port = urlsplit(redis_url).port
    assert port is not None
    async with Blackhole(port) as proxy:
        yield proxy


async def test_a_silent_redis_is_spooled_within_a_second_and_drained_after(
    blackhole: Blackhole, tmp_path: Path, topology: Topology, redis: aioredis.Redis
) -> None:
    """With the ingress's own Redis client (made from REDIS_URL), a Redis that never answers
    costs a webhook about 1 s before it is spooled (200), not Chatwoot's 5 s; later webhooks
    queue behind it at once; all reach the stream in order once Redis answers."""
    settings = Settings.from_env(
        {
            "CHATWOOT_WEBHOOK_SECRETS": chatwoot.SECRET,
            "REDIS_URL": f"redis://127.0.0.1:{blackhole.port}/0",
        }
    )
    app = create_app(settings, topology, spool_path=tmp_path / "events.spool")
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            body, headers = webhook(0)
            first = await client.post("/webhooks/chatwoot", content=body, headers=headers)
            assert first.json()["spooled"] is False
            blackhole.silent = True
            timings: list[float] = []
            for n in (1, 2):
                body, headers = webhook(n)
                started = time.monotonic()
                answer = await client.post("/webhooks/chatwoot", content=body, headers=headers)
                timings.append(time.monotonic() - started)
                assert (answer.status_code, answer.json()["spooled"]) == (200, True)
            assert timings[0] < 1.5, timings
            assert timings[1] < 0.5, timings  # behind the spooled one, without asking Redis
            started = time.monotonic()
            ready = await client.get("/ready")
            assert time.monotonic() - started < 1.5
            assert ready.json()["redis"] == "unreachable"
            blackhole.silent = False
            spool = tmp_path / "events.spool"
            for _ in range(100):
                if not spool.exists():
                    break
                await asyncio.sleep(0.1)
            assert not spool.exists()
    rows: Any = await redis.xrange(topology.key("events"))
    bodies = [events.decode(events.EventEntry, fields).body for _, fields in rows]
    numbers = [msgspec.json.decode(b)["id"] - 940000 for b in bodies]
    # A call cut off by the timeout may still have reached Redis: then the spooled copy is a
    # duplicate, refused by the delivery-id dedup. Never lost, never out of order.
    assert numbers == [0, 1, 2]


async def test_an_unreachable_cluster_spools_the_webhook_and_is_not_ready(
    tmp_path: Path, topology: Topology
) -> None:
    """A Redis Cluster no node of which answers (RedisClusterException): spooled, not a 500."""
    env = {
        "CHATWOOT_WEBHOOK_SECRETS": chatwoot.SECRET,
        "REDIS_URL": f"redis+cluster://127.0.0.1:{free_port()}",
    }
    spool = tmp_path / "events.spool"
    app = create_app(Settings.from_env(env), topology, spool_path=spool)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            ready = await client.get("/ready")
            body, headers = webhook(1)
            answer = await client.post("/webhooks/chatwoot", content=body, headers=headers)
    assert ready.status_code == 200 and ready.json()["redis"] == "unreachable"
    assert answer.status_code == 200 and answer.json()["spooled"] is True
    assert spool.stat().st_size > 0
