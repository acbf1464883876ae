"""The spool: webhooks answered while Redis is down are on disk, then in the stream, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager

from consumers.embedded import EmbeddedRedis
from ingress import events
from ingress.app import create_app
from ingress.settings import Settings
from ingress.spool import Record, Spool, SpoolFull
from ingress.topology import Topology
from tests import chatwoot


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis this test may stop and start again (same port, same AOF)."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def post(client: httpx.AsyncClient, n: int) -> Any:
    data = chatwoot.payload("message_created__whatsapp_incoming_phone")
    data["id"] = 930000 + n
    body = chatwoot.rails_json(data)
    return client.post("/webhooks/chatwoot", content=body, headers=chatwoot.headers(body))


async def stream_ids(redis: aioredis.Redis, topology: Topology) -> list[int]:
    rows: Any = await redis.xrange(topology.key("events"))
    bodies = [events.decode(events.EventEntry, fields).body for _, fields in rows]
    return [msgspec.json.decode(b)["id"] for b in bodies]


async def test_redis_outage_is_spooled_and_drained_in_order(
    own_redis: EmbeddedRedis, tmp_path: Path, topology: Topology
) -> None:
    """Webhooks answered during an outage reach the stream after it, in the order received."""
    settings = Settings.from_env({"CHATWOOT_WEBHOOK_SECRETS": chatwoot.SECRET})
    redis = aioredis.Redis.from_url(own_redis.url, socket_connect_timeout=0.5, socket_timeout=1)
    spool_path = tmp_path / "spool" / "events.spool"
    app = create_app(settings, topology, redis=redis, spool_path=spool_path)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            assert (await post(client, 0)).json()["spooled"] is False
            own_redis.stop()
            answers = [await post(client, n) for n in range(1, 4)]
            assert [a.status_code for a in answers] == [200, 200, 200]
            assert all(a.json()["spooled"] for a in answers)
            assert spool_path.stat().st_size > 0
            assert (await client.get("/ready")).json()["redis"] == "unreachable"
            own_redis.start()
            for _ in range(100):  # the drainer runs every half second
                if not spool_path.exists():
                    break
                await asyncio.sleep(0.1)
            assert (await post(client, 4)).status_code == 200
    assert await stream_ids(redis, topology) == [930000, 930001, 930002, 930003, 930004]
    await redis.aclose()


async def test_full_spool_is_503(tmp_path: Path) -> None:
    """Past its cap the spool refuses, and the ingress says 503 rather than lose the webhook."""
    spool = Spool(tmp_path / "s", max_bytes=200)
    record = Record("sb:events", {"body": b"x" * 80})
    await spool.append(record)
    with pytest.raises(SpoolFull):
        await spool.append(record)


async def test_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    """A crash mid-append leaves a partial record: never answered 200, so never replayed."""
    spool = Spool(tmp_path / "s", max_bytes=10_000)
    await spool.append(Record("sb:events", {"n": b"1"}))
    with spool.path.open("ab") as torn:
        torn.write(b"\x00\x00\x00\x50partial")
    replayed: list[Record] = []

    async def keep(record: Record) -> None:
        replayed.append(record)

    assert await spool.drain(keep) == 1
    assert replayed == [Record("sb:events", {"n": b"1"})] and not spool.path.exists()
