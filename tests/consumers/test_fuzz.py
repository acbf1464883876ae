"""Bad entries at the persist group (hypothesis): no crash, each bad one dead with a reason,
every valid message among them stored."""

from __future__ import annotations

import itertools
import json
from typing import Any

import hypothesis.strategies as st
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings

from consumers.store import Store
from ingress import events
from ingress.topology import Topology
from tests import chatwoot
from tests.conftest import TABLES
from tests.pipeline import persist_runner, xadd, xrange

EVENTS = ["message_created", "message_updated", "conversation_updated", "contact_created", "x"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
garbage_fields = st.dictionaries(
    st.sampled_from([b"event", b"body", b"received_at", b"signed", b"account", b"zz"]),
    st.binary(max_size=20),
    min_size=1,
    max_size=6,
)
bad_bodies = st.one_of(
    st.binary(max_size=60),
    json_values.map(chatwoot.rails_json),
    st.dictionaries(
        st.sampled_from(["id", "conversation", "account", "message_type", "sender"]), json_values
    ).map(chatwoot.rails_json),  # fmt: skip
)
_ids = itertools.count(940000)


def valid_message() -> bytes:
    data = chatwoot.payload("message_created__whatsapp_incoming_phone")
    data["id"] = next(_ids)
    return chatwoot.rails_json(data)


entries = st.lists(
    st.one_of(
        garbage_fields.map(lambda f: ("garbage", f)),
        st.tuples(st.sampled_from(EVENTS), bad_bodies).map(lambda t: ("bad", t)),
        st.builds(valid_message).map(lambda body: ("valid", body)),
    ),
    min_size=1,
    max_size=8,
)


def as_fields(kind: str, item: Any) -> dict[bytes, bytes] | dict[str, bytes]:
    if kind == "garbage":
        return dict(item)
    event, body = ("message_created", item) if kind == "valid" else item
    entry = events.EventEntry(event=event, received_at=1, signed=True, body=body, account=3)
    return events.encode(entry)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=entries)
async def test_bad_entries_die_alone(
    batch: list[tuple[str, Any]], redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Every entry ends applied, ignored or dead-lettered; none is left pending; none blocks."""
    async with store.pool.acquire() as conn:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    await redis.delete(topology.key("events"), topology.key("dead"))
    ids = [await xadd(redis, topology.key("events"), as_fields(k, v)) for k, v in batch]
    await persist_runner(redis, store, topology).drain()
    async with store.pool.acquire() as conn:
        recorded = {
            r["stream_id"] for r in await conn.fetch("SELECT stream_id FROM webhook_events")
        }
        stored = {r["id"] for r in await conn.fetch(
            "SELECT chatwoot_message_id AS id FROM messages")}  # fmt: skip
    dead = {
        fields[b"id"].decode(): fields for _, fields in await xrange(redis, topology.key("dead"))
    }
    for entry_id, (kind, item) in zip(ids, batch, strict=True):
        assert (entry_id in recorded) != (entry_id in dead), (kind, item)
        if entry_id in dead:
            assert dead[entry_id][b"reason"] in (b"undecodable", b"permanent")
        if kind == "valid":
            assert entry_id in recorded
            assert int(json.loads(item)["id"]) in stored
    summary: Any = await redis.xpending(topology.key("events"), "persist")
    assert summary["pending"] == 0
