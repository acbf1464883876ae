"""The turns worker: due turns emitted once, whatever the number of workers."""

from __future__ import annotations

import asyncio
import datetime as dt

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
