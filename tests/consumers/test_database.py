"""PostgreSQL faults provoked for real, judged by what they are: the data's fault is dead at
once; a missing table, a read-only server, a timeout are outages waited out in place."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from consumers import decisions
from consumers.errors import StoreError
from consumers.persist import Persister
from consumers.runner import Runner
from consumers.store import Store
from ingress.topology import Topology
from tests import services
from tests.pipeline import feed, rows


@pytest.mark.parametrize(
    ("sql", "sqlstate", "outage", "retryable"),
    [
        pytest.param("SELECT 'x'::int", "22P02", False, False, id="22P02-bad-text"),
        pytest.param("SELECT 2147483647::int + 1", "22003", False, False, id="22003-overflow"),
        pytest.param("SELECT 1", None, None, None, id="no-error"),
        pytest.param(
            "CREATE TEMP TABLE t (k int PRIMARY KEY) ON COMMIT DROP;"
            "INSERT INTO t VALUES (1); INSERT INTO t VALUES (1)",
            "23505", False, True, id="23505-race-retries",
        ),
        pytest.param(
            "CREATE TEMP TABLE t (k int NOT NULL) ON COMMIT DROP; INSERT INTO t VALUES (NULL)",
            "23502", False, False, id="23502-not-null",
        ),
        pytest.param("SELECT * FROM no_such_table", "42P01", True, True, id="42P01-no-table"),
        pytest.param("SELECT no_such_column FROM messages", "42703", True, True, id="42703"),
        pytest.param(
            "SET TRANSACTION READ ONLY; DELETE FROM messages WHERE false",
            "25006", True, True, id="25006-read-only",
        ),
        pytest.param(
            "SET LOCAL statement_timeout = 20; SELECT pg_sleep(2)",
            "57014", True, True, id="57014-statement-timeout",
        ),
    ],
)  # fmt: skip
async def test_server_errors_are_translated_by_sqlstate(
    store: Store, sql: str, sqlstate: str | None, outage: bool | None, retryable: bool | None
) -> None:
    """Each provoked error becomes a StoreError whose flags follow its SQLSTATE."""
    try:
        async with store.transaction() as tx:
            await tx.conn.execute(sql)
    except StoreError as exc:
        assert sqlstate is not None, exc
        assert f"SQLSTATE {sqlstate}" in str(exc)
        assert (exc.outage, exc.retryable) == (outage, retryable)
    else:
        assert sqlstate is None


async def test_a_value_the_driver_cannot_send_is_permanent(store: Store) -> None:
    """An int outside int64, refused by asyncpg before sending (as SQLSTATE 22000): permanent."""
    with pytest.raises(StoreError) as caught:
        async with store.transaction() as tx:
            await tx.conn.fetchval("SELECT $1::bigint", 2**63)
    assert (caught.value.outage, caught.value.retryable) == (False, False)


async def test_a_timed_out_command_is_an_outage(store: Store) -> None:
    """A command past its timeout (asyncpg's command_timeout) is waited out, not dead."""
    with pytest.raises(StoreError) as caught:
        async with store.transaction() as tx:
            await tx.conn.execute("SELECT pg_sleep(2)", timeout=0.05)
    assert caught.value.outage


async def test_our_own_oserror_inside_a_transaction_is_not_an_outage(store: Store) -> None:
    """`datetime.fromtimestamp` raising OSError/OverflowError in our code inside a transaction
    is a bug for that entry, not a lost connection: it is not translated into an outage."""
    import datetime as dt

    with pytest.raises(OSError) as caught:
        async with store.transaction():
            dt.datetime.fromtimestamp(1e18, dt.UTC)  # OSError EOVERFLOW
    assert not isinstance(caught.value, StoreError)
    decision = decisions.decide(caught.value, deliveries=1, max_deliveries=5)
    assert isinstance(decision, decisions.Dead) and decision.reason == "bug"


# -- the runner over a database of its own: a table dropped, the server read-only -------------


@pytest.fixture
async def own_database(database_url: str) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A fresh database with the schema (its tables are renamed and its settings changed,
    which the shared test database must never see), and an admin connection to the server."""
    name = f"sbfaults_{uuid.uuid4().hex[:8]}"
    admin_url = services.with_database(database_url, "postgres")
    url = await services.create_database(admin_url, name)
    admin = await asyncpg.connect(admin_url)
    try:
        yield url, admin
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def runner(redis: aioredis.Redis, store: Store, topology: Topology) -> Runner:
    spec = topology.groups["persist"]
    return Runner(
        redis,
        key=topology.key("events"),
        group="persist",
        spec=spec,
        dead_key=topology.key("dead"),
        handler=Persister(store, topology, bot_id=4),
        consumer="test-faults",
    )


async def deliveries(redis: aioredis.Redis, topology: Topology) -> list[int]:
    pending: Any = await redis.xpending_range(topology.key("events"), "persist", "-", "+", 10)
    return [int(p["times_delivered"]) for p in pending]


async def until(check: Any, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_a_missing_table_is_waited_out_then_applied(
    own_database: tuple[str, asyncpg.Connection], redis: aioredis.Redis, topology: Topology
) -> None:
    """42P01 (a migration renamed the table): the entry is held without counting a delivery
    or being dead-lettered, and applied once the table is back."""
    url, _ = own_database
    store = await Store.connect(url, max_size=2)
    try:
        async with store.pool.acquire() as conn:
            await conn.execute("ALTER TABLE messages RENAME TO messages_gone")
        await feed(redis, topology, "message_created__whatsapp_incoming_phone")
        r = runner(redis, store, topology)
        task = asyncio.create_task(r.run())
        await asyncio.sleep(1.0)  # several outage rounds
        assert await deliveries(redis, topology) == [1]
        assert await redis.xlen(topology.key("dead")) == 0
        async with store.pool.acquire() as conn:
            await conn.execute("ALTER TABLE messages_gone RENAME TO messages")

        async def stored() -> bool:
            return len(await rows(store, "SELECT 1 FROM messages")) == 1

        await until(stored)
        await until(lambda: _no_pending(redis, topology))
        r.stop()
        await asyncio.wait_for(task, timeout=5)
        assert await redis.xlen(topology.key("dead")) == 0
    finally:
        await store.close()


async def _no_pending(redis: aioredis.Redis, topology: Topology) -> bool:
    return await deliveries(redis, topology) == []


async def test_a_read_only_server_is_waited_out(
    own_database: tuple[str, asyncpg.Connection], redis: aioredis.Redis, topology: Topology
) -> None:
    """25006 after a failover (the database turned read-only, connections cut): held in
    place, then applied once writable again."""
    url, admin = own_database
    name = url.rsplit("/", 1)[1].split("?")[0]
    await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    store = await Store.connect(url, max_size=2)
    try:
        await feed(redis, topology, "message_created__whatsapp_incoming_phone")
        r = runner(redis, store, topology)
        task = asyncio.create_task(r.run())
        await asyncio.sleep(1.0)
        assert await deliveries(redis, topology) == [1]
        assert await redis.xlen(topology.key("dead")) == 0
        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await until(lambda: _no_pending(redis, topology))
        r.stop()
        await asyncio.wait_for(task, timeout=5)
        assert await redis.xlen(topology.key("dead")) == 0
        [row] = await rows(store, "SELECT outcome FROM webhook_events")
        assert row["outcome"] == "applied"
    finally:
        await store.close()


async def test_a_plan_invalidated_by_a_migration_is_an_outage_that_passes(
    own_database: tuple[str, asyncpg.Connection],
) -> None:
    """0A000 (a cached statement whose result type a migration changed) inside a transaction
    is an outage; asyncpg re-prepares, so the next try succeeds."""
    url, _ = own_database
    store = await Store.connect(url, max_size=1)
    try:
        async with store.pool.acquire() as conn:
            await conn.execute("CREATE TABLE t (a int); INSERT INTO t VALUES (1)")
        async with store.transaction() as tx:
            assert [tuple(r) for r in await tx.conn.fetch("SELECT * FROM t")] == [(1,)]
        async with store.pool.acquire() as conn:
            await conn.execute("ALTER TABLE t ADD COLUMN b int")  # from another session, say
        with pytest.raises(StoreError) as caught:
            async with store.transaction() as tx:
                await tx.conn.fetch("SELECT * FROM t")
        assert "SQLSTATE 0A000" in str(caught.value) and caught.value.outage
        async with store.transaction() as tx:
            assert [tuple(r) for r in await tx.conn.fetch("SELECT * FROM t")] == [(1, None)]
    finally:
        await store.close()
