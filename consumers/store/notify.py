"""Wake-ups through PostgreSQL: NOTIFY sent by a transaction reaches listeners at its commit.

A notification is only a hint that work may be due; the rows stay the source of truth, so a
listener that lost its connection (and the notifications sent meanwhile) just polls until it
listens again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from consumers.store.database import Store
from consumers.store.turns import TURNS_DUE

__all__ = ["TURNS_DUE", "Listener"]

log = structlog.get_logger("store")


class Listener:
    """One pooled connection held for LISTEN on `channel`; `wake()` runs on each notification."""

    def __init__(self, store: Store, channel: str, wake: Callable[[], None]) -> None:
        self.store = store
        self.channel = channel
        self.wake = wake
        self._conn: Any = None

    def _notified(self, *_: object) -> None:
        self.wake()

    async def ensure(self) -> bool:
        """Listening now (connecting again if the connection was lost); False when it cannot,
        and the caller polls meanwhile."""
        if self._conn is not None and not self._conn.is_closed():
            return True
        await self.close()
        try:
            conn = await self.store.pool.acquire()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("listen.unavailable", channel=self.channel, error=str(exc))
            return False
        try:
            await conn.add_listener(self.channel, self._notified)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("listen.unavailable", channel=self.channel, error=str(exc))
            await self._release(conn)
            return False
        self._conn = conn
        # Whatever was notified before we listened is found by the caller's next look.
        self.wake()
        return True

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not conn.is_closed():
                await conn.remove_listener(self.channel, self._notified)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            pass  # the connection is going back to the pool, which resets or drops it
        await self._release(conn)

    async def _release(self, conn: Any) -> None:
        try:
            await self.store.pool.release(conn)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            pass  # a broken connection: the pool replaces it
