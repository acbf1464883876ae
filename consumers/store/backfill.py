"""Backfill bookkeeping: each account's watermark and scan lease, and what we already hold.

Every statement here runs in a short transaction of its own: a scan takes its lease, calls
Chatwoot with nothing open, then releases the lease (no network call under a row lock).
"""

from __future__ import annotations

import datetime as dt

import msgspec

from consumers.store.base import SQL


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """A scan's hold on an account, and where the last finished scan got to."""

    account_id: int
    last_activity_at: float | None  # Chatwoot's epoch seconds; None: never scanned


class BackfillSQL(SQL):
    async def backfill_accounts(self) -> list[int]:
        """The accounts we hold conversations of, or scanned before."""
        rows = await self.conn.fetch(
            "SELECT account_id FROM conversations UNION SELECT account_id FROM backfill_watermarks "
            "ORDER BY 1"
        )
        return [int(r["account_id"]) for r in rows]

    async def take_lease(
        self,
        account_id: int,
        *,
        owner: str,
        now: dt.datetime,
        until: dt.datetime,
        scanned_before: dt.datetime | None = None,
    ) -> Lease | None:
        """Hold the account until `until`, unless another scan holds it (or, with
        `scanned_before`, one finished after that moment); None when not taken."""
        row = await self.conn.fetchrow(
            """
            INSERT INTO backfill_watermarks AS w (account_id, lease_owner, lease_until)
            VALUES ($1, $2, $4)
            ON CONFLICT (account_id) DO UPDATE SET lease_owner = $2, lease_until = $4
            WHERE (w.lease_until IS NULL OR w.lease_until < $3)
                AND ($5::timestamptz IS NULL OR w.scanned_at IS NULL OR w.scanned_at < $5)
            RETURNING account_id, last_activity_at
            """,
            account_id,
            owner,
            now,
            until,
            scanned_before,
        )
        return None if row is None else msgspec.convert(dict(row), Lease)

    async def release_lease(
        self,
        account_id: int,
        *,
        owner: str,
        now: dt.datetime,
        last_activity_at: float | None,
    ) -> None:
        """Give the account back; a finished scan moves the watermark forward (never back)."""
        await self.conn.execute(
            """
            UPDATE backfill_watermarks SET lease_owner = NULL, lease_until = NULL,
                last_activity_at = GREATEST(last_activity_at, $3),
                scanned_at = CASE WHEN $3::float8 IS NULL THEN scanned_at ELSE $4 END
            WHERE account_id = $1 AND lease_owner = $2
            """,
            account_id,
            owner,
            last_activity_at,
            now,
        )

    async def newest_webhook(self, account_id: int) -> float | None:
        """When (epoch seconds) the newest webhook of the account we stored was received."""
        value = await self.conn.fetchval(
            "SELECT extract(epoch FROM max(received_at))::float8 FROM webhook_events "
            "WHERE account_id = $1 AND source <> 'backfill'",
            account_id,
        )
        return float(value) if value is not None else None

    async def resume_after(self, account_id: int, conversation_id: int, before: float) -> int:
        """The newest message we stored of a conversation created before `before` (epoch):
        listing resumes after it. Not simply the newest stored, since a message lost before a
        delivered one would then never be listed."""
        value = await self.conn.fetchval(
            """
            SELECT max(chatwoot_message_id) FROM messages
            WHERE account_id = $1 AND chatwoot_conversation_id = $2 AND created_at < $3
            """,
            account_id,
            conversation_id,
            dt.datetime.fromtimestamp(before, dt.UTC),
        )
        return int(value or 0)

    async def stored_message_ids(self, account_id: int, message_ids: list[int]) -> set[int]:
        rows = await self.conn.fetch(
            "SELECT chatwoot_message_id FROM messages "
            "WHERE account_id = $1 AND chatwoot_message_id = ANY($2::bigint[])",
            account_id,
            message_ids,
        )
        return {int(r["chatwoot_message_id"]) for r in rows}
