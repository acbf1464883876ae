"""A customer message Chatwoot marks deleted before its turn leaves is not carried by it,
through the real Persister and TurnEmitter on real Redis and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from consumers.persist import Persister
from consumers.store import Store
from consumers.turns import TurnEmitter
from ingress import events
from ingress.topology import Topology
from tests import chatwoot
from tests.pipeline import feed, persist_runner, rows, xrange

BASE = 1781775787.0


def created(message_id: int, text: str) -> dict[str, Any]:
    """A WhatsApp customer message of conversation 1044 (pending, bot-handled)."""
    data = chatwoot.payload("message_created__whatsapp_incoming_phone")
    at = BASE + message_id % 100
    data["id"], data["content"] = message_id, text
    data["created_at"] = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
    data["conversation"]["updated_at"] = at
    data["conversation"]["messages"][0].update(id=message_id, content=text)
    return data


def deleted(message_id: int) -> dict[str, Any]:
    """Chatwoot's message_updated for an unsent message: placeholder text, `deleted: true`."""
    data = created(message_id, "This message was deleted")
    data["event"] = "message_updated"
    data["content_attributes"] = {"deleted": True}
    later = dt.datetime.fromtimestamp(BASE + 500, dt.UTC).isoformat()
    data["conversation"]["messages"][0]["updated_at"] = later
    return data


class Pipeline:
    """Persist and emit turns on one clock, with a 1 s debounce."""

    def __init__(self, redis: aioredis.Redis, store: Store, topology: Topology) -> None:
        self.now = dt.datetime(2026, 6, 18, 9, 0, tzinfo=dt.UTC)
        timing = msgspec.structs.replace(topology.turns, debounce_ms=1000)
        self.topology = msgspec.structs.replace(topology, turns=timing)
        self.redis, self.store = redis, store
        self.persister = Persister(store, self.topology, clock=lambda: self.now)
        self.emitter = TurnEmitter(store, redis, self.topology, clock=lambda: self.now)

    async def persist(self, *payloads: dict[str, Any]) -> None:
        await feed(self.redis, self.topology, *payloads)
        await persist_runner(self.redis, self.store, self.topology, handler=self.persister).drain()

    async def turns_after(self, seconds: float) -> list[events.TurnEntry]:
        self.now += dt.timedelta(seconds=seconds)
        await self.emitter.drain()
        found = await xrange(self.redis, self.topology.key("turns"))
        return [events.decode(events.TurnEntry, fields) for _, fields in found]


async def test_a_burst_of_deleted_messages_gives_no_turn(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Created, then unsent before the debounce ends: no turn, and none later either."""
    pipeline = Pipeline(redis, store, topology)
    await pipeline.persist(created(918310, "wrong chat, sorry"))
    await pipeline.persist(deleted(918310))
    assert await pipeline.turns_after(2) == []
    [conv] = await rows(store, "SELECT turn_due_at FROM conversations")
    assert conv["turn_due_at"] is None  # the burst is over, not waiting forever
    assert await pipeline.turns_after(60) == []


async def test_a_mixed_burst_carries_only_the_live_messages(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Of three messages, the one unsent before the turn leaves is not in it."""
    pipeline = Pipeline(redis, store, topology)
    await pipeline.persist(created(918310, "hi"), created(918311, "my card number is 4111…"))
    await pipeline.persist(created(918312, "where is my order?"), deleted(918311))
    [turn] = await pipeline.turns_after(2)
    assert [(m.id, m.content) for m in turn.messages] == [
        (918310, "hi"),
        (918312, "where is my order?"),
    ]
    assert turn.through == 918312


@pytest.mark.parametrize("order", ["deleted-first", "created-first"])
async def test_the_next_turn_does_not_carry_a_deleted_unanswered_message(
    order: str, redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An unanswered message rides along in later turns until it is deleted, whatever order
    the deletion and its creation arrive in."""
    pipeline = Pipeline(redis, store, topology)
    first = [deleted(918310), created(918310, "first")]
    await pipeline.persist(*(first if order == "deleted-first" else first[::-1]))
    await pipeline.persist(created(918311, "second"))
    [turn] = await pipeline.turns_after(2)
    assert [m.id for m in turn.messages] == [918311]
