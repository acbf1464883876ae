"""Meta webhooks in sb:events: persist keeps their audit row and nothing else (the forward
group routes them), through the real Persister on real Redis and PostgreSQL."""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from consumers.store import Store
from ingress import events
from ingress.topology import Topology
from tests import chatwoot, meta
from tests.pipeline import persist_runner, rows, xadd, xrange

AUDIT = "SELECT source, event, signed, outcome, detail FROM webhook_events ORDER BY stream_id"
FORWARDED = "a Meta webhook: routed by the forward group (meta_forwards)"


async def test_a_comment_is_audited_as_ignored_not_dead(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An Instagram comment is recorded `ignored` with a detail naming the forward group, and
    never reaches the dead letters."""
    body = meta.comment()
    await xadd(redis, topology.key("events"), events.encode(meta.entry(body)))
    await persist_runner(redis, store, topology).drain()
    assert await rows(store, AUDIT) == [
        {
            "source": "meta",
            "event": "meta.instagram",
            "signed": True,
            "outcome": "ignored",
            "detail": FORWARDED,
        }
    ]
    assert await xrange(redis, topology.key("dead")) == []
    [body_row] = await rows(store, "SELECT body FROM webhook_events")
    assert body_row["body"] == body


async def test_a_meta_entry_named_like_a_chatwoot_event_changes_nothing(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A `source=meta` entry is never applied as Chatwoot data, whatever its event name and
    body: the Meta app secret must not be a way to write customer messages."""
    body = chatwoot.rails_json(chatwoot.payload("message_created__api_channel_incoming"))
    forged = msgspec.structs.replace(meta.entry(body), event="message_created", account=3)
    await xadd(redis, topology.key("events"), events.encode(forged))
    await persist_runner(redis, store, topology).drain()
    assert await rows(store, "SELECT * FROM messages") == []
    [audit] = await rows(store, AUDIT)
    assert (audit["outcome"], audit["detail"]) == ("ignored", FORWARDED)
