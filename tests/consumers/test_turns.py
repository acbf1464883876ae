"""The turns worker: due turns emitted once, whatever the number of workers."""

from __future__ import annotations

import asyncio
import datetime as dt

import redis.asyncio as aioredis

from consumers.store import Store
from consumers.turns import TurnEmitter
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
