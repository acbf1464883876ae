"""`switchboard migrate` on real PostgreSQL: fresh, upgraded, concurrent, too new; and the
start-up checks of `consume`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from consumers import local
from consumers.store import Store, schema
from ingress.errors import ConfigError
from tests import services

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
V1_SCHEMA = (services.ROOT / "tests" / "fixtures" / "schema_v1.sql").read_text()
V1_TABLES = ("contacts", "conversations", "messages", "outbound", "webhook_events")

# What a version-1 database of a running installation holds: a row in every table.
V1_DATA = """
INSERT INTO contacts (account_id, chatwoot_contact_id, name, email, phone, identifier, version)
VALUES (3, 41, 'Ana', 'ana@example.com', '+15550001', 'ana-1', 1718700000000);
INSERT INTO conversations (account_id, chatwoot_conversation_id, inbox_id, channel, contact_id,
    identity, status, handler, labels, version, last_inbound_message_id, emitted_through)
VALUES (3, 7, 2, 'Channel::WebWidget', 41, 'ana@example.com', 'pending', 'bot', '{vip}',
    1718700000.5, 901, 900);
INSERT INTO messages (account_id, chatwoot_message_id, chatwoot_conversation_id, direction,
    sender_kind, sender_id, content, content_type, attachments, status, created_at, ext_ref)
VALUES (3, 901, 7, 'inbound', 'contact', 41, 'Hello', 'text', '[{"file_type": "image"}]',
    'received', '2026-06-18T09:00:00Z', NULL),
    (3, 902, 7, 'outbound', 'agent_bot', 1, 'Hi!', 'text', '[]', 'sent',
    '2026-06-18T09:00:02Z', 'turn-1:reply');
INSERT INTO outbound (ref, account_id, chatwoot_conversation_id, kind, content, status,
    attempts, last_error, chatwoot_message_id, turn, stream_id, sent_at)
VALUES ('turn-1:reply', 3, 7, 'message', 'Hi!', 'sent', 1, NULL, 902, 'turn-1', '1-0',
    '2026-06-18T09:00:02Z'),
    ('turn-0:reply', 3, 7, 'message', 'Old', 'failed', 5, 'ChatwootError: 404', NULL, NULL,
    '0-1', NULL);
INSERT INTO webhook_events (stream_id, delivery_id, received_at, source, event, account_id,
    chatwoot_conversation_id, signed, outcome, detail, body)
VALUES ('1718700000000-0', 'd-1', '2026-06-18T09:00:00Z', 'chatwoot', 'message_created', 3, 7,
    true, 'applied', NULL, '\\x7b7d'),
    ('1718700000001-0', 'd-2', '2026-06-18T09:00:01Z', 'chatwoot', 'message_created', 3, 7,
    true, 'dead', 'permanent: bad', '\\x7b');
"""

STRUCTURE = {
    "columns": """
        SELECT table_name, column_name, data_type, udt_name, column_default, is_nullable
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
        ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        ORDER BY 1, 2""",
}


async def structure(url: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(url)
    try:
        return {name: [tuple(r) for r in await conn.fetch(sql)] for name, sql in STRUCTURE.items()}
    finally:
        await conn.close()


async def contents(url: str) -> dict[str, list[dict[str, Any]]]:
    conn = await asyncpg.connect(url)
    try:
        return {
            table: [dict(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]
            for table in V1_TABLES
        }
    finally:
        await conn.close()


async def test_fresh_database_gets_the_full_schema(empty_database: str) -> None:
    """No schema at all: schema.sql is applied; a second run finds it done."""
    assert await local.migrate(empty_database) == "applied the schema at version 3"
    store = await Store.connect(empty_database, max_size=1)
    try:
        assert await store.schema_version() == schema.SCHEMA_VERSION == 3
    finally:
        await store.close()
    assert await local.migrate(empty_database) == "schema is at version 3: nothing to do"


async def test_version_1_database_with_data_is_upgraded_intact(
    empty_database: str, postgres_server: str
) -> None:
    """A version-1 database holding data: migrate brings it to 3 (every step in turn), every
    row intact, and its structure equal to a fresh install's (schema.sql and the upgrade files
    cannot drift)."""
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute(V1_SCHEMA)
        await conn.execute(V1_DATA)
    finally:
        await conn.close()
    before = await contents(empty_database)
    assert all(before.values()), "every table holds data before the upgrade"

    assert await local.migrate(empty_database) == "upgraded the schema from version 1 to 3"

    store = await Store.connect(empty_database, max_size=1)
    try:
        assert await store.schema_version() == 3
    finally:
        await store.close()
    after = await contents(empty_database)
    # Every version-1 value is kept; columns added since are left at their defaults.
    assert {t: [{k: r[k] for k in old} for r, old in zip(rows, before[t], strict=True)]
            for t, rows in after.items()} == before  # fmt: skip
    fresh = await services.create_database(postgres_server, f"{_name(empty_database)}_fresh")
    try:
        assert await structure(empty_database) == await structure(fresh)
    finally:
        await _drop(postgres_server, f"{_name(empty_database)}_fresh")


async def test_two_concurrent_migrates_apply_once(empty_database: str) -> None:
    """Two processes migrating a fresh database at once both succeed; one applies, one finds
    it done (the advisory lock serialises them)."""
    said = await asyncio.gather(local.migrate(empty_database), local.migrate(empty_database))
    assert sorted(said) == [
        "applied the schema at version 3",
        "schema is at version 3: nothing to do",
    ]


async def test_a_newer_schema_is_refused(empty_database: str) -> None:
    """A database from a newer Switchboard: migrate refuses with one line and changes nothing."""
    await local.migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute("INSERT INTO schema_version (version) VALUES (4)")
    finally:
        await conn.close()
    with pytest.raises(ConfigError) as raised:
        await local.migrate(empty_database)
    assert raised.value.problems == [
        "schema is at version 4, newer than this Switchboard knows (3): run a newer Switchboard"
    ]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        pytest.param(None, "schema is missing: run switchboard migrate", id="missing"),
        pytest.param(
            1,
            "schema is at version 1, this Switchboard needs 3: run switchboard migrate",
            id="older",
        ),
        pytest.param(
            2,
            "schema is at version 2, this Switchboard needs 3: run switchboard migrate",
            id="previous",
        ),
        pytest.param(3, None, id="current"),
    ],
)
def test_problem_names_the_fix(version: int | None, expected: str | None) -> None:
    """Each schema state this code cannot run on is one line naming the fix."""
    assert schema.problem(version) == expected


def test_the_packaged_schema_is_the_documented_one() -> None:
    """consumers/store/schema.sql (what `migrate` applies, from any directory or an installed
    wheel) is the repository's schema.sql: edit one, copy it over the other."""
    assert schema.full_sql() == (services.ROOT / "schema.sql").read_text(), (
        "consumers/store/schema.sql and schema.sql differ: cp schema.sql consumers/store/"
    )


def test_upgrades_ship_inside_the_package() -> None:
    """Every step up to SCHEMA_VERSION has its file, found through the package (installed or
    not) and declared as package data."""
    for version in range(1, schema.SCHEMA_VERSION):
        assert "INSERT INTO schema_version" in schema.upgrade_sql(version)
    assert (
        '"consumers.store" = ["migrations/*.sql", "schema.sql"]'
        in (services.ROOT / "pyproject.toml").read_text()
    )


# -- as a user runs it ----------------------------------------------------------------------


def _env(process_env: dict[str, str], database: str) -> dict[str, str]:
    return process_env | {"DATABASE_URL": database}


def test_consume_refuses_a_missing_schema_until_migrated(
    empty_database: str, process_env: dict[str, str], workdir: Path
) -> None:
    """`switchboard consume` on an empty database: one line naming the fix, non-zero status;
    after `switchboard migrate` it starts, and stops cleanly on SIGTERM."""
    env = _env(process_env, empty_database)
    refused = subprocess.run([SWITCHBOARD, "consume", "persist"], env=env, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert refused.returncode != 0
    assert refused.stderr.splitlines() == [
        "switchboard consume: schema is missing: run switchboard migrate"
    ]
    migrated = subprocess.run([SWITCHBOARD, "migrate"], env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout == "switchboard migrate: applied the schema at version 3\n"
    process = services.Process("consume-after-migrate", [SWITCHBOARD, "consume", "persist"],
                               env, workdir)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "consumers.started" not in process.output():
            assert process.popen.poll() is None, process.output()
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.1)
    finally:
        status = process.stop(signal.SIGTERM)
    assert status == 0, process.output()


def test_consume_refuses_an_old_schema(empty_database: str, process_env: dict[str, str]) -> None:
    """`python -m consumers` on a version-1 database: one line naming the fix, non-zero."""
    asyncio.run(_load_v1(empty_database))
    refused = subprocess.run(
        [sys.executable, "-m", "consumers", "persist"],
        env=_env(process_env, empty_database),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.fspath(services.ROOT),
    )
    assert refused.returncode != 0
    assert refused.stderr.splitlines() == [
        "switchboard consume: schema is at version 1, this Switchboard needs 3: "
        "run switchboard migrate"
    ]


async def _load_v1(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(V1_SCHEMA)
    finally:
        await conn.close()


def _name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


async def _drop(server: str, name: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def test_doctor_names_the_fix_for_a_missing_schema(
    empty_database: str, process_env: dict[str, str]
) -> None:
    """`switchboard doctor` reports a database without the schema with the command to run."""
    done = subprocess.run([SWITCHBOARD, "doctor"], env=_env(process_env, empty_database),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert "problem: postgres: schema is missing: run switchboard migrate" in done.stderr
