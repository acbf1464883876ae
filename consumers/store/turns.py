"""Turn bookkeeping: the durable schedule of customer turns, and what a due turn carries."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec

from consumers.store.base import SQL
from consumers.store.rows import DueTurn, TurnContent
from ingress import events

# The channel a transaction making a turn due now notifies (consumers/store/notify.py listens).
TURNS_DUE = "switchboard_turns_due"

# One round trip for all a turn carries (see `TurnSQL.turn_content`).
TURN_CONTENT = """
SELECT c.labels, c.inbox_name, c.custom_attributes::text AS custom_attributes,
    c.additional_attributes::text AS additional_attributes,
    k.name, k.email, k.phone, k.identifier,
    k.custom_attributes::text AS contact_custom,
    k.additional_attributes::text AS contact_additional,
    ARRAY(
        SELECT ROW(m.chatwoot_message_id, m.content, m.attachments::text,
            m.created_at)
        FROM messages m
        WHERE m.account_id = $1 AND m.chatwoot_conversation_id = $2
            AND m.chatwoot_message_id > $3 AND m.chatwoot_message_id <= $4
            AND m.direction = 'inbound' AND m.sender_kind = 'contact'
            AND NOT m.private AND NOT m.deleted
        ORDER BY m.chatwoot_message_id
    ) AS messages,
    ARRAY(
        SELECT ROW(h.chatwoot_message_id, h.content, h.attachments::text,
            h.created_at, h.direction, h.sender_kind, h.sender_id, h.content_type,
            h.private)
        FROM (
            SELECT m.chatwoot_message_id, m.content, m.attachments, m.created_at, m.direction,
                m.sender_kind, m.sender_id, m.content_type, m.private
            FROM messages m
            WHERE m.account_id = $1 AND m.chatwoot_conversation_id = $2
                AND m.chatwoot_message_id <= $4 AND NOT m.deleted
                AND (NOT m.private OR $6)
            ORDER BY m.chatwoot_message_id DESC
            LIMIT $5
        ) h
        ORDER BY h.chatwoot_message_id
    ) AS history
FROM conversations c
LEFT JOIN contacts k
    ON k.account_id = c.account_id AND k.chatwoot_contact_id = c.contact_id
WHERE c.account_id = $1 AND c.chatwoot_conversation_id = $2
"""


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

    async def turn_content(
        self, turn: DueTurn, *, history: int, private: bool = False
    ) -> TurnContent:
        """What the turn carries, in one round trip (a turn leaves within milliseconds of
        being due): the unanswered messages, the last `history` messages up to the turn's,
        the contact, the conversation's labels and attributes.

        Unanswered: every customer message not yet answered (a turn whose reply was dropped as
        superseded is carried whole into the next one). A message the customer unsent
        (Chatwoot's `content_attributes.deleted`, its content now a placeholder) is carried
        neither there nor in the history: a burst of only such messages gives no turn. The
        history holds agents' private notes only when `private` (the route's
        `history_private`)."""
        row = await self.conn.fetchrow(
            TURN_CONTENT,
            turn.account_id,
            turn.conversation_id,
            turn.answered_through,
            turn.last_inbound_message_id,
            history,
            private,
        )
        if row is None:  # not expected: the turn came from this (locked) row
            return TurnContent(messages=[])
        return TurnContent(
            messages=[_turn_message(r) for r in row["messages"]],
            history=[_history_message(r) for r in row["history"]],
            contact=_contact(turn.contact_id, row),
            inbox_name=row["inbox_name"],
            labels=list(row["labels"]),
            custom_attributes=msgspec.json.decode(row["custom_attributes"]),
            additional_attributes=msgspec.json.decode(row["additional_attributes"]),
        )

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


# The message records of `turn_content`, by position: (id, content, attachments, created_at)
# and, in the history, then (direction, sender_kind, sender_id, content_type, private).
def _turn_message(r: tuple[Any, ...]) -> events.TurnMessage:
    return events.TurnMessage(
        id=r[0], content=r[1], attachments=_attachments(r[2]), created_at=_iso(r[3])
    )


def _history_message(r: tuple[Any, ...]) -> events.HistoryMessage:
    return events.HistoryMessage(
        id=r[0],
        content=r[1],
        attachments=_attachments(r[2]),
        created_at=_iso(r[3]),
        direction=r[4],
        sender_kind=r[5],
        sender_id=r[6],
        content_type=r[7],
        private=r[8],
    )


_attachments_decoder = msgspec.json.Decoder(list[events.Attachment])


def _attachments(text: str) -> list[events.Attachment]:
    # Most messages have none: no decoder call for them (a turn carries up to 200 messages).
    return [] if text == "[]" else _attachments_decoder.decode(text)


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat() if value else ""


def _contact(contact_id: int | None, row: asyncpg.Record) -> events.TurnContact | None:
    if contact_id is None:
        return None
    custom, additional = row["contact_custom"], row["contact_additional"]
    return events.TurnContact(  # a contact not stored yet (no row): its id alone
        id=contact_id,
        name=row["name"],
        email=row["email"],
        phone=row["phone"],
        identifier=row["identifier"],
        custom_attributes=msgspec.json.decode(custom) if custom else {},
        additional_attributes=msgspec.json.decode(additional) if additional else {},
    )
