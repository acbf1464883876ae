"""The publisher coalesces the XADDs of concurrent requests into one pipelined round trip per
event-loop tick; each request is still answered with its own entry, or spools its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from ingress import events
from ingress.errors import PublishError
from ingress.publish import Published, Publisher
from ingress.spool import Record, Spool
from ingress.topology import Topology
from tests.ingress.test_redis_outage import Blackhole

CONCURRENT = 50


def entry(n: int) -> events.EventEntry:
    return events.EventEntry(
        event="message_created",
        delivery=f"d-{n}",
        account=1,
        conversation=n,
        received_at=1_700_000_000_000 + n,
        signed=True,
        body=b'{"n": %d}' % n,
    )


@pytest.fixture
async def fresh(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of its own, whose pool opens its first connection inside the test."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def connections_received(redis: aioredis.Redis) -> int:
    stats: dict[str, Any] = await redis.info("stats")
    return int(stats["total_connections_received"])


async def stored(redis: aioredis.Redis, key: str) -> list[str]:
    rows: Any = await redis.xrange(key)
    return [events.decode(events.EventEntry, fields).delivery for _, fields in rows]


async def test_concurrent_publishes_share_one_round_trip(
    fresh: aioredis.Redis, redis: aioredis.Redis, topology: Topology
) -> None:
    """Fifty requests publishing at once use one connection, which only pipelining allows
    (one awaited call per request would open one connection each), and each gets its own
    entry, stored once, in the order the requests asked."""
    key = topology.key("events")
    publisher = Publisher(fresh)
    before = await connections_received(redis)
    results = await asyncio.gather(
        *(publisher.publish(key, entry(n), delivery=f"d-{n}") for n in range(CONCURRENT))
    )
    assert await connections_received(redis) - before == 1
    ids = [r.entry for r in results]
    assert None not in ids and len(set(ids)) == CONCURRENT
    assert await stored(redis, key) == [f"d-{n}" for n in range(CONCURRENT)]
    rows: Any = await redis.xrange(key)
    assert [row[0].decode() for row in rows] == ids  # each request got its own entry's id


async def test_one_pipeline_per_tick(
    fresh: aioredis.Redis, redis: aioredis.Redis, topology: Topology
) -> None:
    """Requests asking in different ticks are not held back for each other: the second wave,
    asked after the first was answered, goes in its own round trip on the same connection."""
    key = topology.key("events")
    publisher = Publisher(fresh)
    before = await connections_received(redis)
    first = await asyncio.gather(*(publisher.publish(key, entry(n)) for n in range(10)))
    second = await asyncio.gather(*(publisher.publish(key, entry(n)) for n in range(10, 20)))
    assert await connections_received(redis) - before == 1
    assert all(r.entry for r in first + second)
    assert await stored(redis, key) == [f"d-{n}" for n in range(20)]


async def test_dedup_holds_within_one_batch(redis: aioredis.Redis, topology: Topology) -> None:
    """Two requests with the same delivery id in one tick: one entry, the other a duplicate."""
    key = topology.key("events")
    publisher = Publisher(redis)
    twice = entry(7)
    results = await asyncio.gather(
        publisher.publish(key, twice, delivery="same-delivery"),
        publisher.publish(key, entry(8), delivery="other-delivery"),
        publisher.publish(key, twice, delivery="same-delivery"),
    )
    assert [r.duplicate for r in results] == [False, False, True]
    assert results[2] == Published(duplicate=True)
    assert await stored(redis, key) == ["d-7", "d-8"]


async def test_an_error_reply_fails_only_its_own_entry(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """A key of the wrong type fails the request that named it; the rest of the batch is
    stored and answered."""
    key, wrong = topology.key("events"), topology.key("not-a-stream")
    await redis.set(wrong, "a string")
    publisher = Publisher(redis)
    results = await asyncio.gather(
        publisher.publish(key, entry(1)),
        publisher.publish(wrong, entry(2)),
        publisher.publish(key, entry(3)),
        return_exceptions=True,
    )
    assert isinstance(results[1], PublishError)
    assert "WRONGTYPE" in str(results[1])
    assert all(isinstance(r, Published) and r.entry for r in (results[0], results[2]))
    assert await stored(redis, key) == ["d-1", "d-3"]


async def test_a_redis_failure_mid_batch_spools_every_entry(
    redis_url: str, redis: aioredis.Redis, topology: Topology, tmp_path: Path
) -> None:
    """Redis stops answering once the batch is sent: every request of the batch is answered
    within the budget, spooled, and the spool holds each entry once, in arrival order."""
    key = topology.key("events")
    port = urlsplit(redis_url).port
    assert port is not None
    async with Blackhole(port) as proxy:
        client = aioredis.Redis(port=proxy.port, socket_connect_timeout=0.5)
        try:
            spool = Spool(tmp_path / "events.spool", max_bytes=1 << 20)
            publisher = Publisher(client, spool=spool, budget_s=0.3)
            await client.ping()  # connected: the failure comes after the batch is sent
            proxy.silent = True
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await asyncio.gather(
                *(publisher.publish(key, entry(n), delivery=f"d-{n}") for n in range(20))
            )
            assert loop.time() - started < 1.0
        finally:
            await client.aclose()
    assert all(r == Published(spooled=True) for r in results)
    spooled: list[Record] = []

    async def collect(record: Record) -> None:
        spooled.append(record)

    await spool.drain(collect)
    assert [r.delivery for r in spooled] == [f"d-{n}" for n in range(20)]
    assert [events.decode(events.EventEntry, r.fields).delivery for r in spooled] == [
        f"d-{n}" for n in range(20)
    ]


async def test_a_cancelled_request_leaves_the_batch_intact(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """A request that goes away (client disconnect) does not take the others with it."""
    key = topology.key("events")
    publisher = Publisher(redis)
    gone = asyncio.create_task(publisher.publish(key, entry(1)))
    kept = asyncio.create_task(publisher.publish(key, entry(2)))
    await asyncio.sleep(0)  # both queued in this tick's batch
    gone.cancel()
    assert (await kept).entry is not None
    assert gone.cancelled()


async def test_a_sender_cancelled_before_it_ran_leaves_no_one_waiting(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """Shutdown can cancel the task that was to send a tick's batch before it ran: its
    requests are cancelled, not left waiting forever, and later publishes still go out."""
    key = topology.key("events")
    publisher = Publisher(redis)
    waiting = asyncio.create_task(publisher.publish(key, entry(1)))
    await asyncio.sleep(0)  # the request queued its XADD; the sender has not run yet
    sender = publisher._next  # noqa: SLF001 - the task a shutdown would cancel
    assert sender is not None
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, timeout=2)
    later = await asyncio.wait_for(publisher.publish(key, entry(2)), timeout=2)
    assert later.entry is not None
    assert await stored(redis, key) == ["d-2"]


async def test_a_webhook_does_not_wait_behind_the_drainers_cut(
    redis: aioredis.Redis, topology: Topology, tmp_path: Path
) -> None:
    """While the drainer cuts the spool (its lock held), a webhook goes to Redis at once."""
    key = topology.key("events")
    await redis.delete(key)
    spool = Spool(tmp_path / "events.spool", max_bytes=1 << 20)
    publisher = Publisher(redis, spool=spool)
    await spool.append(Record(key, events.encode(entry(0)), "d-0"))
    replaying, release = asyncio.Event(), asyncio.Event()

    async def replay(record: Record) -> None:
        replaying.set()
        await release.wait()

    drain = asyncio.create_task(spool.drain(replay))
    await replaying.wait()
    try:
        async with spool.lock:  # as a cut rewriting a large file holds it
            published = await asyncio.wait_for(
                publisher.publish(key, entry(1), delivery="d-1"), timeout=2
            )
    finally:
        release.set()
        await drain
    assert not published.spooled and published.entry is not None
    assert await stored(redis, key) == ["d-1"]
    assert spool.size() == 0
