#!/usr/bin/env python3
"""Persist throughput, as a ratio to a baseline measured in the same run.

The baseline is the floor of "one transaction per webhook": each message inserted alone in its
own transaction, from a prepared row. The persist group does the real work per entry: decode
the entry and the webhook body, record the audit row, upsert contact and conversation (guarded
by versions), fold hand-off signals, insert the message, schedule the turn, acknowledge.

    python scripts/bench_persist.py --messages 3000 --conversations 100
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
from consumers.persist import Persister  # noqa: E402
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
    store: Store, redis: aioredis.Redis, bodies: list[bytes], *, concurrent: bool
) -> float:
    topo = msgspec.structs.replace(
        topology.load(ROOT / "streams.yaml"), prefix=f"bench{uuid.uuid4().hex[:6]}"
    )
    for body in bodies:
        entry = events.EventEntry(event="message_created", account=3, received_at=1,
                                  signed=True, body=body)  # fmt: skip
        await redis.xadd(topo.key("events"), events.encode(entry))  # type: ignore[arg-type]
    runner = Runner(redis, key=topo.key("events"), group="persist", spec=topo.groups["persist"],
                    dead_key=topo.key("dead"), handler=Persister(store, topo),
                    partition=by_conversation if concurrent else None)  # fmt: skip
    started = time.perf_counter()
    handled = await runner.drain()
    assert handled == len(bodies)
    return handled / (time.perf_counter() - started)


async def run(opts: argparse.Namespace, redis_url: str, database_url: str) -> None:
    store = await Store.connect(database_url, max_size=10)
    await store.apply_schema((ROOT / "schema.sql").read_text())
    redis = aioredis.Redis.from_url(redis_url)
    bodies = payloads(opts.messages, opts.conversations)
    try:
        floor = await baseline(store, bodies)
        sequential = await persist(store, redis, bodies, concurrent=False)
        real = await persist(store, redis, bodies, concurrent=True)
    finally:
        await redis.aclose()
        await store.close()
    print(f"{opts.messages} message_created webhooks over {opts.conversations} conversations,"
          " one consumer")  # fmt: skip
    print(f"{'work per webhook':<42}{'per s':>8}{'ratio':>8}")
    print(f"{'one INSERT in its own transaction (floor)':<42}{floor:>8.0f}{1:>8.2f}")
    print(f"{'persist, entries one after another':<42}{sequential:>8.0f}{sequential / floor:>8.2f}")
    print(f"{'persist, conversations side by side':<42}{real:>8.0f}{real / floor:>8.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--conversations", type=int, default=100)
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
