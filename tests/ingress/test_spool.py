"""The spool: webhooks answered while Redis is down are on disk, then in the stream, in order."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from structlog.testing import capture_logs

from consumers.embedded import EmbeddedRedis
from ingress import events
from ingress.app import create_app
from ingress.errors import PublishError
from ingress.publish import Publisher
from ingress.settings import Settings
from ingress.spool import Record, Spool, SpoolFull, SpoolInUse, frame, scan
from ingress.topology import Topology
from tests import chatwoot
from tests.services import free_port


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


def record(topology: Topology, n: int) -> Record:
    """A spooled webhook whose body carries its number (and a marker a log must not show)."""
    body = b'{"event":"message_created","id":%d,"content":"SECRET-BODY-%d"}' % (n, n)
    entry = events.EventEntry(
        event="message_created", delivery=f"d-{n}", received_at=n, signed=True, body=body
    )
    return Record(topology.key("events"), events.encode(entry), f"d-{n}")


async def stream_numbers(redis: aioredis.Redis, topology: Topology) -> list[int]:
    rows: Any = await redis.xrange(topology.key("events"))
    return [events.decode(events.EventEntry, fields).received_at for _, fields in rows]


async def fill(spool: Spool, topology: Topology, numbers: range) -> None:
    for n in numbers:
        await spool.append(record(topology, n))


async def test_a_torn_last_record_is_cut_and_never_replayed(tmp_path: Path) -> None:
    """A crash mid-append leaves a partial record: never answered 200, so never replayed."""
    spool = Spool(tmp_path / "s", max_bytes=10_000)
    await spool.append(Record("sb:events", {"n": b"1"}))
    with spool.path.open("ab") as torn:
        torn.write(frame(Record("sb:events", {"n": b"2"}))[:-3])
    replayed: list[Record] = []

    async def keep(record: Record) -> None:
        replayed.append(record)

    assert await Spool(spool.path, max_bytes=10_000).drain(keep) == 1
    assert replayed == [Record("sb:events", {"n": b"1"})] and not spool.path.exists()
    assert not spool.quarantine.exists()  # a torn tail is cut, not kept


async def test_torn_record_then_more_then_restart_drains_every_intact_record_in_order(
    tmp_path: Path, topology: Topology, redis: aioredis.Redis
) -> None:
    """Append, tear the last record, append more, restart: every intact record reaches the
    stream in order (a torn record in the middle used to kill the drainer with DecodeError)."""
    path = tmp_path / "events.spool"
    spool = Spool(path, max_bytes=1_000_000)
    await fill(spool, topology, range(1, 4))
    os.truncate(path, path.stat().st_size - 7)  # record 3 torn
    await fill(spool, topology, range(4, 6))
    restarted = Publisher(redis, spool=Spool(path, max_bytes=1_000_000))
    assert await restarted.drain_spool() == 4
    assert await stream_numbers(redis, topology) == [1, 2, 4, 5]
    assert not path.exists()


async def test_a_corrupt_middle_record_is_quarantined_and_the_rest_drain(
    tmp_path: Path, topology: Topology, redis: aioredis.Redis
) -> None:
    """A damaged record is moved to the quarantine file with a log line (no body in it), and
    the records after it still drain, in order."""
    path = tmp_path / "events.spool"
    spool = Spool(path, max_bytes=1_000_000)
    await fill(spool, topology, range(1, 5))
    raw = bytearray(path.read_bytes())
    second = len(frame(record(topology, 1)))
    raw[second + 40] ^= 0xFF  # a flipped bit inside record 2's payload
    path.write_bytes(bytes(raw))
    restarted = Spool(path, max_bytes=1_000_000)
    with capture_logs() as logs:
        assert await Publisher(redis, spool=restarted).drain_spool() == 3
    assert await stream_numbers(redis, topology) == [1, 3, 4]
    assert restarted.quarantine.read_bytes() == bytes(raw[second : 2 * second])
    [line] = [entry for entry in logs if entry["event"] == "spool.quarantined"]
    assert line["bytes"] == second and line["offset"] == second
    assert "SECRET-BODY" not in repr(logs)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param("short", id="short-write-then-zero"),
        pytest.param("enospc", id="enospc-mid-record"),
    ],
)
async def test_a_short_write_is_an_error_and_leaves_no_partial_record(
    fault: str, tmp_path: Path, topology: Topology, redis: aioredis.Redis
) -> None:
    """A write the disk takes only in part is reported (the ingress answers 503), and the bytes
    it did take are cut, so later records still drain."""
    calls = 0

    def failing_write(fd: int, data: memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return os.write(fd, data[:10])
        if fault == "short":
            return 0
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "events.spool"
    await fill(Spool(path, max_bytes=1_000_000), topology, range(1, 2))
    size = path.stat().st_size
    with pytest.raises(OSError):
        await Spool(path, max_bytes=1_000_000, write=failing_write).append(record(topology, 2))
    assert path.stat().st_size == size
    spool = Spool(path, max_bytes=1_000_000)
    await fill(spool, topology, range(3, 4))
    assert await Publisher(redis, spool=spool).drain_spool() == 2
    assert await stream_numbers(redis, topology) == [1, 3]


async def test_a_write_the_spool_refuses_is_a_publish_error(
    tmp_path: Path, topology: Topology
) -> None:
    """Redis down and the spool refusing the write: PublishError (503), never a 200."""

    def no_space(fd: int, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2)
    spool = Spool(tmp_path / "s", max_bytes=1_000_000, write=no_space)
    with pytest.raises(PublishError, match="spool refused"):
        await Publisher(dead, spool=spool).publish(topology.key("events"), entry(1))
    await dead.aclose()


def entry(n: int) -> events.EventEntry:
    return events.EventEntry(event="message_created", received_at=n, signed=True, body=b"{}")


async def test_appends_do_not_wait_for_a_drain(
    tmp_path: Path, topology: Topology, redis: aioredis.Redis
) -> None:
    """While the drainer publishes, a new record is appended at once and kept after the
    drained ones; the next drain delivers it."""
    spool = Spool(tmp_path / "s", max_bytes=1_000_000)
    await fill(spool, topology, range(1, 3))
    release = asyncio.Event()
    published: list[Record] = []

    async def slow(item: Record) -> None:
        await release.wait()
        published.append(item)

    draining = asyncio.create_task(spool.drain(slow))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(spool.append(record(topology, 3)), timeout=2)
    release.set()
    assert await draining == 2
    assert published == [record(topology, 1), record(topology, 2)]
    assert await Publisher(redis, spool=spool).drain_spool() == 1
    assert await stream_numbers(redis, topology) == [3]


async def test_a_drain_cut_short_keeps_what_it_did_not_publish(
    tmp_path: Path, topology: Topology
) -> None:
    """Publishing fails part way: what was published is dropped, the rest stays, in order."""
    spool = Spool(tmp_path / "s", max_bytes=1_000_000)
    await fill(spool, topology, range(1, 5))
    published: list[Record] = []

    async def fail_third(item: Record) -> None:
        if len(published) == 2:
            raise ConnectionError("Redis went away")
        published.append(item)

    with pytest.raises(ConnectionError):
        await spool.drain(fail_third)
    rest: list[Record] = []

    async def keep(item: Record) -> None:
        rest.append(item)

    assert await Spool(spool.path, max_bytes=1_000_000).drain(keep) == 2
    assert rest == [record(topology, 3), record(topology, 4)]


async def test_the_drainer_outlives_any_exception(
    tmp_path: Path, topology: Topology, redis: aioredis.Redis
) -> None:
    """An unexpected failure (here the spool path is a directory) is logged and retried: the
    drainer task goes on, and drains once the fault is gone (it used to die silently)."""
    path = tmp_path / "events.spool"
    path.mkdir()
    (path / "x").write_bytes(b"x")
    publisher = Publisher(redis, spool=Spool(path, max_bytes=1_000_000))
    with capture_logs() as logs:
        drainer = asyncio.create_task(publisher.keep_draining(every_s=0.05))
        await asyncio.sleep(0.3)
        assert not drainer.done()
        assert any(entry["event"] == "spool.drain_failed" for entry in logs)
    (path / "x").unlink()
    path.rmdir()
    await fill(Spool(path, max_bytes=1_000_000), topology, range(1, 3))
    for _ in range(100):
        if await stream_numbers(redis, topology) == [1, 2]:
            break
        await asyncio.sleep(0.1)
    assert await stream_numbers(redis, topology) == [1, 2]
    drainer.cancel()


async def test_the_drainer_outlives_a_redis_error_reply(
    tmp_path: Path, topology: Topology, redis: aioredis.Redis
) -> None:
    """A Redis error reply (WRONGTYPE here) is logged and retried; the record drains once the
    key is fixed."""
    await redis.set(topology.key("events"), "not a stream")
    spool = Spool(tmp_path / "s", max_bytes=1_000_000)
    await fill(spool, topology, range(1, 2))
    with capture_logs() as logs:
        drainer = asyncio.create_task(Publisher(redis, spool=spool).keep_draining(every_s=0.05))
        await asyncio.sleep(0.3)
        assert not drainer.done()
        assert any(entry["event"] == "spool.drain_failed" for entry in logs)
    await redis.delete(topology.key("events"))
    for _ in range(100):
        if not spool.path.exists():
            break
        await asyncio.sleep(0.1)
    assert await stream_numbers(redis, topology) == [1]
    drainer.cancel()


async def ready_of(app: Any) -> httpx.Response:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            return await client.get("/ready")


async def test_ready_is_503_when_the_spool_cannot_be_written(
    tmp_path: Path, topology: Topology, redis: aioredis.Redis
) -> None:
    """A spool under a regular file (ENOTDIR, even for root) makes /ready unready, though Redis
    answers: the next outage would lose webhooks."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    settings = Settings.from_env({"CHATWOOT_WEBHOOK_SECRETS": chatwoot.SECRET})
    app = create_app(settings, topology, redis=redis, spool_path=blocker / "events.spool")
    response = await ready_of(app)
    assert response.status_code == 503
    assert response.json()["spool"] == "spool not writable"


async def test_ready_is_503_when_the_drainer_is_dead(
    tmp_path: Path, topology: Topology, redis: aioredis.Redis
) -> None:
    """/ready is 200 with a live drainer and 503 once the drainer task has ended."""
    settings = Settings.from_env({"CHATWOOT_WEBHOOK_SECRETS": chatwoot.SECRET})
    app = create_app(settings, topology, redis=redis, spool_path=tmp_path / "events.spool")
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            assert (await client.get("/ready")).status_code == 200
            drainer = app.state.ingress.drainer
            drainer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await drainer
            response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["spool"] == "spool drainer stopped"


async def test_concurrent_drains_lose_nothing(tmp_path: Path, topology: Topology) -> None:
    """Two drains at once (the drainer and a shutdown drain, say) take turns: neither cuts
    records appended after the other one's cut."""
    spool = Spool(tmp_path / "s", max_bytes=1_000_000)
    await fill(spool, topology, range(1, 3))
    seen: list[int] = []
    gate = asyncio.Event()

    async def held(item: Record) -> None:
        await gate.wait()
        seen.append(events.decode(events.EventEntry, item.fields).received_at)

    async def keep(item: Record) -> None:
        seen.append(events.decode(events.EventEntry, item.fields).received_at)

    first = asyncio.create_task(spool.drain(held))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(spool.drain(keep))
    await asyncio.sleep(0.05)
    await spool.append(record(topology, 3))
    gate.set()
    await asyncio.gather(first, second)
    await spool.drain(keep)
    assert seen == [1, 2, 3]


ONE = frame(Record("k", {"n": b"1"}))
TWO = frame(Record("k", {"n": b"2", "body": b"\xa5SB1 a magic inside a payload"}))


def flipped(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]


@pytest.mark.parametrize(
    ("raw", "good", "damaged", "torn_at"),
    [
        pytest.param(b"", [], [], None, id="empty"),
        pytest.param(ONE + TWO, [(0, len(ONE)), (len(ONE), len(ONE + TWO))], [], None, id="whole"),
        pytest.param(ONE + TWO[:5], [(0, len(ONE))], [], len(ONE), id="torn-in-header"),
        pytest.param(ONE + TWO[:-1], [(0, len(ONE))], [], len(ONE), id="torn-in-payload"),
        pytest.param(ONE + b"\xa5S", [(0, len(ONE))], [], len(ONE), id="torn-in-magic"),
        pytest.param(ONE + flipped(TWO, 20), [(0, len(ONE))], [(len(ONE), len(ONE + TWO))], None,
                     id="bad-crc-at-end-is-damage"),
        pytest.param(flipped(ONE, 20) + TWO, [(len(ONE), len(ONE + TWO))], [(0, len(ONE))], None,
                     id="bad-crc-first"),
        pytest.param(b"junk" + ONE, [(4, 4 + len(ONE))], [(0, 4)], None, id="junk-before"),
        pytest.param(ONE + b"\x00" * 3, [(0, len(ONE))], [(len(ONE), len(ONE) + 3)], None,
                     id="zeros-at-end-are-damage"),
        pytest.param(flipped(ONE, 5) + ONE, [(len(ONE), 2 * len(ONE))], [(0, len(ONE))], None,
                     id="huge-length"),
        pytest.param(ONE[:8] + TWO, [(8, 8 + len(TWO))], [(0, 8)], None, id="torn-then-more"),
    ],
)  # fmt: skip
def test_scan_finds_whole_records_damage_and_a_torn_tail(
    raw: bytes, good: list[tuple[int, int]], damaged: list[tuple[int, int]], torn_at: int | None
) -> None:
    """The reader resyncs on the next magic whose checksum verifies; a magic inside a payload
    is not mistaken for a record; only an unfinished last record counts as torn."""
    found = scan(raw)
    assert (found.good, found.damaged, found.torn_at) == (good, damaged, torn_at)


def test_scan_calls_a_tail_stating_an_impossible_length_damage() -> None:
    """A flipped bit in the last record's length states a record no append could write: it
    is damage (quarantined), not a torn tail (cut); a plausible one is still torn."""
    huge = flipped(TWO, 4)  # the length's top byte
    found = scan(ONE + huge, max_record=10_000)
    assert (found.good, found.damaged, found.torn_at) == (
        [(0, len(ONE))], [(len(ONE), len(ONE + huge))], None
    )  # fmt: skip
    assert scan(ONE + TWO[:-1], max_record=10_000).torn_at == len(ONE)


async def test_a_flipped_bit_in_the_last_length_is_quarantined(tmp_path: Path) -> None:
    """Three answered webhooks, a bit flipped in the last one's length: the first two stay,
    the third's bytes go to the quarantine rather than vanish."""
    spool = Spool(tmp_path / "s.spool", max_bytes=10**6)
    last = Record("k", {"body": b"x" * 50}, "d-2")
    for n in range(2):
        await spool.append(Record("k", {"body": b"x" * 50}, f"d-{n}"))
    await spool.append(last)
    raw = bytearray(spool.path.read_bytes())
    raw[len(raw) - len(frame(last)) + 4] ^= 0x80
    spool.path.write_bytes(bytes(raw))
    fresh = Spool(spool.path, max_bytes=10**6)
    assert await fresh.check() == len(raw) - len(frame(last))
    assert fresh.quarantine.read_bytes() == bytes(raw[len(raw) - len(frame(last)) :])


async def test_a_full_spool_while_redis_answers_stores_the_webhook_directly(
    redis: aioredis.Redis, tmp_path: Path, topology: Topology
) -> None:
    """The spool, full after an outage, drains; a webhook arriving meanwhile is XADDed at
    once (ahead of the spooled ones) rather than refused with Redis up."""
    spool = Spool(tmp_path / "s.spool", max_bytes=len(frame(record(topology, 1))) * 3)
    await fill(spool, topology, range(1, 4))
    publisher = Publisher(redis, spool=spool)
    done = await publisher.publish(topology.key("events"), entry(99), delivery="d-99")
    assert done.entry is not None and not done.spooled
    assert await publisher.drain_spool() == 3
    assert await stream_numbers(redis, topology) == [99, 1, 2, 3]


async def test_a_full_spool_and_redis_down_is_a_publish_error(
    tmp_path: Path, topology: Topology
) -> None:
    """Spool full and Redis away: the webhook is refused (503), not lost in silence."""
    spool = Spool(tmp_path / "s.spool", max_bytes=len(frame(record(topology, 1))))
    await fill(spool, topology, range(1, 2))
    down = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2)
    with pytest.raises(PublishError, match="spool refused"):
        await Publisher(down, spool=spool).publish(topology.key("events"), entry(2))
    await down.aclose()


async def test_a_long_drain_frees_room_as_it_goes(tmp_path: Path, topology: Topology) -> None:
    """A drain longer than `cut_every` drops what it published batch by batch: the spool
    shrinks while it drains, and nothing is published twice or lost."""
    spool = Spool(tmp_path / "s.spool", max_bytes=10**7)
    spool.cut_every = 1  # cut after every batch read
    big = [Record("k", {"n": str(n).encode(), "body": b"x" * 100_000}) for n in range(8)]
    for item in big:
        await spool.append(item)
    sizes: list[int] = []
    published: list[Record] = []

    async def keep(item: Record) -> None:
        sizes.append(spool.size())
        published.append(item)

    assert await spool.drain(keep) == 8
    assert published == big and not spool.path.exists()
    assert sizes[-1] < sizes[0]


async def test_a_spool_of_the_previous_version_is_converted_and_drained(
    redis: aioredis.Redis, tmp_path: Path, topology: Topology
) -> None:
    """A spool the previous version left (a 4-byte length, then the msgpack record; its
    last record torn) is converted to this framing on open and drained, nothing quarantined."""
    path = tmp_path / "events-8000.spool"
    old = [record(topology, n) for n in (1, 2)]
    encoded = [msgspec.msgpack.encode(item) for item in old]
    torn = len(encoded[1]).to_bytes(4, "big") + encoded[1][:5]
    path.write_bytes(b"".join(len(e).to_bytes(4, "big") + e for e in encoded) + torn)
    spool = Spool(path, max_bytes=10**6)
    assert await Publisher(redis, spool=spool).drain_spool() == 2
    assert await stream_numbers(redis, topology) == [1, 2]
    assert not spool.quarantine.exists() and not path.exists()


async def test_a_second_ingress_on_the_same_spool_refuses_to_start(
    tmp_path: Path, topology: Topology, redis: aioredis.Redis
) -> None:
    """Two processes draining one spool would each cut the same prefix and lose a record:
    the second one to start refuses, saying why; once the first stops, one may start."""
    settings = Settings.from_env({"CHATWOOT_WEBHOOK_SECRETS": chatwoot.SECRET})
    path = tmp_path / "spool" / "events-8000.spool"
    first = create_app(settings, topology, redis=redis, spool_path=path)
    async with LifespanManager(first):
        second = create_app(settings, topology, redis=redis, spool_path=path)
        with capture_logs() as logs, pytest.raises(SpoolInUse, match="another ingress"):
            async with LifespanManager(second):
                pass
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["spool.in_use"]
    third = create_app(settings, topology, redis=redis, spool_path=path)
    async with LifespanManager(third):
        pass


async def test_a_cut_cancelled_mid_way_still_ends_before_anything_else_rewrites(
    tmp_path: Path, topology: Topology
) -> None:
    """A drain cancelled at shutdown while its cut waits or runs: the cut completes (holding
    the lock), so the last-chance drain neither overlaps it nor publishes its records again."""
    spool = Spool(tmp_path / "s.spool", max_bytes=10**6)
    await fill(spool, topology, range(1, 4))
    published: list[Record] = []

    async def keep(item: Record) -> None:
        published.append(item)
        if len(published) == 3:
            await spool.lock.acquire()  # the cut has to wait: the drain is cancelled meanwhile

    draining = asyncio.create_task(spool.drain(keep))
    while len(published) < 3 or not spool.lock.locked():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    draining.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(draining, timeout=5)
    spool.lock.release()
    await asyncio.wait_for(spool.settled(), timeout=5)
    assert await asyncio.wait_for(spool.drain(keep), timeout=5) == 0
    assert len(published) == 3 and not spool.path.exists()


def test_python_m_ingress_on_a_held_spool_exits_2_with_one_line(
    tmp_path: Path, streams_file: Any
) -> None:
    """A second `python -m ingress` with the same SWITCHBOARD_HOME and port says in one line
    that the spool is held, and exits 2 without serving."""
    port = free_port()
    held = Spool(tmp_path / "spool" / f"events-{port}.spool", max_bytes=1)
    held.hold()
    env = {"REDIS_URL": "redis://127.0.0.1:1", "SWITCHBOARD_STREAMS": str(streams_file),
           "CHATWOOT_WEBHOOK_SECRETS": chatwoot.SECRET, "SWITCHBOARD_HOME": str(tmp_path),
           "PORT": str(port), "PATH": "/usr/bin:/bin"}  # fmt: skip
    root = Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ingress"], env=env, cwd=root, capture_output=True, timeout=60
        )
    finally:
        held.release()
    assert done.returncode == 2
    [line] = done.stderr.decode().splitlines()
    assert line.startswith("switchboard ingress: spool ") and "another ingress" in line
