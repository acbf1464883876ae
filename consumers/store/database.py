"""The PostgreSQL pool and its transactions; driver errors translated at this edge."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from consumers import faults, statuses
from consumers.errors import StoreError
from consumers.faults import Fault
from consumers.store.answers import AnswerSQL
from consumers.store.audit import AuditSQL
from consumers.store.base import Connection
from consumers.store.conversations import ConversationSQL
from consumers.store.forwards import ForwardSQL
from consumers.store.messages import MessageSQL
from consumers.store.outbound import OutboundSQL
from consumers.store.timings import TimingSQL
from consumers.store.turns import TurnSQL

# Longer than any statement we run (they are short, by design) and shorter than what waits on
# them: a statement stuck behind a lock or a dying server ends as an outage, waited out.
COMMAND_TIMEOUT_S = 30.0


def _translate(exc: BaseException) -> StoreError:
    """A driver error as a StoreError whose flags say its fault (see consumers/faults.py).

    A server error carries its SQLSTATE (asyncpg gives a value it cannot encode, an int
    outside int64, SQLSTATE 22000: the data's fault); anything else from the driver (a
    connection lost, refused or reset, a timeout, the pool closed under us) is an outage."""
    sqlstate = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    fault = faults.of_sqlstate(sqlstate) if sqlstate else Fault.OUTAGE
    text = f"{type(exc).__name__}: {exc}"
    if sqlstate:
        text = f"{text} (SQLSTATE {sqlstate})"
    return StoreError(text, retryable=fault is not Fault.PERMANENT, outage=fault is Fault.OUTAGE)


# InternalClientError: the protocol left in a bad state by a connection cut mid-statement
# (seen when a failover terminates backends); like a lost connection, an outage.
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# What a statement itself raises: the server's answer, the connection lost, a timeout.
_STATEMENT_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    ConnectionError,
    TimeoutError,
)


class Store:
    """A pool of PostgreSQL connections."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> Store:
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, command_timeout=COMMAND_TIMEOUT_S
            )
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
        in_body = False
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                in_body = True
                yield Tx(conn)
                in_body = False
        except _DRIVER_ERRORS as exc:
            # An OSError raised by the caller's own code inside the transaction (say
            # `datetime.fromtimestamp` on a huge value) is its bug, not a lost connection:
            # translating it into an outage would hold its entry forever.
            if in_body and not isinstance(exc, _STATEMENT_ERRORS):
                raise
            raise _translate(exc) from exc


class Tx(
    AuditSQL, ConversationSQL, MessageSQL, TurnSQL, OutboundSQL, AnswerSQL, ForwardSQL, TimingSQL
):
    """The statements Switchboard runs, all inside one transaction (one mixin per table;
    statements that need more than one table group are here)."""

    # The one savepoint `savepoint()` keeps open; released when the next one starts, or by
    # the commit (a single round trip per entry of a batch instead of two).
    _SAVEPOINT = "sb_entry"

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._savepoint_open = False

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A part of the transaction that fails alone: its statements are rolled back, the
        transaction goes on. One at a time (not nested): the previous one is released in the
        same round trip that starts this one (several statements in one simple query), the
        last one by the commit. Driver errors are translated here, as `Store.transaction`
        does."""
        name = self._SAVEPOINT
        start = f"RELEASE SAVEPOINT {name}; SAVEPOINT {name}"
        try:
            await self.conn.execute(start if self._savepoint_open else f"SAVEPOINT {name}")
        except _STATEMENT_ERRORS as exc:
            raise _translate(exc) from exc
        self._savepoint_open = True
        try:
            yield
        except BaseException as exc:
            try:
                # Still open after the rollback to it: the next one releases it as usual.
                await self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            except _STATEMENT_ERRORS as lost:
                raise _translate(lost) from exc
            if isinstance(exc, _STATEMENT_ERRORS):
                raise _translate(exc) from exc
            raise

    async def requeue_outbound(self, ref: str) -> statuses.Outbound | None:
        """An operator's replay of a reply that failed for good: `queued` again with its
        attempts reset, due now (`last_error` stays, for history). Any other status is left
        as it is: a reply already sent, or still on its way, is never sent twice. Returns the
        status found (`sent` when its echo shows Chatwoot has it), None when no such reply."""
        row = await self.outbound_row(ref, lock=True)
        if row is None:
            return None
        found = row.status
        if found is not statuses.Outbound.FAILED:
            return found
        # Failed after ambiguous attempts, yet it landed (its echo came back): leave it failed.
        conversation = row.chatwoot_conversation_id
        if conversation and await self.echo_of(ref, row.account_id, conversation) is not None:
            return statuses.Outbound.SENT
        # Due by the database's clock, the one every lease and retry is compared with.
        await self.conn.execute(
            "UPDATE outbound SET status = $2, attempts = 0, next_attempt_at = clock_timestamp() "
            "WHERE ref = $1",
            ref,
            str(statuses.requeue(found)),
        )
        return found
