"""The schema's version, and `switchboard migrate`: the full schema on a database that has none,
else the upgrades from the version it is at, all in one transaction under an advisory lock."""

from __future__ import annotations

from importlib import resources

from consumers.store.base import Connection
from consumers.store.database import Store
from ingress.errors import ConfigError

# The version schema.sql builds and this code runs on: `consume` refuses any other, `doctor`
# reports it, and consumers/store/migrations/ holds one `vN_to_vN+1.sql` per step up to it.
SCHEMA_VERSION = 3
# Held for the transaction: two `migrate` (or `up`) started together apply the schema once,
# and the second finds it done.
_LOCK_ID = 727001


def problem(version: int | None) -> str | None:
    """What is wrong with a database at `version` for this code, as one line naming the fix."""
    if version is None:
        return "schema is missing: run switchboard migrate"
    if version > SCHEMA_VERSION:
        return (
            f"schema is at version {version}, newer than this Switchboard knows "
            f"({SCHEMA_VERSION}): run a newer Switchboard"
        )
    if version != SCHEMA_VERSION:
        return (
            f"schema is at version {version}, this Switchboard needs {SCHEMA_VERSION}: "
            "run switchboard migrate"
        )
    return None


async def require_current(store: Store) -> None:
    """Refuse to run on a schema this code does not know (rather than dead-letter every entry
    for a missing table)."""
    found = problem(await store.schema_version())
    if found is not None:
        raise ConfigError([found])


def full_sql() -> str:
    """schema.sql as shipped inside the package (tests keep it equal to the repository's)."""
    path = resources.files("consumers.store").joinpath("schema.sql")
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read the packaged schema ({exc})"]) from exc


def upgrade_sql(version: int) -> str:
    """The upgrade from `version` to the next one, shipped inside the package."""
    name = f"v{version}_to_v{version + 1}.sql"
    path = resources.files("consumers.store").joinpath("migrations", name)
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError([f"no upgrade from schema version {version} ({name})"]) from exc


async def migrate(store: Store, schema_sql: str) -> str:
    """Bring the database to SCHEMA_VERSION; one line saying what was done."""
    async with store.transaction() as tx:
        await tx.conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        # Read after the lock: a concurrent migrate that held it has committed by now.
        found = await _version(tx.conn)
        if found is None:
            await tx.conn.execute(schema_sql)
            return f"applied the schema at version {SCHEMA_VERSION}"
        if found > SCHEMA_VERSION:
            raise ConfigError([problem(found) or ""])
        if found == SCHEMA_VERSION:
            return f"schema is at version {SCHEMA_VERSION}: nothing to do"
        for version in range(found, SCHEMA_VERSION):
            await tx.conn.execute(upgrade_sql(version))
        return f"upgraded the schema from version {found} to {SCHEMA_VERSION}"


async def _version(conn: Connection) -> int | None:
    # to_regclass, not a failing SELECT: an error would abort the transaction we apply in.
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return None
    value = await conn.fetchval("SELECT max(version) FROM schema_version")
    return int(value) if value is not None else None
