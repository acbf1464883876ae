"""Worker apps: the named HTTP endpoints turns are pushed to, kept in PostgreSQL so that every
process agrees on them. Use as `AppSQL(tx.conn)` inside a `Store.transaction()`."""

from __future__ import annotations

import datetime as dt

import msgspec

from consumers.store.base import SQL
from ingress.settings import Secret

_COLUMNS = "name, url, secret, timeout_s, enabled, created_at, updated_at"


class WorkerApp(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    url: str
    secret: Secret  # never in a repr or a log line: we sign with it, nobody reads it
    timeout_s: float
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class Unset(msgspec.Struct, frozen=True):
    """An `update` argument left as it is."""


UNSET = Unset()


def _app(record: object) -> WorkerApp:
    row = dict(record)  # type: ignore[call-overload]
    row["secret"] = Secret(row["secret"])
    return WorkerApp(**row)


class AppSQL(SQL):
    async def add_app(
        self, name: str, url: str, secret: str, *, timeout_s: float, enabled: bool
    ) -> bool:
        """Register an app; False when one of that name exists (it is left as it is)."""
        added = await self.conn.fetchval(
            "INSERT INTO worker_apps (name, url, secret, timeout_s, enabled) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING true",
            name, url, secret, timeout_s, enabled,
        )  # fmt: skip
        return bool(added)

    async def list_apps(self) -> list[WorkerApp]:
        records = await self.conn.fetch(f"SELECT {_COLUMNS} FROM worker_apps ORDER BY name")
        return [_app(record) for record in records]

    async def get_app(self, name: str) -> WorkerApp | None:
        record = await self.conn.fetchrow(
            f"SELECT {_COLUMNS} FROM worker_apps WHERE name = $1", name
        )
        return None if record is None else _app(record)

    async def update_app(
        self,
        name: str,
        *,
        url: str | Unset = UNSET,
        secret: str | Unset = UNSET,
        timeout_s: float | Unset = UNSET,
        enabled: bool | Unset = UNSET,
    ) -> bool:
        """Change the given fields; False when there is no such app."""
        changes: dict[str, object] = {
            column: value
            for column, value in (
                ("url", url),
                ("secret", secret),
                ("timeout_s", timeout_s),
                ("enabled", enabled),
            )  # fmt: skip
            if not isinstance(value, Unset)
        }
        sets = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
        sets = f"{sets}, updated_at = now()" if sets else "updated_at = now()"
        updated = await self.conn.fetchval(
            f"UPDATE worker_apps SET {sets} WHERE name = $1 RETURNING true",
            name,
            *changes.values(),
        )
        return bool(updated)

    async def remove_app(self, name: str) -> bool:
        removed = await self.conn.fetchval(
            "DELETE FROM worker_apps WHERE name = $1 RETURNING true", name
        )
        return bool(removed)
