"""Bounded memory: trimming never drops an entry some group still needs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import redis.asyncio as aioredis

from consumers.retention import Retention, safe_minid
from consumers.store import Store
from ingress.topology import Topology
from tests.pipeline import feed, rows, xadd


async def test_trim_keeps_what_any_group_still_needs(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Entries acknowledged by every group go; pending or unread ones stay."""
    key = topology.key("events")
    ids = [await xadd(redis, key, {"n": str(n)}) for n in range(6)]
    await redis.xgroup_create(key, "fast", id="0")
    await redis.xgroup_create(key, "slow", id="0")
    read: Any = await redis.xreadgroup("fast", "f", {key: ">"})
    await redis.xack(key, "fast", *[i for i, _ in read[0][1]])  # fast: all done
    await redis.xreadgroup("slow", "s", {key: ">"}, count=4)  # slow: 4 read, none acked
    await redis.xack(key, "slow", ids[0], ids[1])
    assert await safe_minid(redis, key) == ids[2]
    await Retention(store, redis, topology).sweep()
    left: Any = await redis.xrange(key)
    assert [i.decode() for i, _ in left] == ids[2:]


async def test_no_group_means_no_trim(redis: aioredis.Redis, topology: Topology) -> None:
    """A stream nobody reads yet is not trimmed: nothing is known to be consumed."""
    key = topology.key("turns")
    await xadd(redis, key, {"n": "1"})
    assert await safe_minid(redis, key) is None


async def test_dead_stream_is_capped(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """The dead stream keeps about `maxlen` entries."""
    key = topology.key("dead")
    for n in range(300):
        await xadd(redis, key, {"n": str(n)})
    small = topology.streams | {"dead": topology.streams["dead"].__class__(maxlen=100)}
    capped = topology.__class__(**{**_fields(topology), "streams": small})
    await Retention(store, redis, capped).sweep()
    assert 100 <= int(await redis.xlen(key)) < 300


async def test_audit_rows_expire(redis: aioredis.Redis, store: Store, topology: Topology) -> None:
    """webhook_events older than audit_days are deleted."""
    await feed(redis, topology, "message_created__private_note")
    from tests.pipeline import persist_runner

    await persist_runner(redis, store, topology).drain()
    later = Retention(
        store, redis, topology, clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    )
    await later.sweep()
    assert await rows(store, "SELECT 1 FROM webhook_events") == []


def _fields(topology: Topology) -> dict[str, Any]:
    return {name: getattr(topology, name) for name in topology.__struct_fields__}
