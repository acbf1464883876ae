"""What every group of statements holds: the connection of the transaction it runs in."""

from __future__ import annotations

import asyncpg

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class SQL:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
