"""What the ops views read, each in one function shared by the JSON API, the page and the
`switchboard conversation` command."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import redis.asyncio as aioredis

from consumers import dlq, ops, timeline
from consumers.store import Store
from consumers.store.overview import OverviewSQL
from consumers.store.timeline import TimelineSQL
from ingress.events import DeadEntry
from ingress.topology import Topology

# Dead letters scanned for one conversation's: the dead stream is meant to stay short.
DEAD_SCAN = 10_000
HEALTH_WINDOW_MIN = 60


class Health(msgspec.Struct, kw_only=True):
    streams: list[ops.StreamStatus]
    dead: int
    webhooks_per_minute: list[dict[str, Any]]  # minute, outcome, webhooks
    latency: dict[str, Any]  # what is known of reply latency (see `latency`)
    counters: dict[str, int]  # the consumers' counts in <prefix>:metrics


async def conversation(
    store: Store, redis: aioredis.Redis, topology: Topology, account: int, conversation: int
) -> timeline.Timeline | None:
    async with store.transaction() as tx:
        rows = await TimelineSQL(tx.conn).timeline_rows(account, conversation)
    if rows is None:
        return None
    return timeline.build(rows, await dead_of(redis, topology, account, conversation))


async def dead_of(
    redis: aioredis.Redis, topology: Topology, account: int, conversation: int
) -> list[tuple[str, DeadEntry]]:
    """The dead letters whose original entry names this conversation (oldest first)."""
    found = []
    everything = dlq.Selection()
    async for entry_id, dead in dlq.select(redis, topology, everything, limit=DEAD_SCAN):
        if timeline.concerns(dead, account, conversation):
            found.append((entry_id, dead))
    return found


async def health(
    redis: aioredis.Redis, store: Store, topology: Topology, now: dt.datetime
) -> Health:
    async with store.transaction() as tx:
        overview = OverviewSQL(tx.conn)
        per_minute = await overview.webhooks_per_minute(now, HEALTH_WINDOW_MIN)
        posted = await overview.reply_latency(now, HEALTH_WINDOW_MIN)
    counters = await _counters(redis, topology)
    return Health(
        streams=await ops.streams(redis, topology),
        dead=int(await redis.xlen(topology.key("dead"))),
        webhooks_per_minute=per_minute,
        latency=latency(posted, counters),
        counters=counters,
    )


def latency(posted: dict[str, Any], counters: dict[str, int]) -> dict[str, Any]:
    """Reply latency, from what exists: queued → posted of the replies of the last hour (the
    outbox's own times), and any `*latency*`/`*seconds*` figure the processes count in
    `<prefix>:metrics`. The one place to read histograms from once they are kept there."""
    figures = {k: v for k, v in counters.items() if "latency" in k or "seconds" in k}
    return {"queued_to_posted": posted, "metrics": figures}


async def _counters(redis: aioredis.Redis, topology: Topology) -> dict[str, int]:
    raw: Any = await redis.hgetall(topology.key("metrics"))
    out = {}
    for name, value in raw.items():
        try:
            out[_text(name)] = int(value)
        except ValueError:
            continue  # not a count (a float, another writer's format): not shown
    return dict(sorted(out.items()))


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
