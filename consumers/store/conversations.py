"""Contacts and conversations: upserts guarded by Chatwoot's versions, hand-off signals."""

from __future__ import annotations

import msgspec

from consumers import conversation as cv
from consumers.store.base import SQL
from consumers.store.rows import ConversationRow, ReplyContext


class ConversationSQL(SQL):
    async def upsert_contact(
        self,
        *,
        account_id: int,
        contact_id: int,
        name: str | None,
        email: str | None,
        phone: str | None,
        identifier: str | None,
        version: int,
        custom_attributes: str | None = None,
        additional_attributes: str | None = None,
    ) -> None:
        """Newer data only. The attributes (jsonb text) are kept as they were when the event
        does not carry them (None): a sender object without them erases nothing."""
        await self.conn.execute(
            """
            INSERT INTO contacts (account_id, chatwoot_contact_id, name, email, phone,
                identifier, version, custom_attributes, additional_attributes)
            VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8::jsonb, '{}'),
                COALESCE($9::jsonb, '{}'))
            ON CONFLICT (account_id, chatwoot_contact_id) DO UPDATE SET
                name = EXCLUDED.name, email = EXCLUDED.email, phone = EXCLUDED.phone,
                identifier = EXCLUDED.identifier, version = EXCLUDED.version, updated_at = now(),
                custom_attributes = COALESCE($8::jsonb, contacts.custom_attributes),
                additional_attributes = COALESCE($9::jsonb, contacts.additional_attributes)
            WHERE contacts.version <= EXCLUDED.version
            """,
            account_id,
            contact_id,
            name,
            email,
            phone,
            identifier,
            version,
            custom_attributes,
            additional_attributes,
        )

    async def lock_conversation(
        self, account_id: int, conversation_id: int
    ) -> ConversationRow | None:
        row = await self.conn.fetchrow(
            """
            SELECT account_id, chatwoot_conversation_id AS conversation_id, inbox_id, channel,
                contact_id, identity, status, assignee_type, assignee_id, team_id, labels,
                handler, human_since, bot_since, version, inbox_name
            FROM conversations WHERE account_id = $1 AND chatwoot_conversation_id = $2
            FOR UPDATE
            """,
            account_id,
            conversation_id,
        )
        return None if row is None else msgspec.convert(dict(row), ConversationRow)

    async def insert_conversation(self, row: ConversationRow) -> bool:
        """A conversation seen for the first time; it is the customer's active one unless a
        newer conversation (a higher display id) of the same customer already is. The same
        customer: the same identity, or the same Chatwoot contact in the same inbox (a contact
        may talk to several inboxes of one channel type at once), whose identity may have
        changed since (an anonymous widget visitor identified later: `contact:N`, then
        `email:...`; a conversation keeps the identity it was first seen with)."""
        newer = False
        same_customer = (
            row.account_id,
            row.channel,
            row.identity,
            row.conversation_id,
            row.contact_id,
            row.inbox_id,
        )
        if row.identity is not None:
            # Two new conversations of one customer may be inserted at once (other consumers,
            # other lanes of a batch). Nothing unique stops both from staying active when
            # they match by contact rather than identity: take the customer's turn first, so
            # the second sees the first once it commits. Keys in one order: no deadlock here.
            customer = f"{row.account_id}:{row.channel}"
            keys = {f"{customer}:identity:{row.identity}"}
            if row.contact_id is not None:
                keys.add(f"{customer}:contact:{row.contact_id}")
            for key in sorted(keys):
                await self.conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 727002))", key
                )
            newer = bool(
                await self.conn.fetchval(
                    """
                    SELECT true FROM conversations
                    WHERE account_id = $1 AND channel IS NOT DISTINCT FROM $2
                        AND (identity = $3
                            OR (contact_id = $5 AND inbox_id IS NOT DISTINCT FROM $6))
                        AND active AND chatwoot_conversation_id > $4
                    FOR UPDATE
                    """,
                    *same_customer,
                )
            )
            if not newer:
                await self.conn.execute(
                    """
                    UPDATE conversations SET active = false, ended_at = now()
                    WHERE account_id = $1 AND channel IS NOT DISTINCT FROM $2
                        AND (identity = $3
                            OR (contact_id = $5 AND inbox_id IS NOT DISTINCT FROM $6))
                        AND active AND chatwoot_conversation_id < $4
                    """,
                    *same_customer,
                )
        inserted = await self.conn.fetchval(
            """
            INSERT INTO conversations (account_id, chatwoot_conversation_id, inbox_id, channel,
                contact_id, identity, status, assignee_type, assignee_id, handler, version,
                active, ended_at, team_id, labels, human_since, bot_since,
                custom_attributes, additional_attributes, inbox_name)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $19,
                CASE WHEN $19 THEN NULL ELSE now() END, $12, $13, $14, $15,
                COALESCE($16::jsonb, '{}'), COALESCE($17::jsonb, '{}'), $18)
            ON CONFLICT (account_id, chatwoot_conversation_id) DO NOTHING
            RETURNING true
            """,
            *_columns(row),
            not newer,
        )
        return bool(inserted)

    async def update_conversation(self, row: ConversationRow) -> None:
        await self.conn.execute(
            """
            UPDATE conversations SET inbox_id = COALESCE($3, inbox_id),
                channel = COALESCE($4, channel), contact_id = COALESCE($5, contact_id),
                identity = COALESCE(identity, $6), status = $7, assignee_type = $8,
                assignee_id = $9, handler = $10, version = $11, team_id = $12, labels = $13,
                human_since = $14, bot_since = $15,
                -- what the snapshot does not carry (None) is kept as it was
                custom_attributes = COALESCE($16::jsonb, custom_attributes),
                additional_attributes = COALESCE($17::jsonb, additional_attributes),
                inbox_name = COALESCE($18, inbox_name),
                answer_due_at = CASE WHEN $10 = 'human' THEN NULL ELSE answer_due_at END,
                answer_holds = CASE WHEN $10 = 'human' THEN 0 ELSE answer_holds END
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            *_columns(row),
        )

    async def fill_inbox_name(self, account_id: int, conversation_id: int, name: str) -> None:
        """The inbox's name from an event older than the stored snapshot, when none is stored:
        only message events carry it, so the newest snapshot often has none."""
        await self.conn.execute(
            """
            UPDATE conversations SET inbox_name = $3
            WHERE account_id = $1 AND chatwoot_conversation_id = $2 AND inbox_name IS NULL
            """,
            account_id,
            conversation_id,
            name,
        )

    async def merge_signals(
        self, conv: ConversationRow, signals: list[cv.Signal]
    ) -> ConversationRow:
        """Fold hand-off signals into a (locked) conversation; the row as it now is."""
        row = with_signals(conv, signals)
        if row != conv:
            await self.set_takeover(
                conv.account_id,
                conv.conversation_id,
                handler=row.handler,
                human_since=row.human_since,
                bot_since=row.bot_since,
            )
        return row

    async def set_takeover(
        self,
        account_id: int,
        conversation_id: int,
        *,
        handler: cv.Handler,
        human_since: float | None,
        bot_since: float | None,
    ) -> None:
        await self.conn.execute(
            """
            UPDATE conversations SET handler = $3, human_since = $4, bot_since = $5,
                -- a human has it now: no bot answer is awaited (a stale deadline must not
                -- fire once the conversation comes back to the bot)
                answer_due_at = CASE WHEN $3 = 'human' THEN NULL ELSE answer_due_at END,
                answer_holds = CASE WHEN $3 = 'human' THEN 0 ELSE answer_holds END
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            account_id,
            conversation_id,
            handler,
            human_since,
            bot_since,
        )

    async def reply_context(self, account_id: int, conversation_id: int) -> ReplyContext | None:
        row = await self.conn.fetchrow(
            """
            SELECT inbox_id, channel, status, handler, last_inbound_message_id
            FROM conversations WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            account_id,
            conversation_id,
        )
        return None if row is None else msgspec.convert(dict(row), ReplyContext)


def with_signals(conv: ConversationRow, signals: list[cv.Signal]) -> ConversationRow:
    """The conversation with hand-off signals folded in (shared with the batch buffer)."""
    takeover = cv.Takeover(human_since=conv.human_since, bot_since=conv.bot_since)
    merged = takeover.merge(signals)
    return msgspec.structs.replace(
        conv,
        handler=merged.handler,
        human_since=merged.human_since,
        bot_since=merged.bot_since,
    )


def _columns(row: ConversationRow) -> tuple[object, ...]:
    """$1..$18 of the conversation statements, in one order for insert and update."""
    return (
        row.account_id,
        row.conversation_id,
        row.inbox_id,
        row.channel,
        row.contact_id,
        row.identity,
        row.status,
        row.assignee_type,
        row.assignee_id,
        row.handler,
        row.version,
        row.team_id,
        row.labels,
        row.human_since,
        row.bot_since,
        row.custom_attributes,
        row.additional_attributes,
        row.inbox_name,
    )
