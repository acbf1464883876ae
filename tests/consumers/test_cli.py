"""The `switchboard` command as a user runs it: a real process against real Redis and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from consumers.store import Store
from ingress.topology import Topology
from tests.conftest import BOT_TOKEN, Fake
from tests.pipeline import feed, persist_runner

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHBOARD, *args], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


async def test_replay_republishes_from_the_audit_trail(
    redis: aioredis.Redis, store: Store, topology: Topology, process_env: dict[str, str]
) -> None:
    """Webhooks in the audit trail go back to sb:events as they were received."""
    await feed(
        redis, topology, "message_created__private_note", "contact_created__webwidget_visitor"
    )
    await persist_runner(redis, store, topology).drain()
    dry = run(process_env, "replay", "--since", "2000-01-01", "--event", "message_created",
              "--dry-run")  # fmt: skip
    assert dry.returncode == 0 and "would replay 1 webhooks" in dry.stdout
    done = run(process_env, "replay", "--since", "2000-01-01")
    assert done.returncode == 0 and "replayed 2 webhooks" in done.stdout, done.stderr
    assert int(await redis.xlen(topology.key("events"))) == 4
    await persist_runner(redis, store, topology).drain()  # applied again: changes nothing
    async with store.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM messages") == 1


def test_config_problems_are_one_line_each(process_env: dict[str, str]) -> None:
    """A bad variable stops a command with one line naming it, and status 2."""
    done = run(process_env | {"PORT": "eighty", "REDIS_URL": "http://x"}, "streams")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "switchboard streams: REDIS_URL: must start with redis:// or rediss:// or unix:// or "
        "redis+cluster:// or rediss+cluster://",
        "switchboard streams: PORT: must be a whole number, got 'eighty'",
    ]


async def test_streams_and_doctor(
    redis: aioredis.Redis, store: Store, topology: Topology, process_env: dict[str, str],
    fake: Fake,
) -> None:  # fmt: skip
    """`streams` shows each stream and group; `doctor` checks Redis, PostgreSQL and the schema."""
    await feed(redis, topology, "message_created__private_note")
    await persist_runner(redis, store, topology).drain()
    streams = run(process_env, "streams")
    assert streams.returncode == 0
    rows = {line.split()[0]: line.split() for line in streams.stdout.splitlines()}
    stream, length, group, _consumers, lag, pending, oldest = rows[topology.key("events")]
    assert (length, group, lag, pending, oldest) == ("1", "persist", "0", "0", "-")
    chatwoot_env = {"CHATWOOT_BASE_URL": fake.url, "CHATWOOT_API_TOKEN": BOT_TOKEN,
                    "CHATWOOT_WEBHOOK_SECRETS": "s"}  # fmt: skip
    doctor = run(process_env | chatwoot_env, "doctor")
    assert doctor.returncode == 0, doctor.stderr
    assert "postgres: ok, schema version 3" in doctor.stdout


async def test_dead_letters_listed_shown_replayed_and_purged(
    redis: aioredis.Redis, store: Store, topology: Topology, process_env: dict[str, str]
) -> None:
    """An entry that failed can be read, put back on its stream, or purged."""
    await redis.xadd(topology.key("events"), {"event": "message_created"})  # undecodable
    await redis.xadd(topology.key("events"), {"event": "x"})
    await persist_runner(redis, store, topology).drain()
    listing = run(process_env, "dlq", "list")
    first, second = listing.stdout.splitlines()
    assert "undecodable" in first and f"{topology.key('events')}/persist" in first
    first_id, second_id = first.split()[0], second.split()[0]
    shown = run(process_env, "dlq", "show", first_id)
    assert "reason: undecodable" in shown.stdout and "event: message_created" in shown.stdout
    replayed = run(process_env, "dlq", "replay", first_id)
    assert replayed.returncode == 0 and "replayed as" in replayed.stdout
    events: Any = await redis.xrange(topology.key("events"))
    assert events[-1][1] == {b"event": b"message_created"}  # the original fields only
    assert run(process_env, "dlq", "purge", second_id).stdout == "purged 1\n"
    assert int(await redis.xlen(topology.key("dead"))) == 0
    assert run(process_env, "dlq", "purge").returncode == 2  # neither an id nor --all


def test_printed_urls_hide_passwords() -> None:
    """`switchboard up` prints the store URLs; a user's password is masked."""
    from consumers.local import without_password

    assert (
        without_password("postgresql://sb:hunter2@db:5432/sb") == "postgresql://sb:****@db:5432/sb"
    )
    assert without_password("redis://127.0.0.1:6380/0") == "redis://127.0.0.1:6380/0"
