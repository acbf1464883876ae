"""Turn bookkeeping: the durable schedule of customer turns."""

from __future__ import annotations

import datetime as dt

import msgspec

from consumers.store.base import SQL
from consumers.store.rows import DueTurn
from ingress import events

# The channel a transaction making a turn due now notifies (consumers/store/notify.py listens).
TURNS_DUE = "switchboard_turns_due"


class TurnSQL(SQL):
    async def schedule_turn(
        self,
        *,
        account_id: int,
        conversation_id: int,
        message_id: int,
        now: dt.datetime,
        debounce: dt.timedelta,
        max_wait: dt.timedelta,
        max_messages: int,
    ) -> None:
        """A customer message asks for a turn: due after `debounce` of quiet, within `max_wait`
        of the burst's first message, at once when the burst holds `max_messages`. Durable:
        the worker that emits it may be another process, after a restart."""
        # The turns worker is woken at commit (NOTIFY is sent then, and dropped with a
        # rolled-back savepoint) by a turn due now, and by a new burst's first due time, which
        # it sets its timer by; later messages of a burst only move that time later.
        await self.conn.execute(
            """
            WITH scheduled AS (
                UPDATE conversations SET
                    last_inbound_message_id = GREATEST(last_inbound_message_id, $3),
                    pending_count = pending_count + 1,
                    burst_started_at = COALESCE(burst_started_at, $4),
                    turn_due_at = CASE WHEN pending_count + 1 >= $7 THEN $4 ELSE LEAST(
                        $4 + $5::interval, COALESCE(burst_started_at, $4) + $6::interval
                    ) END
                WHERE account_id = $1 AND chatwoot_conversation_id = $2
                    AND $3 > emitted_through
                RETURNING turn_due_at, pending_count
            )
            SELECT pg_notify($8, '') FROM scheduled
            WHERE turn_due_at <= $4 OR pending_count = 1
            """,
            account_id,
            conversation_id,
            message_id,
            now,
            debounce,
            max_wait,
            max_messages,
            TURNS_DUE,
        )

    async def skip_turn_input(self, account_id: int, conversation_id: int, message_id: int) -> None:
        """A customer message nobody asks the bot to answer (a human handles the conversation,
        or no route covers it): later turns start after it."""
        await self.conn.execute(
            """
            UPDATE conversations SET
                last_inbound_message_id = GREATEST(last_inbound_message_id, $3),
                emitted_through = GREATEST(emitted_through, $3),
                answered_through = GREATEST(answered_through, $3)
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            account_id,
            conversation_id,
            message_id,
        )

    async def had_turn_input(self, account_id: int, conversation_id: int, message_id: int) -> bool:
        """Was this customer message ever turn input (scheduled or skipped)? Both move
        `last_inbound_message_id` to it."""
        value = await self.conn.fetchval(
            "SELECT last_inbound_message_id >= $3 FROM conversations "
            "WHERE account_id = $1 AND chatwoot_conversation_id = $2",
            account_id,
            conversation_id,
            message_id,
        )
        return bool(value)

    async def resume_skipped(
        self, account_id: int, conversation_id: int, since: float
    ) -> int | None:
        """The conversation came back to the bot at `since`: the customer messages created then
        or later that were skipped while a human held it (their webhooks came first) are put
        back behind the turn marks. The newest of them, to schedule a turn for, or None."""
        value = await self.conn.fetchval(
            """
            WITH skipped AS (
                SELECT min(m.chatwoot_message_id) AS first, max(m.chatwoot_message_id) AS last
                FROM messages m JOIN conversations c USING (account_id, chatwoot_conversation_id)
                WHERE m.account_id = $1 AND m.chatwoot_conversation_id = $2
                    AND m.direction = 'inbound' AND m.sender_kind = 'contact' AND NOT m.private
                    AND NOT m.deleted AND m.status = 'received'
                    AND m.created_at >= to_timestamp($3)
                    AND m.chatwoot_message_id <= c.emitted_through
            )
            UPDATE conversations SET
                emitted_through = LEAST(emitted_through, skipped.first - 1),
                answered_through = LEAST(answered_through, skipped.first - 1)
            FROM skipped
            WHERE account_id = $1 AND chatwoot_conversation_id = $2 AND skipped.first IS NOT NULL
            RETURNING skipped.last
            """,
            account_id,
            conversation_id,
            since,
        )
        return int(value) if value is not None else None

    async def due_turns(self, now: dt.datetime, limit: int) -> list[DueTurn]:
        """Lock the conversations whose turn is due; other workers skip them (SKIP LOCKED)."""
        rows = await self.conn.fetch(
            """
            SELECT account_id, chatwoot_conversation_id AS conversation_id, inbox_id, channel,
                contact_id, handler, emitted_through, answered_through, last_inbound_message_id
            FROM conversations
            WHERE turn_due_at IS NOT NULL AND turn_due_at <= $1
            ORDER BY turn_due_at
            LIMIT $2
            FOR UPDATE SKIP LOCKED
            """,
            now,
            limit,
        )
        return [msgspec.convert(dict(r), DueTurn) for r in rows]

    async def next_turn_due(self) -> dt.datetime | None:
        """When the earliest scheduled turn is due (leased ones included), if any."""
        value = await self.conn.fetchval(
            "SELECT min(turn_due_at) FROM conversations WHERE turn_due_at IS NOT NULL"
        )
        return value if isinstance(value, dt.datetime) else None

    async def turn_messages(self, turn: DueTurn) -> list[events.TurnMessage]:
        """Every customer message not yet answered: a turn whose reply was dropped as
        superseded is carried whole into the next one. A message the customer unsent
        (Chatwoot's `content_attributes.deleted`, its content now a placeholder) is not
        carried: a burst of only such messages gives no turn."""
        rows = await self.conn.fetch(
            """
            SELECT chatwoot_message_id AS id, content, attachments::text AS attachments,
                created_at
            FROM messages
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
                AND chatwoot_message_id > $3 AND chatwoot_message_id <= $4
                AND direction = 'inbound' AND sender_kind = 'contact' AND NOT private
                AND NOT deleted
            ORDER BY chatwoot_message_id
            """,
            turn.account_id,
            turn.conversation_id,
            turn.answered_through,
            turn.last_inbound_message_id,
        )
        return [
            events.TurnMessage(
                id=r["id"],
                content=r["content"],
                attachments=msgspec.json.decode(r["attachments"], type=list[events.Attachment]),
                created_at=r["created_at"].isoformat() if r["created_at"] else "",
            )
            for r in rows
        ]

    async def lease_turn(self, turn: DueTurn, until: dt.datetime) -> None:
        """This turn is being emitted: no other worker takes it before `until` (by then it
        is marked emitted, or its worker died and the next one emits the same turn id)."""
        await self.conn.execute(
            """
            UPDATE conversations SET turn_due_at = $3
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            turn.account_id,
            turn.conversation_id,
            until,
        )

    async def mark_emitted(self, turn: DueTurn) -> None:
        """The turn is out. A customer message that came in meanwhile (the row is not locked
        while the turn is emitted) keeps its own schedule for the next turn."""
        await self.conn.execute(
            """
            UPDATE conversations SET emitted_through = GREATEST(emitted_through, $3),
                turn_due_at = CASE WHEN last_inbound_message_id > $3 THEN turn_due_at END,
                burst_started_at = CASE WHEN last_inbound_message_id > $3
                    THEN burst_started_at END,
                pending_count = CASE WHEN last_inbound_message_id > $3 THEN pending_count
                    ELSE 0 END
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            turn.account_id,
            turn.conversation_id,
            turn.last_inbound_message_id,
        )
