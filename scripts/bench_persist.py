#!/usr/bin/env python3
"""Persist drain rate from a backlog, as a ratio to a baseline measured in the same run.

The baseline is the floor of "one transaction per webhook": each message inserted alone in its
own transaction, from a prepared row. The persist group does the real work per entry: decode
the entry and the webhook body, record the audit row, upsert contact and conversation (guarded
by versions), fold hand-off signals, insert the message, schedule the turn, acknowledge. It is
measured on the same backlog: one transaction per entry (conversations side by side, as before
batching); a transaction per batch with a savepoint per entry (the per-entry path); and as
deployed, runs of entries set-based (consumers/store/buffered.py), each run a savepoint, a read
and a write, whatever its length.

    python scripts/bench_persist.py --messages 100000 --conversations 1000   # the figures
    python scripts/bench_persist.py --messages 5000                            # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from consumers.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402
from consumers.persist import FAST_HOLD, HOLD, LANES, Persister  # noqa: E402
from consumers.runner import Runner, by_conversation  # noqa: E402
from consumers.store import Store  # noqa: E402
from ingress import events, logs, topology  # noqa: E402

FIXTURE = ROOT / "tests/fixtures/chatwoot/message_created__whatsapp_incoming_phone.json"


def payloads(count: int, conversations: int) -> list[bytes]:
    base = json.loads(FIXTURE.read_text())
    out = []
    for n in range(count):
        conv = n % conversations
        base["id"], base["content"] = 1_000_000 + n, f"message {n}"
        base["conversation"]["id"] = 10_000 + conv
        base["conversation"]["updated_at"] = 1781775787.0 + n
        base["conversation"]["meta"]["sender"]["phone_number"] = f"+1555{conv:07d}"
        out.append(json.dumps(base, separators=(",", ":")).encode())
    return out


async def baseline(store: Store, bodies: list[bytes]) -> float:
    started = time.perf_counter()
    for n, _ in enumerate(bodies):
        async with store.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO messages (account_id, chatwoot_message_id, chatwoot_conversation_id,"
                " direction, sender_kind, status, content) VALUES (9, $1, 1, 'inbound', "
                "'contact', 'received', 'x')",
                n,
            )
    return len(bodies) / (time.perf_counter() - started)


async def persist(
    store: Store,
    redis: aioredis.Redis,
    bodies: list[bytes],
    *,
    batched: bool,
    fast: bool = True,
    lanes: int = LANES,
    hold: int = HOLD,
    fast_hold: int = FAST_HOLD,
) -> tuple[float, int]:
    topo = msgspec.structs.replace(
        topology.load(ROOT / "streams.yaml"), prefix=f"bench{uuid.uuid4().hex[:6]}"
    )
    # The backlog is filled first (pipelined: filling is not what is measured), then drained.
    for start in range(0, len(bodies), 1000):
        pipe = redis.pipeline(transaction=False)
        for body in bodies[start : start + 1000]:
            # As the ingress writes it: the conversation field is what spreads a batch over
            # lanes (without it, every entry is one partition, and one lane runs them all).
            conversation = json.loads(body)["conversation"]["id"]
            entry = events.EventEntry(event="message_created", account=3, received_at=1,
                                      conversation=conversation, signed=True,
                                      body=body)  # fmt: skip
            pipe.xadd(topo.key("events"), events.encode(entry))  # type: ignore[arg-type]
        await pipe.execute()
    # Each run starts from the same empty tables: on the rows of an earlier run every webhook
    # would be a duplicate (a lock and an update, not an insert), other work than measured.
    async with store.pool.acquire() as conn:
        await conn.execute("TRUNCATE contacts, conversations, messages, webhook_events")
    handler = Persister(store, topo, fast=fast, lanes=lanes, hold=hold, fast_hold=fast_hold)
    runner = Runner(redis, key=topo.key("events"), group="persist", spec=topo.groups["persist"],
                    dead_key=topo.key("dead"), handler=handler, partition=by_conversation,
                    batch_handler=handler.batch if batched else None)  # fmt: skip
    started = time.perf_counter()
    handled = await runner.drain()
    assert handled == len(bodies)
    return handled / (time.perf_counter() - started), handler.taken_fast


async def run(opts: argparse.Namespace, redis_url: str, database_url: str) -> None:
    store = await Store.connect(database_url, max_size=10)
    await store.apply_schema((ROOT / "schema.sql").read_text())
    redis = aioredis.Redis.from_url(redis_url)
    bodies = payloads(opts.messages, opts.conversations)
    try:
        floor = await baseline(store, bodies)
        single = None
        if not (opts.batched_only or opts.fast_only):
            single, _ = await persist(store, redis, bodies, batched=False, fast=False)
        savepoints = None
        if not opts.fast_only:
            savepoints, _ = await persist(store, redis, bodies, batched=True, fast=False)
        batched, taken = await persist(
            store, redis, bodies, batched=True, lanes=opts.lanes, hold=opts.hold,
            fast_hold=opts.fast_hold,
        )  # fmt: skip
    finally:
        await redis.aclose()
        await store.close()
    batch = topology.load(ROOT / "streams.yaml").groups["persist"].batch
    print(f"a backlog of {opts.messages} message_created webhooks over {opts.conversations}"
          f" conversations, drained by one consumer (batches of {batch})")  # fmt: skip
    print(f"{'work per webhook':<46}{'per s':>8}{'ratio':>8}")
    print(f"{'one INSERT in its own transaction (floor)':<46}{floor:>8.0f}{1:>8.2f}")
    if single is not None:
        print(f"{'persist, one transaction per webhook':<46}{single:>8.0f}{single / floor:>8.2f}")
    if savepoints is not None:
        print(f"{'persist, a batch, a savepoint per webhook':<46}{savepoints:>8.0f}"
              f"{savepoints / floor:>8.2f}")  # fmt: skip
    print(f"{'persist, a batch, set-based runs (deployed)':<46}{batched:>8.0f}"
          f"{batched / floor:>8.2f}")  # fmt: skip
    print(f"webhooks the set-based path took: {taken} of {len(bodies)}"
          f" ({opts.lanes} lanes, up to {opts.fast_hold} entries a transaction)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--conversations", type=int, default=100)
    skip = "skip the one-transaction-per-webhook run (a shorter profile)"
    parser.add_argument("--batched-only", action="store_true", help=skip)
    parser.add_argument("--lanes", type=int, default=LANES, help="as deployed unless given")
    parser.add_argument("--hold", type=int, default=HOLD, help="entries one by one a transaction")
    help_fast = "entries a transaction on the set-based path"
    parser.add_argument("--fast-hold", type=int, default=FAST_HOLD, help=help_fast)
    skip = "skip both per-entry runs (the set-based one alone, to compare settings)"
    parser.add_argument("--fast-only", action="store_true", help=skip)
    opts = parser.parse_args()
    logs.configure("json", level=logging.WARNING)  # as in production, minus the info lines
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    workdir.chmod(0o755)
    with EmbeddedRedis(workdir / "redis") as r, EmbeddedPostgres(workdir / "pg") as pg:
        asyncio.run(Store.ensure_database(pg.url(), "bench"))
        asyncio.run(run(opts, r.url, pg.url("bench")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
