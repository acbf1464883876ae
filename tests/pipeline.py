"""Helpers that drive the real workers in-process: feed entries, drain groups, read rows."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from consumers.persist import Persister
from consumers.runner import Runner
from consumers.store import Store
from consumers.turns import TurnEmitter
from ingress import events
from ingress.topology import Topology
from tests import chatwoot


async def xadd(redis: aioredis.Redis, key: str, fields: Any) -> str:
    """XADD returning the entry id as text (redis-py's typing is a union of everything)."""
    entry_id: Any = await redis.xadd(key, fields)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def xrange(redis: aioredis.Redis, key: str) -> list[tuple[str, dict[bytes, bytes]]]:
    found: Any = await redis.xrange(key)
    return [(i.decode(), fields) for i, fields in found]


async def feed(
    redis: aioredis.Redis, topology: Topology, *payloads: dict[str, Any] | str
) -> list[str]:
    """Publish webhooks to sb:events as the ingress does (fixture names or payloads)."""
    ids = []
    for item in payloads:
        data = chatwoot.payload(item) if isinstance(item, str) else item
        body = chatwoot.rails_json(data)
        conversation = data.get("conversation", {}).get("id") if "conversation" in data else None
        entry = events.EventEntry(
            event=str(data.get("event", "")),
            delivery=str(uuid.uuid4()),
            account=3,
            conversation=conversation,
            received_at=int(time.time() * 1000),
            signed=True,
            body=body,
        )
        ids.append(await xadd(redis, topology.key("events"), events.encode(entry)))
    return ids


def persist_runner(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    *,
    handler: Persister | None = None,
    batched: bool = True,
) -> Runner:
    """The persist group as deployed: batches in one commit, one by one what fails there."""
    handler = handler or Persister(store, topology, bot_id=4)
    return Runner(
        redis,
        key=topology.key("events"),
        group="persist",
        spec=topology.groups["persist"],
        dead_key=topology.key("dead"),
        handler=handler,
        batch_handler=handler.batch if batched else None,
        consumer="test-persist",
    )


async def persist(
    redis: aioredis.Redis, store: Store, topology: Topology, *payloads: dict[str, Any] | str
) -> None:
    await feed(redis, topology, *payloads)
    await persist_runner(redis, store, topology).drain()


async def emit_turns(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> list[events.TurnEntry]:
    """Emit due turns and return every turn entry on the default turns stream."""
    await TurnEmitter(store, redis, topology).drain()
    rows: Any = await redis.xrange(topology.key("turns"))
    return [events.decode(events.TurnEntry, fields) for _, fields in rows]


async def rows(store: Store, sql: str, *args: Any) -> list[dict[str, Any]]:
    async with store.pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch(sql, *args)]
