"""Messages: stored once per Chatwoot id, moved forward only."""

from __future__ import annotations

import msgspec

from consumers.store.base import SQL
from consumers.store.rows import MessageRow, StoredMessage


class MessageSQL(SQL):
    async def insert_message(self, row: MessageRow) -> bool:
        """Store a message once; False when Chatwoot's message id was already stored."""
        inserted = await self.conn.fetchval(
            """
            INSERT INTO messages (account_id, chatwoot_message_id, chatwoot_conversation_id,
                direction, sender_kind, sender_id, private, message_type, content, content_type,
                attachments, status, created_at, ext_ref, deleted, version)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14, $15, $16)
            ON CONFLICT (account_id, chatwoot_message_id) DO NOTHING
            RETURNING true
            """,
            row.account_id,
            row.message_id,
            row.conversation_id,
            row.direction,
            row.sender_kind,
            row.sender_id,
            row.private,
            row.message_type,
            row.content,
            row.content_type,
            row.attachments.decode(),
            row.status,
            row.created_at,
            row.ext_ref,
            row.deleted,
            row.version,
        )
        return bool(inserted)

    async def lock_message(self, account_id: int, message_id: int) -> StoredMessage | None:
        row = await self.conn.fetchrow(
            "SELECT status, version FROM messages "
            "WHERE account_id = $1 AND chatwoot_message_id = $2 FOR UPDATE",
            account_id,
            message_id,
        )
        return None if row is None else msgspec.convert(dict(row), StoredMessage)

    async def update_message(self, row: MessageRow, *, newer: bool) -> None:
        """An edit, deletion or receipt: the status always (the caller moved it forward only),
        the content only from a newer version of the message."""
        await self.conn.execute(
            """
            UPDATE messages SET status = $3,
                content = CASE WHEN $8 THEN $4 ELSE content END,
                content_type = CASE WHEN $8 THEN $5 ELSE content_type END,
                attachments = CASE WHEN $8 THEN $6::jsonb ELSE attachments END,
                deleted = deleted OR $7,
                version = GREATEST(version, $9)
            WHERE account_id = $1 AND chatwoot_message_id = $2
            """,
            row.account_id,
            row.message_id,
            row.status,
            row.content,
            row.content_type,
            row.attachments.decode(),
            row.deleted,
            newer,
            row.version,
        )

    async def last_message_id(self, account_id: int, conversation_id: int) -> int:
        value = await self.conn.fetchval(
            "SELECT max(chatwoot_message_id) FROM messages "
            "WHERE account_id = $1 AND chatwoot_conversation_id = $2",
            account_id,
            conversation_id,
        )
        return int(value or 0)

    async def echo_of(self, ref: str, account_id: int, conversation_id: int) -> int | None:
        """The Chatwoot id of our reply's echo: proof it was posted. Only a message of the
        reply's own conversation that we could have posted counts (echoes.py): a bot's or
        no person's outgoing message, or any on an API inbox. Anyone can type an `ext_ref`."""
        value = await self.conn.fetchval(
            """
            SELECT m.chatwoot_message_id FROM messages m
            LEFT JOIN conversations c ON c.account_id = m.account_id
                AND c.chatwoot_conversation_id = m.chatwoot_conversation_id
            WHERE m.ext_ref = $1 AND m.account_id = $2 AND m.chatwoot_conversation_id = $3
                AND ((m.direction = 'outbound' AND m.sender_kind IN ('agent_bot', 'system'))
                    OR c.channel = 'Channel::Api')
            LIMIT 1
            """,
            ref,
            account_id,
            conversation_id,
        )
        return int(value) if value is not None else None
