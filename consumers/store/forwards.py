"""Instagram comment forwarding: the owner → worker app mapping, and each comment's outcome."""

from __future__ import annotations

import msgspec

from consumers.store.base import SQL


class Forward(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one comment (`meta_forwards`)."""

    comment_key: str
    stream_id: str
    delivery_id: str
    media_id: str | None = None
    owner_id: str | None = None
    app: str | None = None
    outcome: str  # forwarded | ignored | dead
    detail: str | None = None
    attempts: int = 1


class OwnerApp(msgspec.Struct, frozen=True, kw_only=True):
    owner_id: str
    app: str


class ForwardSQL(SQL):
    async def forwarded(self, keys: list[str]) -> set[str]:
        """Of these comment keys, those already forwarded: never sent again (a Meta retry,
        a replay, the same comment in another batch)."""
        rows = await self.conn.fetch(
            "SELECT comment_key FROM meta_forwards "
            "WHERE comment_key = ANY($1::text[]) AND outcome = 'forwarded'",
            keys,
        )
        return {r["comment_key"] for r in rows}

    async def record_forward(self, forward: Forward) -> None:
        """Record a comment's latest outcome. A `forwarded` row is final: a late attempt that
        raced with it cannot turn it back into `ignored` or `dead`."""
        await self.conn.execute(
            """
            INSERT INTO meta_forwards (comment_key, stream_id, delivery_id, media_id, owner_id,
                app, outcome, detail)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (comment_key) DO UPDATE SET stream_id = EXCLUDED.stream_id,
                delivery_id = EXCLUDED.delivery_id, media_id = EXCLUDED.media_id,
                owner_id = EXCLUDED.owner_id, app = EXCLUDED.app, outcome = EXCLUDED.outcome,
                detail = EXCLUDED.detail, attempts = meta_forwards.attempts + 1,
                updated_at = now()
            WHERE meta_forwards.outcome <> 'forwarded'
            """,
            forward.comment_key,
            forward.stream_id,
            forward.delivery_id,
            forward.media_id,
            forward.owner_id,
            forward.app,
            forward.outcome,
            forward.detail,
        )

    async def forwards(self, *, limit: int = 100) -> list[Forward]:
        """The latest comments' outcomes, newest first."""
        rows = await self.conn.fetch(
            "SELECT comment_key, stream_id, delivery_id, media_id, owner_id, app, outcome, "
            "detail, attempts FROM meta_forwards ORDER BY updated_at DESC LIMIT $1",
            limit,
        )
        return [Forward(**dict(r)) for r in rows]

    async def apps_of(self, owners: list[str]) -> dict[str, str]:
        """The worker app mapped to each of these owner ids (unmapped ones left out)."""
        rows = await self.conn.fetch(
            "SELECT owner_id, app FROM meta_owner_apps WHERE owner_id = ANY($1::text[])", owners
        )
        return {r["owner_id"]: r["app"] for r in rows}

    async def map_owner(self, owner: str, app: str) -> None:
        await self.conn.execute(
            """
            INSERT INTO meta_owner_apps (owner_id, app) VALUES ($1, $2)
            ON CONFLICT (owner_id) DO UPDATE SET app = EXCLUDED.app, updated_at = now()
            """,
            owner,
            app,
        )

    async def unmap_owner(self, owner: str) -> bool:
        status = await self.conn.execute("DELETE FROM meta_owner_apps WHERE owner_id = $1", owner)
        return status.endswith(" 1")

    async def owner_maps(self) -> list[OwnerApp]:
        rows = await self.conn.fetch("SELECT owner_id, app FROM meta_owner_apps ORDER BY owner_id")
        return [OwnerApp(owner_id=r["owner_id"], app=r["app"]) for r in rows]
