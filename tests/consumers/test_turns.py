"""The turns worker: due turns emitted once, whatever the number of workers."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import msgspec
import redis.asyncio as aioredis

from consumers.store import Store
from consumers.turns import LEASE, TurnEmitter
from ingress.topology import Topology
from tests import chatwoot
from tests.pipeline import persist, xrange


async def test_several_workers_emit_each_burst_once(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Three workers racing over 30 due conversations emit 30 turns, one each."""
    payloads = []
    for n in range(30):
        data = chatwoot.payload("message_created__whatsapp_incoming_phone")
        data["id"], data["conversation"]["id"] = 920000 + n, 2000 + n
        data["conversation"]["meta"]["sender"]["phone_number"] = f"+1555000{n:04d}"
        payloads.append(data)
    await persist(redis, store, topology, *payloads)
    workers = [TurnEmitter(store, redis, topology, batch=4) for _ in range(3)]
    emitted = await asyncio.gather(*(w.drain() for w in workers))
    turns = await xrange(redis, topology.key("turns"))
    assert sum(emitted) == 30 and len(turns) == 30
    assert len({fields[b"turn"] for _, fields in turns}) == 30


async def test_schedule_survives_a_restart(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A turn scheduled before the workers stopped is emitted by a new worker when due."""
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")
    early = TurnEmitter(
        store, redis, topology, clock=lambda: dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    )
    assert await early.drain() == 0  # not due yet at that time
    assert await TurnEmitter(store, redis, topology).drain() == 1  # a fresh worker, later


async def test_a_worker_dying_after_xadd_does_not_emit_twice(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A worker that XADDed a turn and died before marking it: after the lease, another
    worker emits the same turn id, and the stream still holds it once."""
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")
    now = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)  # past the debounce
    dying = TurnEmitter(store, redis, topology, clock=lambda: now)
    due, claimed = await dying.claim()
    assert due == 1
    for item in claimed:
        await dying.publish(item)  # ... and the worker dies here, before `mark`
    during = TurnEmitter(store, redis, topology, clock=lambda: now + LEASE / 2)
    assert await during.drain() == 0  # leased: nobody takes it meanwhile
    after = TurnEmitter(store, redis, topology, clock=lambda: now + LEASE * 2)
    assert await after.drain() == 1
    turns = await xrange(redis, topology.key("turns"))
    assert len(turns) == 1
    assert await TurnEmitter(store, redis, topology, clock=lambda: now + LEASE * 4).drain() == 0


async def test_a_message_during_emission_keeps_its_own_turn(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A customer message stored while a turn is being emitted (no lock held) is not swept
    away by marking that turn emitted: it gets a turn of its own."""
    first = chatwoot.payload("message_created__whatsapp_incoming_phone")
    await persist(redis, store, topology, first)
    now = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    worker = TurnEmitter(store, redis, topology, clock=lambda: now)
    _, claimed = await worker.claim()
    await worker.publish(claimed[0])
    second = chatwoot.payload("message_created__whatsapp_incoming_phone")
    second["id"] = first["id"] + 10
    await persist(redis, store, topology, second)
    await worker.mark(claimed)
    later = TurnEmitter(store, redis, topology, clock=lambda: now + dt.timedelta(minutes=10))
    assert await later.drain() == 1
    turns = await xrange(redis, topology.key("turns"))
    assert [fields[b"through"] for _, fields in turns] == [
        str(first["id"]).encode(),
        str(second["id"]).encode(),
    ]


async def _emitted_after(
    redis: aioredis.Redis, store: Store, topology: Topology, conversation: int
) -> float:
    """With the real worker running (polling every 5 s), persist a customer message of a new
    conversation; seconds until its turn is on the stream."""
    slow = msgspec.structs.replace(topology.turns, poll_ms=5000)
    worker = TurnEmitter(store, redis, msgspec.structs.replace(topology, turns=slow))
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)  # past its first look: the worker is waiting now
        data = chatwoot.payload("message_created__whatsapp_incoming_phone")
        data["id"], data["conversation"]["id"] = 930000 + conversation, conversation
        data["conversation"]["meta"]["sender"]["phone_number"] = f"+1555{conversation:07d}"
        started = time.monotonic()
        await persist(redis, store, msgspec.structs.replace(topology, turns=slow), data)
        while time.monotonic() - started < 10:
            turns = await xrange(redis, topology.key("turns"))
            if any(f[b"conversation"] == str(conversation).encode() for _, f in turns):
                return time.monotonic() - started
            await asyncio.sleep(0.01)
        raise AssertionError("no turn within 10 s")
    finally:
        worker.stop()
        await running


async def test_a_turn_due_now_is_emitted_without_waiting_for_the_poll(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Debounce 0: the commit that makes the turn due wakes the worker (NOTIFY), which polls
    only every 5 s; the turn is out well within a second."""
    assert topology.turns.debounce_ms == 0
    assert await _emitted_after(redis, store, topology, 7101) < 1.0


async def test_a_debounced_turn_is_emitted_when_due_not_at_the_next_poll(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Debounce 300 ms: the worker sleeps until the due time it knows of, not the 5 s poll."""
    debounced = msgspec.structs.replace(topology.turns, debounce_ms=300)
    waited = await _emitted_after(
        redis, store, msgspec.structs.replace(topology, turns=debounced), 7102
    )
    assert 0.3 <= waited < 2.0
