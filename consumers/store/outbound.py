"""The outbox: each reply by its ref, its attempts, and what Chatwoot has of it."""

from __future__ import annotations

import datetime as dt

import msgspec

from consumers import conversation as cv
from consumers import statuses
from consumers.store.base import SQL
from consumers.store.rows import OutboundRow
from ingress import events

_OUTBOUND_COLUMNS = (
    "ref, account_id, kind, turn, status, attempts, chatwoot_message_id, "
    "chatwoot_conversation_id, next_attempt_at, known_through, create_started_at, covers_through"
)
# The row as the deliverer read it, unchanged since: a claim, hold or suppression applies only
# then (another deliverer that got there first changed at least one of these).
_UNCHANGED = "status = $2 AND attempts = $3 AND next_attempt_at IS NOT DISTINCT FROM $4"


class OutboundSQL(SQL):
    async def now(self) -> dt.datetime:
        """The database's clock: the one clock every lease and retry time is set and read by."""
        value: dt.datetime = await self.conn.fetchval("SELECT clock_timestamp()")
        return value

    async def open_outbound(
        self, entry: events.OutboundEntry, *, ref: str, stream_id: str, now: dt.datetime
    ) -> None:
        """Record a reply by its ref (once, before any attempt), due `now`."""
        await self.conn.execute(
            """
            INSERT INTO outbound (ref, account_id, chatwoot_conversation_id, kind, content,
                private, content_attributes, status, turn, stream_id, inbox_id, source_id,
                contact_id, next_attempt_at, covers_through)
            VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, 'queued', $8, $9, $10, $11, $12, $13,
                -- A public reply without a turn answers what an agent had been given when it
                -- was queued: the turns emitted, not a burst still debouncing (a business
                -- notice posted meanwhile must not swallow the customer's question).
                CASE WHEN $4 = 'message' AND NOT $6 AND $8::text IS NULL THEN (
                    SELECT emitted_through FROM conversations
                    WHERE account_id = $2 AND chatwoot_conversation_id = $3) END)
            ON CONFLICT (ref) DO NOTHING
            """,
            ref,
            entry.account,
            entry.conversation,
            str(entry.kind),
            entry.content,
            entry.private,
            events.json_encoder.encode(entry.content_attributes).decode(),
            entry.turn,
            stream_id,
            entry.inbox,
            entry.source_id,
            entry.contact,
            now,
        )

    async def outbound_entry(self, ref: str) -> events.OutboundEntry:
        """A recorded reply as the entry it came from (for retries, which have no entry)."""
        row = await self.conn.fetchrow(
            """
            SELECT account_id AS account, chatwoot_conversation_id AS conversation, content,
                ref, turn, kind, private, content_attributes::text AS attrs, inbox_id AS inbox,
                source_id, contact_id AS contact
            FROM outbound WHERE ref = $1
            """,
            ref,
        )
        assert row is not None
        values = dict(row)
        values["content_attributes"] = msgspec.json.decode(values.pop("attrs"))
        return msgspec.convert(values, events.OutboundEntry)

    async def due_outbound(self, now: dt.datetime, limit: int) -> list[str]:
        """Refs whose next attempt is due (a retry, or an attempt whose deliverer died)."""
        rows = await self.conn.fetch(
            """
            SELECT ref FROM outbound
            WHERE status IN ('queued', 'sending') AND next_attempt_at <= $1
            ORDER BY next_attempt_at LIMIT $2
            """,
            now,
            limit,
        )
        return [r["ref"] for r in rows]

    async def set_outbound(
        self,
        ref: str,
        *,
        status: str,
        attempts: int | None = None,
        error: str | None = None,
        chatwoot_message_id: int | None = None,
    ) -> None:
        await self.conn.execute(
            """
            UPDATE outbound SET status = $2, attempts = COALESCE($3, attempts),
                last_error = COALESCE($4, last_error),
                chatwoot_message_id = COALESCE(chatwoot_message_id, $5),
                sent_at = CASE WHEN $2 = 'sent' AND sent_at IS NULL THEN now() ELSE sent_at END,
                next_attempt_at = CASE WHEN $2 IN ('queued', 'sending')
                    THEN next_attempt_at ELSE NULL END
            WHERE ref = $1
            """,
            ref,
            status,
            attempts,
            error,
            chatwoot_message_id,
        )

    async def outbound_row(self, ref: str, *, lock: bool = False) -> OutboundRow | None:
        lock_clause = "FOR UPDATE" if lock else ""
        row = await self.conn.fetchrow(
            f"SELECT {_OUTBOUND_COLUMNS} FROM outbound WHERE ref = $1 {lock_clause}", ref
        )
        return None if row is None else msgspec.convert(dict(row), OutboundRow)

    async def claim_attempt(
        self, row: OutboundRow, *, lease_until: dt.datetime, known_through: int
    ) -> bool:
        """Mark a reply `sending` before its POST (a crash from here on is an ambiguous
        attempt), unless another deliverer changed it since it was read."""
        claimed = await self.conn.fetchval(
            f"""
            UPDATE outbound SET status = 'sending', attempts = attempts + 1,
                next_attempt_at = $5, known_through = COALESCE(known_through, $6)
            WHERE ref = $1 AND {_UNCHANGED}
            RETURNING true
            """,
            *_seen(row),
            lease_until,
            known_through,
        )
        return bool(claimed)

    async def hold_unchanged(self, row: OutboundRow, until: dt.datetime, why: str) -> bool:
        """No attempt before `until` (a rate limit, an open breaker, a check that failed)."""
        held = await self.conn.fetchval(
            f"""
            UPDATE outbound SET next_attempt_at = $5, last_error = $6
            WHERE ref = $1 AND {_UNCHANGED}
            RETURNING true
            """,
            *_seen(row),
            until,
            why,
        )
        return bool(held)

    async def await_echo_unchanged(self, row: OutboundRow, until: dt.datetime) -> bool:
        """A requeued reply whose earlier attempt may have landed: `sending` again (no attempt
        counted), not attempted before `until`, so that its echo can show it landed."""
        marked = await self.conn.fetchval(
            f"""
            UPDATE outbound SET status = 'sending', next_attempt_at = $5
            WHERE ref = $1 AND {_UNCHANGED}
            RETURNING true
            """,
            *_seen(row),
            until,
        )
        return bool(marked)

    async def suppress_unchanged(self, row: OutboundRow, reason: str) -> bool:
        suppressed = await self.conn.fetchval(
            f"""
            UPDATE outbound SET status = 'suppressed', last_error = $5, next_attempt_at = NULL
            WHERE ref = $1 AND {_UNCHANGED}
            RETURNING true
            """,
            *_seen(row),
            reason,
        )
        return bool(suppressed)

    async def start_create(self, ref: str, now: dt.datetime | None) -> None:
        """Record (or clear, with None) that a create-conversation call is about to be made."""
        await self.conn.execute(
            "UPDATE outbound SET create_started_at = $2 WHERE ref = $1", ref, now
        )

    async def mark_posted(
        self,
        ref: str,
        *,
        chatwoot_message_id: int | None,
        reported: statuses.Outbound = statuses.Outbound.SENT,
        conversation: tuple[int, int] | None = None,
    ) -> OutboundRow | None:
        """Chatwoot has this reply (its answer, our echo, or its message list said so): move it
        forward, and mark the customer messages of its turn answered. Every path that learns
        a reply landed comes here, whichever learns it first.

        Locks the conversation, then the reply: the order persist takes them in too (it
        holds the conversation of the message it stores), so the two never deadlock.
        With `conversation` (account, conversation id), only a reply to that conversation
        is marked (an echo proves nothing about another conversation's reply).
        """
        seen = await self.outbound_row(ref)
        if seen is None:
            return None
        if seen.chatwoot_conversation_id is not None:
            await self.conn.execute(
                "SELECT 1 FROM conversations WHERE account_id = $1 "
                "AND chatwoot_conversation_id = $2 FOR UPDATE",
                seen.account_id,
                seen.chatwoot_conversation_id,
            )
        row = await self.outbound_row(ref, lock=True)
        assert row is not None  # outbox rows are never deleted
        if conversation is not None and conversation != (
            row.account_id,
            row.chatwoot_conversation_id,
        ):
            return None
        status = statuses.advance_or_keep(row.status, reported)
        await self.set_outbound(ref, status=status, chatwoot_message_id=chatwoot_message_id)
        through = cv.turn_through(row.turn) if row.turn is not None else row.covers_through
        answered = row.chatwoot_conversation_id
        if status in statuses.OUTBOUND_POSTED and through is not None and answered:
            if row.kind == "message":
                await self.mark_answered(row.account_id, answered, through)
        return row

    async def hold_until(self, ref: str, until: dt.datetime, error: str | None = None) -> None:
        """No attempt before `until` (a retry's time, a rate limit, an open breaker)."""
        await self.conn.execute(
            "UPDATE outbound SET next_attempt_at = $2, last_error = COALESCE($3, last_error) "
            "WHERE ref = $1",
            ref,
            until,
            error,
        )

    async def set_conversation(self, ref: str, conversation_id: int) -> None:
        """The conversation Chatwoot created for an agent-started reply: reused on retries."""
        await self.conn.execute(
            "UPDATE outbound SET chatwoot_conversation_id = $2 WHERE ref = $1", ref, conversation_id
        )

    async def mark_answered(self, account_id: int, conversation_id: int, through: int) -> None:
        """A reply to a turn went out: the customer messages it covered are `read` (those a
        human handled before, behind `answered_through`, stay theirs)."""
        await self.conn.execute(
            """
            UPDATE messages SET status = 'read'
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
                AND chatwoot_message_id <= $3 AND direction = 'inbound' AND status = 'received'
                AND chatwoot_message_id > (
                    SELECT answered_through FROM conversations
                    WHERE account_id = $1 AND chatwoot_conversation_id = $2)
            """,
            account_id,
            conversation_id,
            through,
        )
        await self.conn.execute(
            """
            UPDATE conversations SET answered_through = GREATEST(answered_through, $3),
                -- every turn awaiting an answer has one: no hand-off for want of it
                answer_due_at = CASE WHEN $3 >= answer_through THEN NULL ELSE answer_due_at END
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            account_id,
            conversation_id,
            through,
        )


def _seen(row: OutboundRow) -> tuple[object, ...]:
    """$1..$4 of the statements that apply only to an unchanged row."""
    return (row.ref, str(row.status), row.attempts, row.next_attempt_at)
