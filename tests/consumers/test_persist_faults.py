"""Bad values bounded at the door, and the audit row of every dead-lettered webhook: the real
Persister and runner over real Redis and PostgreSQL, fixture payloads with one value changed."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumers.persist import Persister
from consumers.runner import Runner
from consumers.store import Store
from ingress import events
from ingress.topology import Topology
from tests import chatwoot
from tests.pipeline import feed, rows, xadd, xrange

MESSAGE = "message_created__whatsapp_incoming_phone"
# Past a btree row's ~2.7 kB, and random, so PostgreSQL cannot compress it under the limit.
HUGE = "".join(random.Random(54).choices("0123456789abcdef", k=6000))
Edit = Callable[[dict[str, Any]], None]


def runner(redis: aioredis.Redis, store: Store, topology: Topology) -> Runner:
    persister = Persister(store, topology, bot_id=4)
    return Runner(
        redis,
        key=topology.key("events"),
        group="persist",
        spec=topology.groups["persist"],
        dead_key=topology.key("dead"),
        handler=persister,
        on_dead=persister.dead,
        consumer="test-persist-faults",
    )


def put(path: str, value: object) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


async def run(redis: aioredis.Redis, store: Store, topology: Topology, data: object) -> str:
    [entry_id] = await feed(redis, topology, data)  # type: ignore[arg-type]
    # Bounded: a value taken for an outage would hold the entry (and this drain) forever.
    await asyncio.wait_for(runner(redis, store, topology).drain(), timeout=10)
    return entry_id


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        pytest.param(put("id", 2**63), "at `$.id`", id="message-id-over-int64"),
        pytest.param(
            put("conversation.id", 2**63),
            "conversation.id 9223372036854775808 is outside int64",
            id="conversation-id-over-int64",
        ),
        pytest.param(put("sender.id", -(2**63) - 1), "at `$.sender.id`", id="sender-id-under"),
        pytest.param(put("account.id", 2**63), "at `$.account.id`", id="account-id-over"),
        pytest.param(put("inbox.id", 2**64), "at `$.inbox.id`", id="inbox-id-over-uint64"),
        pytest.param(put("created_at", 10**17), "at `$.created_at`", id="created-at-int-huge"),
        pytest.param(
            put("created_at", "1970-01-01T00:00:00Z"),
            "message.created_at '1970-01-01T00:00:00Z' is outside 2000-01-01..2200-01-01",
            id="created-at-1970",
        ),
        pytest.param(
            put("created_at", "2999-01-01T00:00:00Z"), "is outside 2000", id="created-at-2999"
        ),
        pytest.param(
            put("conversation.updated_at", 1e300),
            "at `$.conversation.updated_at`",
            id="updated-at-huge",
        ),
        pytest.param(
            put("conversation.created_at", -1.0),
            "at `$.conversation.created_at`",
            id="conversation-created-before-2000",
        ),
        pytest.param(put("sender.email", "a\x00@x.io"), "at `$.sender.email`", id="nul-email"),
        pytest.param(put("sender.name", "Ai\x00sha"), "at `$.sender.name`", id="nul-name"),
        pytest.param(
            put("conversation.contact_inbox.source_id", "9198\x00"),
            "at `$.conversation.contact_inbox.source_id`",
            id="nul-source-id",
        ),
        pytest.param(
            put("conversation.meta.sender.phone_number", "+91\x00"),
            "at `$.conversation.meta.sender.phone_number`",
            id="nul-phone",
        ),
        pytest.param(
            put("conversation.meta.sender.phone_number", "+" + HUGE),
            "at `$.conversation.meta.sender.phone_number`",
            id="identity-phone-too-long",
        ),
        pytest.param(
            put("conversation.contact_inbox.source_id", HUGE),
            "at `$.conversation.contact_inbox.source_id`",
            id="identity-source-id-too-long",
        ),
        pytest.param(
            put("conversation.labels", ["vip\x00"]),
            "at `$.conversation.labels[0]`",
            id="nul-label",
        ),
    ],
)
async def test_bad_values_are_dead_with_a_clear_reason(
    edit: Edit, reason: str, redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A value the database cannot hold, or that cannot be right, dead-letters its webhook at
    once with the field and the bound; nothing is stored from it, and an audit row says why."""
    data = chatwoot.payload(MESSAGE)
    edit(data)
    entry_id = await run(redis, store, topology, data)
    [(_, dead)] = await xrange(redis, topology.key("dead"))
    assert dead[b"reason"] == b"permanent"
    assert reason in dead[b"error"].decode()
    assert await rows(store, "SELECT 1 FROM messages") == []
    assert await rows(store, "SELECT 1 FROM contacts") == []
    [audit] = await rows(store, "SELECT stream_id, outcome, detail FROM webhook_events")
    assert (audit["stream_id"], audit["outcome"]) == (entry_id, "dead")
    assert audit["detail"].startswith("permanent: ") and reason in audit["detail"]


async def test_nul_in_content_is_replaced_not_dead(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Free text may hold a NUL: stored with U+FFFD (the raw body keeps the original)."""
    data = chatwoot.payload(MESSAGE)
    data["content"] = "hi\x00there"
    await run(redis, store, topology, data)
    [row] = await rows(store, "SELECT content FROM messages")
    assert row["content"] == "hi\ufffdthere"
    assert await redis.xlen(topology.key("dead")) == 0


async def test_a_poison_webhook_leaves_a_dead_letter_and_an_audit_row(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An entry that does not decode is in sb:dead AND in webhook_events with outcome dead
    and the reason, so `switchboard replay --outcome dead` finds it."""
    await redis.xadd(topology.key("events"), {"event": "message_created", "body": b"{}"})
    await asyncio.wait_for(runner(redis, store, topology).drain(), timeout=10)
    [(entry_id, dead)] = await xrange(redis, topology.key("dead"))
    assert dead[b"reason"] == b"undecodable"
    [audit] = await rows(store, "SELECT * FROM webhook_events")
    assert (audit["outcome"], audit["event"], audit["body"]) == ("dead", "message_created", b"{}")
    assert audit["detail"].startswith("undecodable: EntryDecodeError")
    assert audit["stream_id"] == dead[b"id"].decode()


async def test_a_dead_letter_is_written_when_its_audit_row_cannot_be(
    redis: aioredis.Redis, store: Store, topology: Topology, database_url: str
) -> None:
    """With the database gone for the audit row (its pool closed), the dead letter is still
    written to sb:dead."""
    gone = await Store.connect(database_url, max_size=1)
    await gone.close()
    r = Runner(
        redis,
        key=topology.key("events"),
        group="persist",
        spec=topology.groups["persist"],
        dead_key=topology.key("dead"),
        handler=Persister(store, topology, bot_id=4),
        on_dead=Persister(gone, topology, bot_id=4).dead,
        consumer="test-persist-faults",
    )
    await redis.xadd(topology.key("events"), {"event": "message_created"})
    await asyncio.wait_for(r.drain(), timeout=10)
    assert await redis.xlen(topology.key("dead")) == 1
    assert await rows(store, "SELECT 1 FROM webhook_events") == []


async def test_a_long_delivery_id_does_not_hold_its_batch(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An entry whose delivery id is too long for its index (written by an older ingress, or
    any writer) is stored under the id's digest; the conversation behind it is stored too."""
    body = b'{"event":"conversation_typing_on","conversation":{"id":1},"account":{"id":3}}'
    for conversation, delivery in ((1, HUGE), (2, "ok")):
        entry = events.EventEntry(
            event="conversation_typing_on",
            delivery=delivery,
            account=3,
            conversation=conversation,
            received_at=int(time.time() * 1000),
            signed=True,
            body=body,
        )
        await xadd(redis, topology.key("events"), events.encode(entry))
    await asyncio.wait_for(runner(redis, store, topology).drain(), timeout=10)
    stored = await rows(store, "SELECT delivery_id, outcome FROM webhook_events ORDER BY 1")
    assert [r["delivery_id"] for r in stored] == ["ok", events.bounded_delivery(HUGE)]
    assert {r["outcome"] for r in stored} != {"dead"}
    assert await redis.xpending(topology.key("events"), "persist") == {
        "pending": 0, "min": None, "max": None, "consumers": [],
    }  # fmt: skip


async def test_a_foreign_ext_ref_longer_than_our_refs_is_not_indexed(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Any API user can set `content_attributes.ext_ref`: one longer than our refs (200) cannot
    be ours, so the message is stored with no ext_ref (the raw body keeps it)."""
    data = chatwoot.payload("message_created__api_channel_incoming")
    data["content_attributes"] = {"ext_ref": HUGE}
    await run(redis, store, topology, data)
    [message] = await rows(store, "SELECT ext_ref FROM messages")
    assert message["ext_ref"] is None
    [audit] = await rows(store, "SELECT body FROM webhook_events")
    assert HUGE.encode() in audit["body"]
    assert await redis.xlen(topology.key("dead")) == 0
