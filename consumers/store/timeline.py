"""What one conversation's timeline is read from: its row, contact, audit trail, messages,
turns emitted and replies (read-only, but for `record_turns`, the turns worker's log)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from consumers.store.base import SQL
from consumers.timeline import TimelineRows, TurnLogged

# A conversation with more than this many rows of one kind shows its latest ones.
LIMIT = 2_000


class TimelineSQL(SQL):
    async def record_turns(self, turns: list[TurnLogged], now: dt.datetime) -> None:
        """Log turns emitted; a turn logged twice (emitted again after a crash) is one row."""
        await self.conn.executemany(
            """
            INSERT INTO turn_log (turn, account_id, chatwoot_conversation_id, through,
                message_ids, route, stream, emitted_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (turn) DO NOTHING
            """,
            [
                (
                    t.turn,
                    t.account_id,
                    t.conversation_id,
                    t.through,
                    t.message_ids,
                    t.route,
                    t.stream,
                    now,
                )
                for t in turns
            ],  # fmt: skip
        )

    async def timeline_rows(self, account: int, conversation: int) -> TimelineRows | None:
        """The conversation's rows, or None when it was never stored."""
        found = await self.conn.fetchrow(
            "SELECT * FROM conversations WHERE account_id = $1 AND chatwoot_conversation_id = $2",
            account,
            conversation,
        )
        if found is None:
            return None
        row = dict(found)
        contact = None
        if row["contact_id"] is not None:
            contact_row = await self.conn.fetchrow(
                "SELECT name, email, phone, identifier FROM contacts "
                "WHERE account_id = $1 AND chatwoot_contact_id = $2",
                account,
                row["contact_id"],
            )
            contact = dict(contact_row) if contact_row is not None else None
        return TimelineRows(
            conversation=row,
            contact=contact,
            webhooks=await self._latest(_WEBHOOKS, account, conversation),
            messages=await self._latest(_MESSAGES, account, conversation),
            turns=await self._latest(_TURNS, account, conversation),
            replies=await self._latest(_REPLIES, account, conversation),
        )

    async def _latest(self, sql: str, account: int, conversation: int) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(sql, account, conversation, LIMIT)
        return [dict(r) for r in reversed(rows)]


# Each query takes the newest LIMIT rows (newest first; reversed by `_latest`).
_WEBHOOKS = """
    SELECT stream_id, delivery_id, received_at, source, event, outcome, detail
    FROM webhook_events WHERE account_id = $1 AND chatwoot_conversation_id = $2
    ORDER BY received_at DESC, stream_id DESC LIMIT $3
"""
_MESSAGES = """
    SELECT chatwoot_message_id, direction, sender_kind, sender_id, private, message_type,
        left(content, 200) AS content, content_type, status, created_at, ext_ref, deleted,
        version, stored_at
    FROM messages WHERE account_id = $1 AND chatwoot_conversation_id = $2
    ORDER BY chatwoot_message_id DESC LIMIT $3
"""
_TURNS = """
    SELECT turn, through, message_ids, route, stream, emitted_at
    FROM turn_log WHERE account_id = $1 AND chatwoot_conversation_id = $2
    ORDER BY emitted_at DESC, through DESC LIMIT $3
"""
_REPLIES = """
    SELECT ref, kind, left(content, 200) AS content, private, status, attempts, last_error,
        chatwoot_message_id, turn, created_at, sent_at
    FROM outbound WHERE account_id = $1 AND chatwoot_conversation_id = $2
    ORDER BY created_at DESC, ref DESC LIMIT $3
"""
