"""The PostgreSQL pool and its transactions; driver errors translated at this edge."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from consumers.errors import StoreError
from consumers.store.audit import AuditSQL
from consumers.store.conversations import ConversationSQL
from consumers.store.messages import MessageSQL
from consumers.store.outbound import OutboundSQL
from consumers.store.turns import TurnSQL

_OUTAGES = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
)


def _translate(exc: BaseException) -> StoreError:
    # Connection trouble and serialization conflicts pass; bad data does not.
    outage = isinstance(exc, _OUTAGES)
    retryable = outage or isinstance(
        exc,
        OSError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.InterfaceError
        | asyncpg.exceptions.PostgresConnectionError
        | asyncpg.exceptions.SerializationError
        # Two consumers racing to insert the same row: the retry takes the update path.
        | asyncpg.exceptions.UniqueViolationError
        | asyncpg.exceptions.DeadlockDetectedError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.AdminShutdownError
        | TimeoutError,
    )
    return StoreError(f"{type(exc).__name__}: {exc}", retryable=retryable, outage=outage)


_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class Store:
    """A pool of PostgreSQL connections."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> Store:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc
        return cls(pool)

    @staticmethod
    async def ensure_database(admin_dsn: str, name: str) -> None:
        """CREATE DATABASE unless it exists (the embedded server starts with `postgres` only)."""
        try:
            conn = await asyncpg.connect(admin_dsn)
            try:
                exists = await conn.fetchval(
                    "SELECT true FROM pg_database WHERE datname = $1", name
                )
                if not exists:
                    await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()
        except asyncpg.DuplicateDatabaseError:
            pass  # created concurrently: what we wanted
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc

    async def close(self) -> None:
        await self.pool.close()

    async def apply_schema(self, sql: str) -> None:
        # Concurrent `IF NOT EXISTS` DDL can still collide: one applier at a time.
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(727001)")
                await conn.execute(sql)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc

    async def schema_version(self) -> int | None:
        try:
            value = await self.pool.fetchval("SELECT max(version) FROM schema_version")
        except asyncpg.UndefinedTableError:
            return None
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc
        return int(value) if value is not None else None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                yield Tx(conn)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc


class Tx(AuditSQL, ConversationSQL, MessageSQL, TurnSQL, OutboundSQL):
    """The statements Switchboard runs, all inside one transaction (one mixin per table)."""
