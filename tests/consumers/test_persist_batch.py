"""Persist in batches: one transaction a batch, a savepoint an entry, decided as ever."""

from __future__ import annotations

import copy
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from consumers.persist import Persister
from consumers.runner import Runner
from consumers.store import Store
from ingress.topology import Topology
from tests import chatwoot
from tests.pipeline import feed, rows


def message(n: int, conversation: int) -> dict[str, Any]:
    data: dict[str, Any] = chatwoot.payload("message_created__whatsapp_incoming_phone")
    data["id"], data["conversation"]["id"] = 940000 + n, conversation
    data["conversation"]["meta"]["sender"]["phone_number"] = f"+1556{conversation:07d}"
    return data


def batched_runner(
    redis: aioredis.Redis, store: Store, topology: Topology, *, lanes: int = 1, fast: bool = True
) -> Runner:
    handler = Persister(store, topology, bot_id=4, lanes=lanes, fast=fast)
    return Runner(
        redis,
        key=topology.key("events"),
        group="persist",
        spec=topology.groups["persist"],
        dead_key=topology.key("dead"),
        handler=handler,
        batch_handler=handler.batch,
        on_dead=handler.dead,
        consumer="test-persist",
    )


async def test_a_batch_commits_once_and_a_failing_entry_fails_alone(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Four webhooks read in one batch: the good ones of other conversations commit in one
    transaction; the broken one rolls back only its savepoint and is dead-lettered as ever
    (its audit row says so); the later webhook of its conversation waits for it, so that
    conversation's order holds, and is applied after it."""
    broken = message(2, 2002)
    del broken["id"]
    ids = await feed(redis, topology, message(1, 2001), broken, message(3, 2002), message(4, 2003))
    runner = batched_runner(redis, store, topology)
    assert await runner.drain() == 4
    audit = {
        r["stream_id"]: r
        for r in await rows(
            store, "SELECT stream_id, outcome, processed_at AS tx FROM webhook_events"
        )
    }
    first, dead, later, other = (audit[i] for i in ids)
    assert [first["outcome"], dead["outcome"], later["outcome"], other["outcome"]] == [
        "applied", "dead", "applied", "applied",
    ]  # fmt: skip
    # processed_at is now(), the start of the transaction: one transaction for the batch.
    assert first["tx"] == other["tx"]
    assert later["tx"] != first["tx"]  # held back behind the broken entry of its conversation
    letters: Any = await redis.xrange(topology.key("dead"))
    [(_, fields)] = letters
    assert fields[b"reason"] == b"permanent"
    assert len(await rows(store, "SELECT 1 FROM messages")) == 3
    pending: Any = await redis.xpending(topology.key("events"), "persist")
    assert pending["pending"] == 0  # everything acknowledged, after its commit


async def test_one_conversations_webhooks_in_one_batch_apply_in_stream_order(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A message created then updated, both in one batch: the update is what stays."""
    created = message(5, 2005)
    updated = copy.deepcopy(created)
    updated.update(event="message_updated", content="edited")
    [embedded] = updated["conversation"]["messages"]
    embedded.update(id=updated["id"], updated_at="2026-06-18T09:44:00.000Z")  # a newer version
    await feed(redis, topology, created, updated)
    assert await batched_runner(redis, store, topology).drain() == 2
    [row] = await rows(store, "SELECT content FROM messages")
    assert row["content"] == "edited"
    # now(), the transaction's start, is each row's processed_at: one transaction.
    txs = await rows(store, "SELECT DISTINCT processed_at FROM webhook_events")
    assert len(txs) == 1


async def test_lanes_commit_every_conversation_once_in_order(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A batch spread over concurrent transactions: 40 webhooks of 8 conversations, each
    conversation's in one transaction of its lane, all applied, none twice."""
    payloads = [message(n, 2100 + n % 8) for n in range(40)]
    ids = await feed(redis, topology, *payloads)
    assert await batched_runner(redis, store, topology, lanes=4).drain() == 40
    audit = await rows(
        store,
        "SELECT chatwoot_conversation_id AS c, count(DISTINCT processed_at) AS txs,"
        " count(*) AS n FROM webhook_events WHERE outcome = 'applied' GROUP BY 1",
    )
    assert sorted((r["c"], r["txs"], r["n"]) for r in audit) == [(2100 + c, 1, 5) for c in range(8)]
    assert len(ids) == len(await rows(store, "SELECT 1 FROM messages")) == 40
    lanes = await rows(store, "SELECT count(DISTINCT processed_at) AS n FROM webhook_events")
    assert 1 < lanes[0]["n"] <= 4


# asyncpg's own look-ups of a statement's types (once per connection), and the pool's reset.
DRIVER = ("typeinfo_tree", "current_setting('jit')", "set_config('jit'", "pg_advisory_unlock_all")


async def statements_of_a_batch(
    redis: aioredis.Redis,
    topology: Topology,
    database_url: str,
    count: int,
    *,
    fast: bool,
    base: int = 21,
) -> list[str]:
    """The statements of a batch of `count` new customer messages in a known conversation
    (the first message, before, created it), counted by asyncpg's query logger."""
    statements: list[str] = []

    async def logged(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda query: statements.append(query.query))

    # The driver's own query log, on every connection of a pool of the test database.
    counted = Store(await asyncpg.create_pool(database_url, min_size=1, max_size=2, init=logged))
    try:
        await feed(redis, topology, message(20, 2020))
        runner = batched_runner(redis, counted, topology, fast=fast)
        assert await runner.drain() == 1
        statements.clear()
        await feed(redis, topology, *(message(base + n, 2020) for n in range(count)))
        assert await runner.drain() == count
    finally:
        await counted.close()
    return [
        s
        for s in statements
        if s.strip().rstrip(";") not in ("BEGIN", "COMMIT") and not any(d in s for d in DRIVER)
    ]


async def test_a_known_conversations_message_costs_seven_round_trips_one_by_one(
    redis: aioredis.Redis, store: Store, topology: Topology, database_url: str
) -> None:
    """Round trips to PostgreSQL are what a batch waits on: on the per-entry path, an entry
    of a batch, a new customer message in a known conversation, runs one statement to release
    the previous savepoint and start its own, and no statement that changes nothing (no lock
    before an insert that is tried first, no outcome update that repeats the audit row's)."""
    work = await statements_of_a_batch(redis, topology, database_url, 5, fast=False)
    assert len(await rows(store, "SELECT 1 FROM messages")) == 6
    assert 5 * 5 <= len(work) <= 5 * 7, work


async def test_a_run_of_known_conversations_messages_costs_the_same_round_trips_at_any_length(
    redis: aioredis.Redis, store: Store, topology: Topology, database_url: str
) -> None:
    """The fast path: a run of new customer messages in a known conversation costs three
    statements (a savepoint, one read of the rows it touches, locked, and one write of every
    table and the wake-up), however many entries it holds."""
    five = await statements_of_a_batch(redis, topology, database_url, 5, fast=True)
    assert len(five) <= 3, five
    thirty = await statements_of_a_batch(redis, topology, database_url, 30, fast=True, base=100)
    assert len(thirty) == len(five), thirty
    assert len(await rows(store, "SELECT 1 FROM messages")) == 1 + 5 + 30
    assert len(await rows(store, "SELECT 1 FROM webhook_events")) == 2 + 5 + 30


async def test_a_lane_commits_every_hold_entries_so_its_locks_are_short(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A lane's conversation rows stay locked until its commit (the turns worker and deliver
    wait for them): five webhooks in one lane, two entries a transaction, are three
    transactions, in stream order."""
    ids = await feed(redis, topology, *(message(30 + n, 2030 + n) for n in range(5)))
    handler = Persister(store, topology, bot_id=4, lanes=1, hold=2)
    runner = Runner(
        redis, key=topology.key("events"), group="persist", spec=topology.groups["persist"],
        dead_key=topology.key("dead"), handler=handler, batch_handler=handler.batch,
        on_dead=handler.dead, consumer="test-persist",
    )  # fmt: skip
    assert await runner.drain() == 5
    tx = {
        r["stream_id"]: r["tx"]
        for r in await rows(store, "SELECT stream_id, processed_at AS tx FROM webhook_events")
    }
    first, second, third, fourth, fifth = (tx[i] for i in ids)
    assert first == second < third == fourth < fifth


async def test_set_based_entries_share_a_transaction_up_to_fast_hold(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A set-based run holds its rows for three round trips whatever its length, so its
    transaction takes up to `fast_hold` entries (the per-entry path's `hold` still ends one):
    seven messages of a known conversation, four a transaction, after the first one (which
    creates the conversation, one by one)."""
    ids = await feed(redis, topology, *(message(40 + n, 2040) for n in range(8)))
    handler = Persister(store, topology, bot_id=4, lanes=1, hold=2, fast_hold=4)
    runner = Runner(
        redis, key=topology.key("events"), group="persist", spec=topology.groups["persist"],
        dead_key=topology.key("dead"), handler=handler, batch_handler=handler.batch,
        on_dead=handler.dead, consumer="test-persist",
    )  # fmt: skip
    assert await runner.drain() == 8
    tx = {
        r["stream_id"]: r["tx"]
        for r in await rows(store, "SELECT stream_id, processed_at AS tx FROM webhook_events")
    }
    first, *rest = (tx[i] for i in ids)
    assert first == rest[0] == rest[1] == rest[2] < rest[3] == rest[4] == rest[5] == rest[6]
    assert handler.taken_fast == 7
