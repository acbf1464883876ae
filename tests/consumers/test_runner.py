"""The consumer-group loop against a real Redis: each Streams guarantee on its own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from consumers.embedded import free_port
from consumers.errors import PermanentError, RetryableError, StoreError
from consumers.runner import Runner, StreamEntry, by_conversation
from ingress.connect import redis_client
from ingress.topology import GroupSpec, Topology
from tests.pipeline import xadd

GROUP = "testers"


class Recorder:
    """A handler that records what it saw and fails for the entries it is told to."""

    def __init__(self, fail: set[bytes] | None = None, error: Exception | None = None) -> None:
        self.seen: list[StreamEntry] = []
        self.fail = fail or set()
        self.error = error or RetryableError("told to fail")

    async def __call__(self, entry: StreamEntry) -> None:
        self.seen.append(entry)
        if entry.fields.get(b"n") in self.fail:
            raise self.error


def runner(
    redis: aioredis.Redis,
    topology: Topology,
    handler: Any,
    *,
    consumer: str = "c1",
    claim_idle_ms: int = 60_000,
    max_deliveries: int = 3,
    batch: int = 10,
) -> Runner:
    spec = GroupSpec(
        stream="events",
        batch=batch,
        block_ms=50,
        claim_idle_ms=claim_idle_ms,
        max_deliveries=max_deliveries,
    )
    return Runner(
        redis,
        key=topology.key("events"),
        group=GROUP,
        spec=spec,
        dead_key=topology.key("dead"),
        handler=handler,
        consumer=consumer,
    )


async def add(redis: aioredis.Redis, topology: Topology, *numbers: int) -> list[str]:
    ids = []
    for n in numbers:
        ids.append(await xadd(redis, topology.key("events"), {"n": str(n)}))
    return ids


async def pending(redis: aioredis.Redis, topology: Topology) -> int:
    summary: Any = await redis.xpending(topology.key("events"), GROUP)
    return int(summary["pending"])


async def dead(redis: aioredis.Redis, topology: Topology) -> list[dict[bytes, bytes]]:
    rows: Any = await redis.xrange(topology.key("dead"))
    return [fields for _, fields in rows]


async def test_group_creation_is_idempotent(redis: aioredis.Redis, topology: Topology) -> None:
    """Creating the group twice keeps one group (and creates the stream the first time)."""
    r = runner(redis, topology, Recorder())
    await r.ensure_group()
    await r.ensure_group()
    groups: Any = await redis.xinfo_groups(topology.key("events"))
    assert [g["name"] for g in groups] == [GROUP.encode()]


async def test_ack_after_handling(redis: aioredis.Redis, topology: Topology) -> None:
    """Handled entries are acknowledged; nothing stays pending."""
    await runner(redis, topology, Recorder()).ensure_group()
    await add(redis, topology, 1, 2, 3)
    handler = Recorder()
    assert await runner(redis, topology, handler).drain() == 3
    assert [e.fields[b"n"] for e in handler.seen] == [b"1", b"2", b"3"]
    assert await pending(redis, topology) == 0


async def test_failed_entry_stays_pending_and_does_not_block(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """A failing entry is not acknowledged; the entries behind it are handled and acked."""
    await runner(redis, topology, Recorder()).ensure_group()
    await add(redis, topology, 1, 2, 3)
    handler = Recorder(fail={b"2"})
    await runner(redis, topology, handler).drain()
    assert len(handler.seen) == 3
    assert await pending(redis, topology) == 1
    assert await dead(redis, topology) == []


async def test_dead_consumers_entries_are_reclaimed(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """Entries read by a consumer that died are handled by another after claim_idle_ms."""
    await runner(redis, topology, Recorder()).ensure_group()
    await add(redis, topology, 1, 2)
    # A consumer reads both entries and dies before acknowledging them.
    await redis.xreadgroup(GROUP, "died", {topology.key("events"): ">"}, count=10)
    handler = Recorder()
    survivor = runner(redis, topology, handler, consumer="c2", claim_idle_ms=50)
    await asyncio.sleep(0.1)
    assert await survivor.drain() == 2
    assert [(e.fields[b"n"], e.deliveries) for e in handler.seen] == [(b"1", 2), (b"2", 2)]
    assert await pending(redis, topology) == 0


async def test_delivery_counts_survive_restarts_and_end_in_dead(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """Each restarted consumer sees the count so far; at max_deliveries the entry is dead."""
    await runner(redis, topology, Recorder()).ensure_group()
    [poison] = await add(redis, topology, 7)
    counts = []
    for attempt in range(3):  # three processes in turn, each failing on it
        handler = Recorder(fail={b"7"})
        await runner(redis, topology, handler, consumer=f"p{attempt}", claim_idle_ms=20).drain()
        counts.append(handler.seen[-1].deliveries)
        await asyncio.sleep(0.05)
    assert counts == [1, 2, 3]
    [letter] = await dead(redis, topology)
    assert letter[b"id"] == poison.encode() and letter[b"reason"] == b"max_deliveries"
    assert letter[b"stream"] == topology.key("events").encode()
    assert letter[b"group"] == GROUP.encode() and letter[b"deliveries"] == b"3"
    assert letter[b"n"] == b"7" and b"told to fail" in letter[b"error"]
    assert await pending(redis, topology) == 0


async def test_entry_that_kills_its_consumer_ends_dead_unrun(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """Reclaimed past max_deliveries without ever finishing, the entry is dead-lettered."""
    await runner(redis, topology, Recorder()).ensure_group()
    await add(redis, topology, 9)
    key = topology.key("events")
    for i in range(3):  # three consumers crash on it (read, never ack)
        await redis.xautoclaim(key, GROUP, f"crash{i}", min_idle_time=0, start_id="0-0")
        if i == 0:
            await redis.xreadgroup(GROUP, "crash0", {key: ">"})
    handler = Recorder()
    await asyncio.sleep(0.03)
    await runner(redis, topology, handler, consumer="c9", claim_idle_ms=20).drain()
    assert handler.seen == []
    [letter] = await dead(redis, topology)
    assert letter[b"reason"] == b"max_deliveries"


@pytest.mark.parametrize(
    "error", [PermanentError("bad reply"), RetryableError("x")], ids=["permanent", "retryable"]
)
async def test_permanent_errors_die_at_once(
    error: Exception, redis: aioredis.Redis, topology: Topology
) -> None:
    """A permanent failure is dead-lettered on its first delivery; a retryable one is not."""
    await runner(redis, topology, Recorder()).ensure_group()
    await add(redis, topology, 1)
    await runner(redis, topology, Recorder(fail={b"1"}, error=error)).drain()
    letters = await dead(redis, topology)
    assert len(letters) == (1 if isinstance(error, PermanentError) else 0)


async def test_stop_finishes_the_batch_in_hand(redis: aioredis.Redis, topology: Topology) -> None:
    """stop() during a batch: the batch is finished and acknowledged, then run() returns."""
    started = asyncio.Event()
    release = asyncio.Event()
    seen: list[bytes] = []

    async def slow(entry: StreamEntry) -> None:
        started.set()
        await release.wait()
        seen.append(entry.fields[b"n"])

    r = runner(redis, topology, slow)
    await r.ensure_group()
    await add(redis, topology, 1, 2)
    task = asyncio.create_task(r.run())
    await started.wait()
    r.stop()
    release.set()
    await asyncio.wait_for(task, timeout=5)
    assert seen == [b"1", b"2"]
    assert await pending(redis, topology) == 0
    await add(redis, topology, 3)
    assert seen == [b"1", b"2"]  # stopped: reads nothing more


async def test_clean_stop_removes_an_idle_consumer(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """A consumer that stops owning nothing leaves the group; the group's list stays short."""
    r = runner(redis, topology, Recorder())
    task = asyncio.create_task(r.run())
    await asyncio.sleep(0.1)
    r.stop()
    await asyncio.wait_for(task, timeout=5)
    consumers: Any = await redis.xinfo_consumers(topology.key("events"), GROUP)
    assert consumers == []


async def test_an_outage_is_waited_out_without_counting(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """While a dependency is down the entry stays with its consumer, retried in place, and
    its delivery count does not grow: a long outage dead-letters nothing."""
    attempts: list[int] = []

    async def flaky(entry: StreamEntry) -> None:
        attempts.append(entry.deliveries)
        if len(attempts) < 4:
            raise StoreError("connection refused", retryable=True, outage=True)

    await runner(redis, topology, Recorder()).ensure_group()
    await add(redis, topology, 1)
    await runner(redis, topology, flaky, max_deliveries=2).drain()
    assert attempts == [1, 1, 1, 1]
    assert await pending(redis, topology) == 0 and await dead(redis, topology) == []


async def test_partitions_keep_order_and_run_side_by_side(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """Entries of one conversation are handled in stream order; another conversation's entries
    run meanwhile (here the first entry of A waits until B has started: one at a time would
    never finish)."""
    b_started = asyncio.Event()
    seen: list[bytes] = []

    async def handler(entry: StreamEntry) -> None:
        name = entry.fields[b"n"]
        if name == b"a1":
            await asyncio.wait_for(b_started.wait(), timeout=5)
        if name.startswith(b"b"):
            b_started.set()
        seen.append(name)

    r = runner(redis, topology, handler)
    r.partition = by_conversation
    await r.ensure_group()
    for conversation, name in [("1", "a1"), ("2", "b1"), ("1", "a2"), ("2", "b2"), ("1", "a3")]:
        await xadd(redis, topology.key("events"), {"account": "3", "conversation": conversation,
                                                   "n": name})  # fmt: skip
    assert await r.drain() == 5
    assert [n for n in seen if n.startswith(b"a")] == [b"a1", b"a2", b"a3"]
    assert seen.index(b"b1") < seen.index(b"a1")
    assert await pending(redis, topology) == 0


async def test_a_redis_oom_reply_is_waited_out_without_counting(
    redis: aioredis.Redis, topology: Topology, redis_url: str
) -> None:
    """Redis answering OOM (maxmemory reached) to the handler's write is an outage: the entry
    is held without counting a delivery, and applied once Redis has room again."""
    admin = aioredis.Redis.from_url(redis_url)
    before: Any = await admin.config_get("maxmemory")
    written: list[str] = []

    async def handler(entry: StreamEntry) -> None:
        if not written:
            await admin.config_set("maxmemory", 1)  # full from now on: writes answer OOM
            written.append("oom")
        await redis.set(f"{topology.prefix}:oom-test", "x" * 100)
        written.append("stored")

    await runner(redis, topology, Recorder()).ensure_group()
    await add(redis, topology, 1)
    r = runner(redis, topology, handler)
    task = asyncio.create_task(r.run())
    try:
        await asyncio.sleep(0.5)
        assert written == ["oom"]  # still trying
    finally:
        await admin.config_set("maxmemory", before["maxmemory"])
    for _ in range(100):
        if not await pending(redis, topology):
            break
        await asyncio.sleep(0.05)
    r.stop()
    await asyncio.wait_for(task, timeout=5)
    await admin.aclose()
    assert written == ["oom", "stored"]
    assert await dead(redis, topology) == []
    assert await pending(redis, topology) == 0


async def test_an_unreachable_cluster_in_a_handler_is_waited_out_not_dead_lettered(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """A Redis Cluster no node of which answers (RedisClusterException) is an outage: held."""
    cluster = redis_client(f"redis+cluster://127.0.0.1:{free_port()}", socket_connect_timeout=0.2)
    tries: list[str] = []

    async def handler(entry: StreamEntry) -> None:  # e.g. deliver's rate limit on the cluster
        tries.append(entry.id)
        await cluster.hgetall(f"{{{topology.key('outbound')}}}:breaker:1")

    await runner(redis, topology, Recorder()).ensure_group()
    await add(redis, topology, 1)
    r = runner(redis, topology, handler)
    task = asyncio.create_task(r.run())
    for _ in range(100):
        if len(tries) >= 2:
            break
        await asyncio.sleep(0.05)
    r.stop()
    await asyncio.wait_for(task, timeout=5)
    await cluster.aclose()
    assert len(tries) >= 2  # tried again in place
    assert await dead(redis, topology) == []
    assert await pending(redis, topology) == 1


async def test_a_non_utf8_field_name_is_dead_lettered_byte_for_byte(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """An entry whose field name is not UTF-8 (an agent's own XADD) is dead-lettered with
    that name's bytes, and acknowledged: it holds up nothing."""
    r = runner(redis, topology, Recorder(fail={b"1"}, error=PermanentError("bad entry")))
    await r.ensure_group()
    await redis.xadd(topology.key("events"), {b"\xff\xfe": b"x", b"n": b"1"})
    await add(redis, topology, 2)
    await r.drain()
    [letter] = await dead(redis, topology)
    assert letter[b"\xff\xfe"] == b"x" and letter[b"n"] == b"1"
    assert letter[b"reason"] == b"permanent"
    assert await pending(redis, topology) == 0


async def test_a_dead_letter_that_cannot_be_written_keeps_its_entry_and_blocks_nothing(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """When the dead stream refuses the letter, the entry stays pending (it is nowhere else),
    the entries behind it in its partition are handled, and a later reclaim dead-letters it."""
    await redis.set(topology.key("dead"), "not a stream")  # XADD to it: WRONGTYPE
    handler = Recorder(fail={b"1"}, error=PermanentError("bad entry"))
    r = runner(redis, topology, handler)
    await r.ensure_group()
    await add(redis, topology, 1, 2, 3)
    await r.drain()
    assert [e.fields[b"n"] for e in handler.seen] == [b"1", b"2", b"3"]
    assert await pending(redis, topology) == 1
    await redis.delete(topology.key("dead"))
    await asyncio.sleep(0.02)
    await runner(redis, topology, handler, consumer="c2", claim_idle_ms=10).drain()
    [letter] = await dead(redis, topology)
    assert letter[b"n"] == b"1"


async def test_finished_partitions_are_acked_while_one_waits_out_an_outage(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """One conversation held in an outage wait does not hold back the acks of the others in
    its batch; the held entry itself is acked only once it is applied."""
    release = asyncio.Event()

    async def handler(entry: StreamEntry) -> None:
        if entry.fields[b"conversation"] == b"1" and not release.is_set():
            raise StoreError("index rebuild under way", retryable=True, outage=True)

    r = runner(redis, topology, handler)
    r.partition = by_conversation
    r.ack_every_s = 0.05
    await r.ensure_group()
    for conversation in ("1", "2", "3"):
        await xadd(redis, topology.key("events"), {"account": "3", "conversation": conversation})
    task = asyncio.create_task(r.drain())
    try:
        for _ in range(100):
            if await pending(redis, topology) == 1:
                break
            await asyncio.sleep(0.02)
        held: Any = await redis.xpending_range(topology.key("events"), GROUP, "-", "+", 10)
        assert [row["times_delivered"] for row in held] == [1]
        assert not task.done()
    finally:
        release.set()
    assert await asyncio.wait_for(task, timeout=10) == 3
    assert await pending(redis, topology) == 0


async def test_a_lost_group_is_recreated(redis: aioredis.Redis, topology: Topology) -> None:
    """The stream deleted (or Redis restarted without its data): the next XADD recreates the
    stream but not the group; the runner recreates the group, says so, and goes on."""
    seen: list[bytes] = []

    async def handler(entry: StreamEntry) -> None:
        seen.append(entry.fields[b"n"])

    r = runner(redis, topology, handler)
    with capture_logs() as logs:
        task = asyncio.create_task(r.run())
        try:
            await r.ensure_group()
            await add(redis, topology, 1)
            for _ in range(200):
                if seen:
                    break
                await asyncio.sleep(0.02)
            await redis.delete(topology.key("events"))
            await add(redis, topology, 2)
            for _ in range(400):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.02)
        finally:
            r.stop()
            await asyncio.wait_for(task, timeout=10)
    assert seen == [b"1", b"2"]
    assert any(line["event"] == "runner.group_lost" for line in logs)
    assert await pending(redis, topology) == 0
